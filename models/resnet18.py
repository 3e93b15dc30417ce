"""ResNet-18 fine-tuned from ImageNet weights (torchvision's ``resnet18``,
``ResNet18_Weights.IMAGENET1K_V1``): this file is all it takes to add a fine-tuned architecture."""

from __future__ import annotations

from dataclasses import dataclass

from models.finetune import FineTuneConfig, finetuned_spec
from models.registry import register


@dataclass(frozen=True)
class ResNet18Config(FineTuneConfig):
    input_size: int = 32
    MIN_INPUT = 32  # a stride-2 stem, a max pool and three stride-2 stages: 32 pixels leave a 1x1 map


# The backbone is everything but the new head (``fc``), batch norms included. Half a GPU a trial,
# like AlexNet (not measured on a GPU yet). On CPUs it trains in fp32: under bf16 autocast a step
# took 1.6x as long at 32 pixels and 1.2x at 64 on a 2-core AVX-512 BF16 Xeon, where VGG16 and the
# CNN gained (benchmarks/results/epoch_cost_resnet18*.json).
SPEC = register(finetuned_spec("resnet18", ResNet18Config, "resnet18", "ResNet18_Weights.IMAGENET1K_V1",
                               input_sizes=[32, 64, 112], gpus=0.5, cpu_bf16=False,
                               images_per_s=(770, None)))  # 2-core EPYC (epoch_cost_resnet18.json); not on a GPU
