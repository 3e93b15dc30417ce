"""VGG16 fine-tuned from ImageNet weights (torchvision's ``vgg16``, ``VGG16_Weights.IMAGENET1K_V1``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn
from torchvision.models import VGG16_Weights, vgg16

from models.config import from_flat
from models.finetune import FineTuneConfig, build_finetuned, finetune_space
from models.registry import BuildContext, Config, ModelSpec, register

WEIGHTS = VGG16_Weights.IMAGENET1K_V1


@dataclass(frozen=True)
class VGG16Config(FineTuneConfig):
    input_size: int = 32
    MIN_INPUT = 32  # five 2x2 poolings: 32 pixels leave a 1x1 map


def build(config: Config, ctx: BuildContext = BuildContext()) -> nn.Module:
    """VGG16 for gray digits, with ImageNet weights unless ``pretrained=False``."""
    return build_finetuned(from_flat(VGG16Config, config), ctx, vgg16, WEIGHTS)


def space(trial: Any) -> dict[str, Any] | None:
    return finetune_space(trial, [32, 64, 112])


SPEC = register(
    ModelSpec(
        name="vgg16",
        config_cls=VGG16Config,
        build=build,
        space=space,
        default_config=dict(
            strategy="discriminative", backbone_lr_mult=0.1, optimizer="sgd", lr=0.01, momentum=0.9,
            weight_decay=5e-4, batch_size=128, classifier_dropout=0.5, warmup_epochs=0.5, input_size=32,
            schedule="cosine", label_smoothing=0.0, augment=False,
        ),
        max_epochs=3,
        grace_period=1,
        cpus=1.0,
        gpus=1.0,
        cpu_bf16=True,  # 1.7x per training step on a 2-core AVX-512 BF16 CPU (benchmarks/epoch_cost.py)
        pretrained_weights=WEIGHTS,
        smoke_config={"input_size": 32},  # a larger draw would make a smoke run minutes longer
        description="VGG16 fine-tuned from ImageNet weights",
    )
)
