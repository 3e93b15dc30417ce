"""The network of ``models/faster_rcnn.py``: a torchvision Faster R-CNN behind an input adapter, with
the targets it is trained on (one box per image) and the class it predicts for an image. Its COCO
weights are loaded by torchvision's own builder (the only way to get the frozen batch norms and frozen
early layers it gives a pretrained backbone) from the file ``models.finetune.ensure_weights`` found."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from models.config import from_flat
from models.faster_rcnn import BACKBONES, FasterRCNNConfig
from models.finetune import ensure_weights, torchvision_cache, tv_builder, tv_weights
from models.registry import BuildContext, Config
from models.task import Predictions

DIGIT_THRESHOLD = 0.2  # intensity in [0, 1] above which a pixel belongs to the digit's box


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

    def targets(self, x: torch.Tensor, y: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """One box per image (``boxes``) labelled class + 1 (0 is background)."""
        boxes = self.boxes(x)
        labels = y + 1
        return [{"boxes": boxes[i:i + 1], "labels": labels[i:i + 1]} for i in range(len(y))]

    def detection_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The detector's own summed training losses (training mode); label smoothing has no place in them."""
        return sum(self.detector(self.images(x), self.targets(x, y)).values())

    def classify(self, x: torch.Tensor) -> Predictions:
        """Class scores and classes of a batch (evaluation mode): the best detection's label, else the
        class the box classifier scores highest over the image's proposals."""
        det = self.detector
        images, _ = det.transform(self.images(x))
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (B, K) of a batch, in evaluation mode (in training mode the detector wants
        targets: use ``detection_loss``)."""
        return self.classify(x).logits


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
    with tempfile.TemporaryDirectory() as home:
        (Path(home) / "hub" / "checkpoints").mkdir(parents=True)
        (Path(home) / "hub" / "checkpoints" / path.name).symlink_to(path.resolve())
        with hub_folder(Path(home)):
            yield


@contextlib.contextmanager
def hub_folder(home: Path) -> Iterator[None]:
    """torch.hub's folder is ``home/hub`` inside the block, through its public interface only: torch reads
    ``$TORCH_HOME`` at each call unless ``torch.hub.set_dir`` pinned a folder, and ``set_dir`` has no undo, so
    the variable is used where it works (the usual case) and ``set_dir`` and back only where a folder was pinned."""
    saved = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    try:
        if Path(torch.hub.get_dir()) == home / "hub":
            yield
        else:  # someone pinned torch.hub's folder: pin ours, then theirs again
            previous = torch.hub.get_dir()
            torch.hub.set_dir(str(home / "hub"))
            try:
                yield
            finally:
                torch.hub.set_dir(previous)
    finally:
        if saved is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = saved


# torchvision sets the frozen norms' eps to 0 after loading these weights (``overwrite_eps``); elsewhere 1e-5.
FROZEN_EPS = {"resnet50": 0.0}


def freeze_norms(module: nn.Module, eps: float | None = None) -> None:
    """Replace every BatchNorm2d under ``module`` by torchvision's FrozenBatchNorm2d (the norm layer its
    builders give a pretrained backbone), same features and ``eps`` unless given."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, FrozenBatchNorm2d(child.num_features, eps=child.eps if eps is None else eps))
        else:
            freeze_norms(child, eps)


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
    if cfg.pretrained and ctx.load_weights:
        # torchvision builds the pretrained architecture (frozen norms and early layers) only with its weights.
        with torchvision_reads(ensure_weights(weights, ctx.weights_dir)):
            net = builder(weights=weights, weights_backbone=None,
                          trainable_backbone_layers=cfg.trainable_backbone_layers, **settings)
    elif cfg.pretrained:
        # A checkpoint is about to replace every weight (a finalist's test, a model bundle): the pretrained
        # architecture differs from a scratch one only in its frozen batch norms, rebuilt here so that no
        # COCO file is needed to use a trained detector.
        net = builder(weights=None, weights_backbone=None, num_classes=91, **settings)
        freeze_norms(net.backbone, eps=FROZEN_EPS.get(cfg.backbone))
    else:
        net = builder(weights=None, weights_backbone=None, num_classes=91, **settings)
    in_features = net.roi_heads.box_predictor.cls_score.in_features
    net.roi_heads.box_predictor = FastRCNNPredictor(in_features, ctx.num_classes + 1)  # + background
    return ObjectDetector(net, ctx)
