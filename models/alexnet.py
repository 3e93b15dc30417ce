"""AlexNet fine-tuned from ImageNet weights (torchvision's ``alexnet``, ``AlexNet_Weights.IMAGENET1K_V1``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn
from torchvision.models import AlexNet_Weights, alexnet

from models.config import from_flat
from models.finetune import FineTuneConfig, build_finetuned, finetune_space
from models.registry import BuildContext, Config, ModelSpec, register

WEIGHTS = AlexNet_Weights.IMAGENET1K_V1


@dataclass(frozen=True)
class AlexNetConfig(FineTuneConfig):
    input_size: int = 64
    MIN_INPUT = 63  # an 11x11 stride-4 conv and three 3x3 stride-2 poolings need 63 pixels


def build(config: Config, ctx: BuildContext = BuildContext()) -> nn.Module:
    """AlexNet for gray digits, with ImageNet weights unless ``pretrained=False``."""
    return build_finetuned(from_flat(AlexNetConfig, config), ctx, alexnet, WEIGHTS)


def space(trial: Any) -> dict[str, Any] | None:
    return finetune_space(trial, [64, 112, 224])


SPEC = register(
    ModelSpec(
        name="alexnet",
        config_cls=AlexNetConfig,
        build=build,
        space=space,
        default_config=dict(
            strategy="discriminative", backbone_lr_mult=0.1, optimizer="sgd", lr=0.01, momentum=0.9,
            weight_decay=5e-4, batch_size=128, classifier_dropout=0.5, warmup_epochs=0.5, input_size=64,
            schedule="cosine", label_smoothing=0.0, augment=False,
        ),
        max_epochs=3,
        grace_period=1,
        cpus=1.0,
        gpus=0.5,
        cpu_bf16=True,  # 1.3-2x per training step on a 2-core AVX-512 BF16 CPU (benchmarks/epoch_cost.py)
        pretrained_weights=WEIGHTS,
        smoke_config={"input_size": 64},  # a larger draw would make a smoke run minutes longer
        description="AlexNet fine-tuned from ImageNet weights",
    )
)
