"""Fine-tuning torchvision's ImageNet classifiers on any image data: one helper for every
such architecture (VGG16, AlexNet, ResNet-18), holding the settings, the input adapter, the weight
loading and the shared part of the search space. A model file gives only the torchvision builder,
its weights, its input sizes and its share of a GPU (``finetuned_spec``).

The network is adapted generically: for gray data its first convolution (the first ``nn.Conv2d`` it
holds) takes one channel instead of three, and its head (the last ``nn.Linear``) is replaced by a
``num_classes``-way one. The backbone (what ``strategy`` freezes or slows) is everything but the
head, or the submodule a model file names (VGG and AlexNet: ``features``, so their hidden
fully connected layers train with the head). ``classifier_dropout`` is the rate of the classifier's own
dropout layers (VGG's and AlexNet's two, 0.5 in torchvision), or of one added before the new head where the
network has none (ResNet).

Input: batches arrive as (B, C, S, S) normalized with the data set's per-channel mean and std. The
adapter resizes them on the device to the searched input size and re-normalizes them the way ImageNet
images were: RGB images with ImageNet's per-channel mean and std; gray images with the mean and std of
ImageNet's three channels averaged (0.449, 0.226). A gray image is then the same in all three
channels, so the first convolution's RGB filters are summed into one input channel, exactly equal to
repeating the channel and a third of that layer's work.

This file describes them without torch (settings, space, weights by name); the networks and the weight
loading are ``models.nets.finetune``, imported when one is built.

Weights: torchvision's own loading path (its cache under ``$TORCH_HOME/hub/checkpoints``, filled by
a download when online), with ``--weights-dir`` searched first for the same file names. Files are
loaded with ``torch.load(weights_only=True)``. Missing weights are an error naming the file and where
it goes, never a silent random initialization.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from models.config import check, choice, from_flat, suggest_optimizer
from models.registry import SMOKE_TRAIN_IMAGES, BuildContext, Config, DataShape, ModelSpec, imported

if TYPE_CHECKING:
    from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_GRAY_MEAN = 0.449  # mean of IMAGENET_MEAN
IMAGENET_GRAY_STD = 0.226  # mean of IMAGENET_STD
STRATEGIES = ("head", "all", "discriminative")


class WeightsError(RuntimeError):
    """Pretrained weights that cannot be had; the message names the file, its place and the fix."""


@dataclass(frozen=True)
class FineTuneConfig:
    """Settings shared by every fine-tuned architecture; subclasses set the input size bounds.

    strategy: ``head`` trains the classifier only (the convolutional backbone is frozen); ``all``
    trains everything at one learning rate; ``discriminative`` trains everything with the backbone
    at ``backbone_lr_mult`` times the learning rate (the pretrained features move less).
    """

    pretrained: bool = True
    strategy: str = "discriminative"
    backbone_lr_mult: float = 0.1
    input_size: int = 64
    classifier_dropout: float = 0.5

    MIN_INPUT = 32  # what the architecture accepts; overridden per architecture

    def __post_init__(self) -> None:
        choice("strategy", self.strategy, STRATEGIES)
        check(0 < self.backbone_lr_mult <= 1, f"backbone_lr_mult={self.backbone_lr_mult} must be in (0, 1]")
        check(self.input_size >= self.MIN_INPUT, f"input_size={self.input_size} is below what this network "
              f"accepts ({self.MIN_INPUT} pixels): choose {self.MIN_INPUT} or more")
        check(self.input_size <= 512, f"input_size={self.input_size} must be at most 512")
        check(0.0 <= self.classifier_dropout < 1.0, f"classifier_dropout={self.classifier_dropout} must be in [0, 1)")
        check(not (self.strategy == "head" and not self.pretrained),
              "strategy='head' with pretrained=False would train a classifier on random features; "
              "use strategy='all' when training from scratch")


# Model files name torchvision's builders and weights as text ("vgg16", "VGG16_Weights.IMAGENET1K_V1"),
# resolved when a network is built or its weights looked for: importing torchvision takes a second
# (it imports every model it has, detection and torch._dynamo included), and a process that trains
# the CNN or the ViT, or only parses the command line, never needs it.

def tv_weights(weights: Any) -> Any:
    """torchvision's weights enum member named ``weights`` ("AlexNet_Weights.IMAGENET1K_V1"), or
    ``weights`` itself if it is one already."""
    if not isinstance(weights, str):
        return weights
    from torchvision.models import get_weight

    return get_weight(weights)


def tv_builder(builder: str | Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """torchvision's model builder named ``builder`` ("vgg16", "fasterrcnn_resnet50_fpn")."""
    if not isinstance(builder, str):
        return builder
    from torchvision.models import get_model_builder

    return get_model_builder(builder)


def weights_file_name(weights: Any) -> str:
    """The file name torchvision stores ``weights`` under (the last part of its URL); weights of another source
    (``models.timm_zoo.TimmWeights``) name their own."""
    if hasattr(weights, "file_name"):
        return weights.file_name
    return os.path.basename(urlparse(tv_weights(weights).url).path)


def torchvision_cache() -> Path:
    """Where torchvision keeps downloaded weights: ``$TORCH_HOME/hub/checkpoints``."""
    import torch.hub  # torch's own answer ($TORCH_HOME, $XDG_CACHE_HOME, or what torch.hub.set_dir chose)

    return Path(torch.hub.get_dir()) / "checkpoints"


def find_weights(weights: Any, weights_dir: str | os.PathLike | None) -> Path | None:
    """The local file of ``weights``: in ``weights_dir`` first, then in torchvision's cache."""
    name = weights_file_name(weights)
    folders = ([Path(weights_dir).expanduser()] if weights_dir else []) + [torchvision_cache()]
    return next((folder / name for folder in folders if (folder / name).is_file()), None)


def ensure_weights(weights: Any, weights_dir: str | os.PathLike | None, download: bool = True) -> Path:
    """Return the local file of ``weights``, downloading it into torchvision's cache when allowed.

    Raises ``WeightsError`` naming the file, the folders searched and the ``--no-pretrained`` way out. Weights of
    another source than torchvision (``models.timm_zoo.TimmWeights``) are found by their own ``ensure``.
    """
    if hasattr(weights, "ensure"):
        return weights.ensure(weights_dir, download)
    weights = tv_weights(weights)
    found = find_weights(weights, weights_dir)
    if found:
        return found
    reason = "downloading is turned off"
    if download:
        try:
            weights.get_state_dict(progress=False, check_hash=True)  # torchvision's own download path
        except Exception as e:  # offline, a proxy, a hash mismatch: all end in the same advice
            reason = f"downloading it failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        else:
            found = find_weights(weights, weights_dir)
            if found:
                return found
            reason = "torchvision's download did not leave it in its cache"
    name = weights_file_name(weights)
    places = ([f"--weights-dir ({Path(weights_dir).expanduser()})"] if weights_dir else []) + \
        [f"torchvision's cache ({torchvision_cache()})"]
    raise WeightsError(
        f"pretrained weights {name} ({weights}) not found in {' or '.join(places)}; {reason}. "
        f"Download {weights.url} into {torchvision_cache()} or into a folder given as --weights-dir, "
        "or pass --no-pretrained to train from random initialization (recorded as pretrained=False)."
    )


def finetune_space(trial: Any, shape: DataShape, input_sizes: list[int],
                   weight_decay: tuple[float, float] = (1e-6, 1e-2)) -> dict[str, Any]:
    """The search space every fine-tuned architecture shares: suggestions only. Images are resized to
    the input size searched, so any data size fits; data larger than every input size listed may also
    be searched at 224 pixels (ImageNet's own size). ``weight_decay``: its range (log scale)."""
    constants: dict[str, Any] = {"schedule": "cosine"}
    if trial.params.get("pretrained", True):
        strategy = trial.suggest_categorical("strategy", list(STRATEGIES))
    else:  # from scratch there is nothing to keep: everything trains at one rate
        strategy = constants["strategy"] = "all"
    if strategy == "discriminative":
        trial.suggest_float("backbone_lr_mult", 0.01, 0.3, log=True)
    suggest_optimizer(trial, {"adamw": (1e-5, 1e-3), "sgd": (1e-3, 5e-2)})
    trial.suggest_float("weight_decay", *weight_decay, log=True)
    trial.suggest_categorical("batch_size", shape.batch_sizes([64, 128, 256]))
    trial.suggest_float("classifier_dropout", 0.0, 0.6)
    trial.suggest_categorical("warmup_epochs", [0.0, 0.5, 1.0])
    trial.suggest_categorical("input_size", input_sizes + ([224] if shape.image_size > max(input_sizes) else []))
    trial.suggest_float("label_smoothing", 0.0, 0.1)
    trial.suggest_categorical("augment", shape.augments())
    return constants


# What --no-pretrained changes in a fine-tuned model's default: from scratch nothing is kept frozen, and no photo is
# cropped: over 3 epochs from random initialization the crop and flip cost ResNet-18 6 points of test accuracy on
# Fashion-MNIST made RGB at 32 px (85.6% without, 79.5% with; 10,000 training images, docs/models.md#augmentation).
SCRATCH_CONFIG = {"pretrained": False, "strategy": "all", "augment": "none"}


def photo_defaults(shape: DataShape) -> dict[str, Any]:
    """What a fine-tuned model's default changes for ``shape``: on photos, a random resized crop and a flip
    (augment="light"), the recipe every ImageNet fine-tuning starts from; digits keep none (and so does a model
    trained from scratch: ``SCRATCH_CONFIG``)."""
    return {"augment": "light"} if shape.photos else {}


def finetuned_spec(name: str, config_cls: type[FineTuneConfig], builder: str, weights: str,
                   input_sizes: list[int], gpus: float, backbone: str | None = None, cpu_bf16: bool = True,
                   images_per_s: tuple[float, float | None] = (1000.0, None)) -> ModelSpec:
    """The registry entry of a torchvision classifier fine-tuned here: everything but the network,
    its weights, its input sizes, its share of a GPU and (optionally) the submodule that is its
    pretrained backbone is common to all of them. ``builder`` and ``weights`` are torchvision's names
    (``tv_builder``, ``tv_weights``)."""

    def build(config: Config, ctx: BuildContext = BuildContext()) -> nn.Module:
        # named, not imported: torch loads with the first network built (see models.registry.Network)
        build_finetuned = imported("models.nets.finetune:build_finetuned")
        return build_finetuned(from_flat(config_cls, config), ctx, builder, weights, backbone)

    smallest = config_cls().input_size
    return ModelSpec(
        name=name,
        config_cls=config_cls,
        build=build,
        space=functools.partial(finetune_space, input_sizes=input_sizes),
        # SGD with momentum, the backbone at a tenth of the head's rate: the classic fine-tuning recipe.
        default_config=dict(
            strategy="discriminative", backbone_lr_mult=0.1, optimizer="sgd", lr=0.01, momentum=0.9,
            weight_decay=5e-4, batch_size=128, classifier_dropout=0.5, warmup_epochs=0.5, input_size=smallest,
            schedule="cosine", label_smoothing=0.0, augment="none",
        ),
        max_epochs=3,
        grace_period=1,
        cpus=1.0,
        gpus=gpus,
        # VGG16 and AlexNet: 1.1-2x per training step under bf16 on 2-core AVX-512 BF16 CPUs
        # (benchmarks/epoch_cost.py); a model file passes False where it measured otherwise.
        cpu_bf16=cpu_bf16,
        pretrained_weights=weights,
        scratch_config=SCRATCH_CONFIG,
        # The smallest input (a larger draw makes a smoke run minutes longer), a quarter of the smoke images.
        smoke_config={"input_size": smallest, "max_train_images": SMOKE_TRAIN_IMAGES},
        images_per_s=images_per_s,
        adapt=photo_defaults,
        description=f"{name} fine-tuned from {weights}",
    )
