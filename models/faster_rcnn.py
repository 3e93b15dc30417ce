"""Faster R-CNN fine-tuned from COCO weights and used as an image classifier.

Each image holds one object: the target of an image is one box labelled class + 1 (0 is the
detector's background). For gray data (digits, clothes on a black ground) the box is the object's own
bounding box (pixels brighter than ``DIGIT_THRESHOLD``); for colour photos, where nothing marks the
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

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.config import check, choice, from_flat, suggest_optimizer
from models.finetune import ensure_weights, torchvision_cache, tv_builder, tv_weights
from models.registry import SMOKE_TRAIN_IMAGES, BuildContext, Config, DataShape, ModelSpec, register
from models.task import Predictions, Task

DIGIT_THRESHOLD = 0.2  # intensity in [0, 1] above which a pixel belongs to the digit's box

# name -> (torchvision builder, COCO weights, most backbone layers torchvision lets train), by
# torchvision's names: resolved only when a detector is built (models.finetune.tv_builder, tv_weights)
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


class ObjectDetector(nn.Module):
    """A torchvision Faster R-CNN behind the input adapter: normalized (B, C, H, W) batches in,
    the detector's list of (3, H, W) images with intensities in [0, 1] out (``images``)."""

    def __init__(self, detector: nn.Module, ctx: BuildContext) -> None:
        super().__init__()
        self.detector = detector
        self.gray = ctx.shape.channels == 1
        # Not saved with the weights: they follow from the data, which the model is rebuilt for.
        self.register_buffer("mean", torch.tensor(ctx.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(ctx.std).view(1, -1, 1, 1), persistent=False)

    def intensities(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) normalized -> (B, C, H, W) in [0, 1], as the images were before normalization."""
        return (x.float() * self.std + self.mean).clamp(0.0, 1.0)

    def images(self, x: torch.Tensor) -> list[torch.Tensor]:
        pixels = self.intensities(x)
        return list(pixels.expand(-1, 3, -1, -1) if self.gray else pixels)  # B x (3, H, W): the detector's input

    def boxes(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 4) target boxes: the bright object of a gray image, the whole of a colour one."""
        if self.gray:
            return object_boxes(self.intensities(x)[:, 0])
        b, _, h, w = x.shape
        return torch.tensor([0.0, 0.0, float(w), float(h)], device=x.device).expand(b, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (B, K) of a batch, in evaluation mode (in training mode the detector wants
        targets: use ``DETECTION.loss``)."""
        return DETECTION.predict(self, x).logits


def object_boxes(gray: torch.Tensor, threshold: float = DIGIT_THRESHOLD) -> torch.Tensor:
    """(B, H, W) intensities -> (B, 4) boxes (x1, y1, x2, y2) around the pixels above ``threshold``.

    A blank image gets the whole image as its box. Computed on the batch's device, no Python loop.
    """
    b, h, w = gray.shape
    mask = gray > threshold
    rows, cols = mask.any(dim=2), mask.any(dim=1)  # (B, H), (B, W)
    ys = torch.arange(h, device=gray.device).expand(b, h)
    xs = torch.arange(w, device=gray.device).expand(b, w)
    top = torch.where(rows, ys, h).amin(dim=1)
    bottom = torch.where(rows, ys, -1).amax(dim=1) + 1
    left = torch.where(cols, xs, w).amin(dim=1)
    right = torch.where(cols, xs, -1).amax(dim=1) + 1
    boxes = torch.stack([left, top, right, bottom], dim=1).float()
    blank = ~rows.any(dim=1)
    whole = torch.tensor([0.0, 0.0, float(w), float(h)], device=gray.device)
    return torch.where(blank[:, None], whole, boxes)


class Detection(Task):
    """Classification through a detector: one box per image, class = best detection's label."""

    name = "detection"
    rates = ("no_box_rate",)
    eval_batch_size = 256  # detectors keep per-proposal features: smaller evaluation batches

    def targets(self, model: ObjectDetector, x: torch.Tensor, y: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """One box per image (``ObjectDetector.boxes``) labelled class + 1 (0 is background)."""
        boxes = model.boxes(x)
        labels = y + 1
        return [{"boxes": boxes[i:i + 1], "labels": labels[i:i + 1]} for i in range(len(y))]

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        # The detector's own losses; label smoothing has no place in them.
        losses = model.detector(model.images(x), self.targets(model, x, y))
        return sum(losses.values())

    def predict(self, model: nn.Module, x: torch.Tensor) -> Predictions:
        det = model.detector
        images, _ = det.transform(model.images(x))
        features = det.backbone(images.tensors)
        proposals, _ = det.rpn(images, features)
        heads = det.roi_heads
        box_features = heads.box_head(heads.box_roi_pool(features, proposals, images.image_sizes))
        class_logits, box_regression = heads.box_predictor(box_features)  # (P, K + 1), (P, 4 (K + 1))
        _, scores, labels = heads.postprocess_detections(class_logits, box_regression, proposals, images.image_sizes)

        # Per image, the highest probability each class gets from any of its proposals: (B, K).
        b = len(proposals)
        owner = torch.repeat_interleave(torch.arange(b, device=x.device),
                                        torch.tensor([len(p) for p in proposals], device=x.device))
        digit_probs = class_logits.float().softmax(dim=1)[:, 1:]
        per_image = torch.zeros(b, digit_probs.shape[1], device=x.device).scatter_reduce(
            0, owner[:, None].expand_as(digit_probs), digit_probs, reduce="amax", include_self=True)

        found = torch.tensor([len(s) > 0 for s in scores], device=x.device)
        best = torch.stack([l[s.argmax()] - 1 if len(s) else l.new_tensor(-1) for s, l in zip(scores, labels)])
        classes = torch.where(found, best, per_image.argmax(dim=1))
        # log of the scores: cross-entropy then normalizes them over the classes
        return Predictions(per_image.clamp_min(1e-8).log(), classes, {"no_box_rate": (~found).sum()})


DETECTION = Detection()


@contextlib.contextmanager
def torchvision_reads(path: Path) -> Iterator[None]:
    """Let torchvision's own loader (``weights.get_state_dict``) read the weights file ``path``.

    torch.hub looks for it as ``<hub dir>/checkpoints/<name>``; a file outside torchvision's cache
    (``--weights-dir``) is offered there through a temporary hub folder holding a link to it.
    """
    torch.load(path, map_location="cpu", weights_only=True)  # tensors only, before a full unpickling
    if path.parent.resolve() == torchvision_cache().resolve():
        yield
        return
    # torch.hub has set_dir but no "unset": restoring its variable keeps $TORCH_HOME meaningful after.
    previous = torch.hub._hub_dir
    with tempfile.TemporaryDirectory() as hub:
        (Path(hub) / "checkpoints").mkdir()
        (Path(hub) / "checkpoints" / path.name).symlink_to(path.resolve())
        torch.hub.set_dir(hub)
        try:
            yield
        finally:
            torch.hub._hub_dir = previous


def build(config: Config, ctx: BuildContext = BuildContext()) -> nn.Module:
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

    cfg = from_flat(FasterRCNNConfig, config)
    name, weights_name, _ = BACKBONES[cfg.backbone]
    builder, weights = tv_builder(name), tv_weights(weights_name)
    settings = dict(
        min_size=cfg.input_size, max_size=cfg.input_size,
        rpn_batch_size_per_image=cfg.rpn_batch_size_per_image, box_batch_size_per_image=cfg.box_batch_size_per_image,
        box_score_thresh=cfg.box_score_thresh,
        # One object per image, filling most of it: a hundred proposals find it. COCO's defaults keep
        # 1000-2000, and every proposal costs a pass of the box head (a 12544 x 1024 layer).
        rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=100,
        rpn_post_nms_top_n_test=50, box_detections_per_img=10,
    )
    if cfg.pretrained:
        # Even when a checkpoint will replace them (ctx.load_weights=False), the weights are loaded:
        # torchvision builds the pretrained architecture (frozen norms and layers) only with them.
        with torchvision_reads(ensure_weights(weights, ctx.weights_dir)):
            net = builder(weights=weights, weights_backbone=None,
                          trainable_backbone_layers=cfg.trainable_backbone_layers, **settings)
    else:
        net = builder(weights=None, weights_backbone=None, num_classes=91, **settings)
    in_features = net.roi_heads.box_predictor.cls_score.in_features
    net.roi_heads.box_predictor = FastRCNNPredictor(in_features, ctx.num_classes + 1)  # + background
    return ObjectDetector(net, ctx)


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
    trial.suggest_categorical("augment", [True, False])
    return constants


SPEC = register(ModelSpec(
    name="faster_rcnn",
    config_cls=FasterRCNNConfig,
    build=build,
    space=space,
    # torchvision's detection fine-tuning recipe (SGD, momentum 0.9, lr 0.01 at batch 32) at a small input.
    default_config=dict(
        backbone="mobilenet_v3_large_320", input_size=128, trainable_backbone_layers=3, optimizer="sgd", lr=0.01,
        momentum=0.9, weight_decay=1e-4, batch_size=32, warmup_epochs=0.5, schedule="cosine",
        rpn_batch_size_per_image=256, box_batch_size_per_image=64, box_score_thresh=0.05, augment=False,
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
    description="Faster R-CNN (torchvision) fine-tuned from COCO, class = best detection",
    task=DETECTION,
))
