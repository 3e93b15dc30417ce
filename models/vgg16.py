"""VGG16 fine-tuned from ImageNet weights (torchvision's ``vgg16``, ``VGG16_Weights.IMAGENET1K_V1``)."""

from __future__ import annotations

from dataclasses import dataclass

from models.finetune import FineTuneConfig, finetuned_spec
from models.registry import register


@dataclass(frozen=True)
class VGG16Config(FineTuneConfig):
    input_size: int = 32
    MIN_INPUT = 32  # five 2x2 poolings: 32 pixels leave a 1x1 map


SPEC = register(finetuned_spec("vgg16", VGG16Config, "vgg16", "VGG16_Weights.IMAGENET1K_V1",
                               input_sizes=[32, 64, 112], gpus=1.0, backbone="features",
                               images_per_s=(73, 15_800)))  # 2-core EPYC, H100 fp32 (benchmarks/results/epoch_cost_*)
