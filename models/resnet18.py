"""ResNet-18 fine-tuned from ImageNet weights (torchvision's ``resnet18``,
``ResNet18_Weights.IMAGENET1K_V1``): this file is all it takes to add a fine-tuned architecture."""

from __future__ import annotations

from dataclasses import dataclass

from torchvision.models import ResNet18_Weights, resnet18

from models.finetune import FineTuneConfig, finetuned_spec
from models.registry import register


@dataclass(frozen=True)
class ResNet18Config(FineTuneConfig):
    input_size: int = 32
    MIN_INPUT = 32  # a stride-2 stem, a max pool and three stride-2 stages: 32 pixels leave a 1x1 map


# The backbone is everything but the new head (``fc``), batch norms included; a quarter of a GPU
# like the CNN would do at 32-64 pixels, but at 112 a trial needs half of one to keep its pace.
SPEC = register(finetuned_spec("resnet18", ResNet18Config, resnet18, ResNet18_Weights.IMAGENET1K_V1,
                               input_sizes=[32, 64, 112], gpus=0.5))
