"""Faster R-CNN fine-tuned from COCO weights and used as an image classifier.

Each image holds one object: the target of an image is one box labelled class + 1 (0 is the
detector's background). For gray data (digits, clothes on a black ground) the box is the object's own
bounding box (pixels brighter than ``models.nets.faster_rcnn.DIGIT_THRESHOLD``); for colour photos, where nothing marks the
object's extent, it is the whole image. The detector's transform upscales every image to
``input_size`` (small images need nothing near COCO's 800 pixels) and normalizes it as ImageNet images
were; a gray image is the same in its three channels.

The class of an image is the label of its highest-scoring detection. When the detector returns no
box (every score under ``box_score_thresh``), the prediction falls back to the box classifier's
scores of the image's proposals, so every image gets a class; how often that happened is reported
each epoch as ``no_box_rate``. ``val_loss`` is a cross-entropy over per-image class scores (the
highest probability each class gets from any proposal, normalized over the classes), comparable
with the other models; ``train_loss`` is the detector's own summed training loss (RPN objectness and
box regression, box classifier and box regression).

Weights: torchvision's builders load the COCO weights themselves (that is the only way to get the
frozen batch norms and frozen early layers they give a pretrained backbone); the file is looked for
in ``--weights-dir`` and torchvision's cache first, as for VGG16 and AlexNet, and checked to hold
nothing but tensors before torchvision loads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from models.config import check, choice, suggest_optimizer
from models.registry import SMOKE_TRAIN_IMAGES, DataShape, ModelSpec, Network, register
from models.task import Predictions, Task

if TYPE_CHECKING:
    import torch
    from torch import nn

# name -> (torchvision builder, COCO weights, most backbone layers torchvision lets train), by
# torchvision's names: resolved only when a detector is built (models.nets.faster_rcnn)
BACKBONES: dict[str, tuple[str, str, int]] = {
    "mobilenet_v3_large_320": ("fasterrcnn_mobilenet_v3_large_320_fpn",
                               "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1", 6),
    "mobilenet_v3_large": ("fasterrcnn_mobilenet_v3_large_fpn", "FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1", 6),
    "resnet50": ("fasterrcnn_resnet50_fpn", "FasterRCNN_ResNet50_FPN_Weights.COCO_V1", 5),
}


@dataclass(frozen=True)
class FasterRCNNConfig:
    """The detector's settings.

    ``trainable_backbone_layers`` counts backbone stages from the top that fine-tune (torchvision's
    meaning); it applies to pretrained backbones only: from scratch every layer trains.
    ``rpn_batch_size_per_image`` / ``box_batch_size_per_image`` are the anchors and proposals
    sampled per image for the RPN's and the box head's losses.
    """

    pretrained: bool = True
    backbone: str = "mobilenet_v3_large_320"
    input_size: int = 128
    trainable_backbone_layers: int = 3
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 64
    box_score_thresh: float = 0.05

    def __post_init__(self) -> None:
        choice("backbone", self.backbone, BACKBONES)
        check(64 <= self.input_size <= 800, f"input_size={self.input_size} must be between 64 and 800 pixels")
        most = BACKBONES[self.backbone][2]
        check(0 <= self.trainable_backbone_layers <= most,
              f"trainable_backbone_layers={self.trainable_backbone_layers} must be between 0 and {most} for {self.backbone}")
        # torchvision samples int(n x fraction) positives per image (0.5 for the RPN, 0.25 for the box
        # head): below these sizes no positive example is ever drawn and no digit can be learnt.
        check(self.rpn_batch_size_per_image >= 2, "rpn_batch_size_per_image must be at least 2 (half are positives)")
        check(self.box_batch_size_per_image >= 4,
              "box_batch_size_per_image must be at least 4 (a quarter are positives: fewer sample none)")
        check(0.0 <= self.box_score_thresh < 1.0, f"box_score_thresh={self.box_score_thresh} must be in [0, 1)")


class Detection(Task):
    """Classification through a detector (``models.nets.faster_rcnn.ObjectDetector``): one box per image,
    class = best detection's label. The detector computes both; the task names them for the loop."""

    name = "detection"
    rates = ("no_box_rate",)
    eval_batch_size = 256  # detectors keep per-proposal features: smaller evaluation batches

    mixes = False  # a box and a class an image: no two labels to weigh

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0,
             mixed: tuple[torch.Tensor, float] | None = None) -> torch.Tensor:
        return model.detection_loss(x, y)

    def predict(self, model: nn.Module, x: torch.Tensor) -> Predictions:
        return model.classify(x)


DETECTION = Detection()


def space(trial: Any, shape: DataShape) -> dict[str, Any]:
    """Suggestions only."""
    constants: dict[str, Any] = {"schedule": "cosine"}
    trial.suggest_categorical("backbone", list(BACKBONES))
    trial.suggest_categorical("input_size", [64, 96, 128, 160])
    if trial.params.get("pretrained", True):
        trial.suggest_int("trainable_backbone_layers", 0, 5)
    suggest_optimizer(trial, {"sgd": (2e-3, 5e-2), "adamw": (2e-5, 1e-3)}, momentum=(0.8, 0.95))
    trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True)
    trial.suggest_categorical("batch_size", shape.batch_sizes([16, 32, 64]))
    trial.suggest_categorical("warmup_epochs", [0.0, 0.5])
    trial.suggest_categorical("rpn_batch_size_per_image", [64, 128, 256])
    trial.suggest_categorical("box_batch_size_per_image", [32, 64, 128])
    trial.suggest_float("box_score_thresh", 0.0, 0.5)
    trial.suggest_categorical("augment", shape.augments(mixing=False))  # its loss takes hard labels
    return constants


SPEC = register(ModelSpec(
    name="faster_rcnn",
    config_cls=FasterRCNNConfig,
    build=Network("models.nets.faster_rcnn:build"),
    space=space,
    # torchvision's detection fine-tuning recipe (SGD, momentum 0.9, lr 0.01 at batch 32) at a small input.
    default_config=dict(
        backbone="mobilenet_v3_large_320", input_size=128, trainable_backbone_layers=3, optimizer="sgd", lr=0.01,
        momentum=0.9, weight_decay=1e-4, batch_size=32, warmup_epochs=0.5, schedule="cosine",
        rpn_batch_size_per_image=256, box_batch_size_per_image=64, box_score_thresh=0.05, augment="none",
    ),
    max_epochs=4,
    grace_period=1,
    cpus=1.0,
    gpus=0.5,
    cpu_bf16=True,  # 1.4x per training step on a 2-core AVX-512 BF16 CPU (benchmarks/epoch_cost.py)
    gpu_bf16=False,  # H100: 333 img/s in fp32, 311 in bf16 (launch-bound, benchmarks/results/epoch_cost_gpu_h100.json)
    pretrained_weights={name: weights for name, (_, weights, _) in BACKBONES.items()},
    weights_by="backbone",
    # the smallest input and half the sampled proposals: a smoke trial costs minutes on a CPU, not tens
    smoke_config={"backbone": "mobilenet_v3_large_320", "input_size": 64, "box_batch_size_per_image": 32,
                  "max_train_images": SMOKE_TRAIN_IMAGES},
    scratch_config={"pretrained": False},
    images_per_s=(13.5, 333),  # 2-core EPYC (epoch_cost_faster_rcnn.json), H100 fp32 (epoch_cost_gpu_h100.json)
    description="Faster R-CNN (torchvision) fine-tuned from COCO, class = best detection",
    task=DETECTION,
))
