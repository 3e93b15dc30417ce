"""AlexNet fine-tuned from ImageNet weights (torchvision's ``alexnet``, ``AlexNet_Weights.IMAGENET1K_V1``)."""

from __future__ import annotations

from dataclasses import dataclass

from models.finetune import FineTuneConfig, finetuned_spec
from models.registry import register


@dataclass(frozen=True)
class AlexNetConfig(FineTuneConfig):
    input_size: int = 64
    MIN_INPUT = 63  # an 11x11 stride-4 conv and three 3x3 stride-2 poolings need 63 pixels


SPEC = register(finetuned_spec("alexnet", AlexNetConfig, "alexnet", "AlexNet_Weights.IMAGENET1K_V1",
                               input_sizes=[64, 112, 224], gpus=0.5, backbone="features",
                               images_per_s=(290, 31_300)))  # 2-core EPYC, H100 fp32 (benchmarks/results/epoch_cost_*)
