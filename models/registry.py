"""The one registry of searchable architectures.

Every part of the project (CLI, trainable, exports, analysis) names models by the names registered
here. A model file registers a ``ModelSpec`` that holds its builder, its search space, a default
configuration known to train well, and what its trials need from the scheduler.

The registry and the model files are free of torch: a model file names its network's builder
(``Network("models.nets.cnn:build")``), imported when a trial first builds one. The command line reads
the registry to check its flags and print ``--help``, and so answers in a fifth of a second instead of
first loading torch (docs/benchmarks.md).
"""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from models.config import (AUGMENT_POLICIES, MODEL_KEY, ConfigError, TrainConfig, augment_policy, choice,
                           field_names)
from models.task import CLASSIFICATION, Task

if TYPE_CHECKING:  # the registry describes models without torch: the command line checks its flags in a second
    from torch import nn

Config = Mapping[str, Any]


# What --smoke pins (``ModelSpec.smoke_config``) for the models whose epochs cost minutes on a CPU: each
# epoch on this many of the smoke run's training images (every code path runs, at a fraction of the cost).
SMOKE_TRAIN_IMAGES = 128
MIN_STEPS = 16  # training steps an epoch at the least: fewer, and the first rungs judge barely trained models
# Every model's epoch budget was set on MNIST's 55,000 training images (60,000 less 5,000 for validation). On a
# smaller data set a model with ``min_images`` trains for more epochs, up to MAX_SCALED_EPOCHS (``scaled_budget``):
# 3 CNN epochs are 165,000 images seen on MNIST, 3,900 on scikit-learn's digits.
REFERENCE_TRAIN_IMAGES = 55_000
MAX_SCALED_EPOCHS = 100  # an epoch of a small data set costs little, but each one is reported, judged, checkpointed
# Augmentation shifts an image by up to one pixel per SHIFT_EVERY pixels of its size: 2 on MNIST's 28x28 digits
# (they stay recognisable and inside the frame), 16 on 224. Below SHIFT_EVERY pixels no whole-pixel shift is
# that small (one pixel is an eighth of an 8x8 image) and such images are not shifted: measured on scikit-learn's
# 8x8 digits, a one-pixel shift took the ViT's default from 73% to 18% test accuracy in 15 epochs, from 94% to 82%
# in 60 (docs/models.md).
SHIFT_EVERY = 14


def augment_shift(image_size: int) -> int:
    """Augmentation's largest shift in pixels for ``image_size`` images (0: not shifted, see SHIFT_EVERY)."""
    return image_size // SHIFT_EVERY


PHOTO_SIZE = 32  # RGB images of at least this size are photos (CIFAR's are the smallest usual ones)
# Mixing regularizes over long trainings (timm's and DeiT's recipes mix over hundreds of epochs); over the few
# epochs a trial of a fine-tuned model has by default it only makes the task harder, so a space offers it to
# budgets of at least this many epochs.
MIX_MIN_EPOCHS = 10


@dataclass(frozen=True)
class DataShape:
    """What a model is fed and must predict: (B, channels, image_size, image_size) batches, num_classes
    classes. Builders and search spaces read it here, never from a constant (the default is MNIST's).
    ``train_images`` (when known) sizes the batches a space offers (``batch_sizes``)."""

    channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    train_images: int | None = None
    epochs: int | None = None  # the most a trial of this search trains: mixing pays only over long budgets

    @property
    def photos(self) -> bool:
        """RGB images of at least ``PHOTO_SIZE`` pixels: cropped, flipped and colour-augmented, unlike digits."""
        return self.channels == 3 and self.image_size >= PHOTO_SIZE

    def __str__(self) -> str:
        return f"{self.channels}x{self.image_size}x{self.image_size} images, {self.num_classes} classes"

    def batch_sizes(self, choices: list[int]) -> list[int]:
        """The ``choices`` that still give an epoch ``MIN_STEPS`` steps on the training images; where none
        does (a small data set), the largest power of two that does. All of them when the size is unknown."""
        if not self.train_images:
            return list(choices)
        most = max(1, self.train_images // MIN_STEPS)
        return [c for c in choices if c <= most] or [1 << (most.bit_length() - 1)]

    def augments(self, mixing: bool = True) -> list[str]:
        """The ``augment`` policies a space offers for these images (``AUGMENT_POLICIES``): on photos, none, light
        and strong, and "strong-mix" where the model can train on mixed labels (``mixing``) and the budget is
        ``MIX_MIN_EPOCHS`` or more; on other images none and light, and only "none" where "light" would change
        nothing (``augment_shift``): no trial is spent on a setting that changes nothing."""
        if self.photos:
            long = self.epochs is not None and self.epochs >= MIX_MIN_EPOCHS
            return list(AUGMENT_POLICIES if mixing and long else AUGMENT_POLICIES[:3])
        return ["none", "light"] if augment_shift(self.image_size) else ["none"]


@dataclass(frozen=True)
class BuildContext:
    """What a builder needs beside the config: the data's shape and the input it will be fed.

    ``mean``/``std`` are the per-channel normalization the batches arrive with (models that
    re-normalize, such as ImageNet-pretrained ones, undo it); ``weights_dir`` is searched first for
    pretrained weight files; ``load_weights=False`` skips pretrained weights that a checkpoint is about
    to replace.
    """

    shape: DataShape = DataShape()
    mean: tuple[float, ...] = (0.1307,)
    std: tuple[float, ...] = (0.3081,)
    weights_dir: str | None = None
    load_weights: bool = True

    @property
    def num_classes(self) -> int:
        return self.shape.num_classes


def imported(path: str) -> Callable[..., Any]:
    """The function named ``"package.module:function"``, imported now."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Network:
    """A model file's builder named by its path (``"models.nets.cnn:build"``), imported on the first call:
    torch loads with the first network built, not with the registry, and the network's module may import
    the model file's settings without an import cycle."""

    path: str

    def __call__(self, config: Config, ctx: BuildContext = BuildContext()) -> nn.Module:
        return imported(self.path)(config, ctx)


class UnknownModelError(KeyError):
    """Raised for a name that is not registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; this one is meant for people
        return str(self.args[0])


@dataclass(frozen=True)
class ModelSpec:
    """Everything the search needs to know about one architecture.

    - ``config_cls`` is the dataclass of its architecture settings; the shared training settings
      are ``models.config.TrainConfig``.
    - ``build(config, ctx)`` (a ``Network`` in the model files) returns a module mapping (B, C, S, S) normalized images (``ctx.shape``) to
      (B, ctx.num_classes) logits.
    - ``space(trial, shape)`` is an Optuna define-by-run space for data of ``shape``: it suggests values
      (only ones that build for that shape), and may return a dict of constants to add to the config.
    - ``default_config`` is tried first by the search and used by ``trainables.train``; ``adapt(shape)``
      (if given) returns what must change in it for data of ``shape`` (``defaults_for``), and raises
      ``ConfigError`` for data the model cannot take at all.
    - ``fits(config, shape)`` (if given) raises ``ConfigError`` for a config that cannot build for
      ``shape`` (a patch size that does not divide the image), so ``--set`` values are checked before Ray starts.
    - ``max_epochs`` / ``grace_period`` are this model's ASHA budget on CPUs, ``gpu_max_epochs`` /
      ``gpu_grace_period`` on GPUs (None: the CPU one); ``budget(on_gpu, train_images)`` picks, and with
      ``min_images`` (images a trial trains on at the least) a small data set gets more epochs. CLI flags override.
    - ``cpus`` / ``gpus`` are what one trial takes from Ray by default.
    - ``pretrained_weights``: the weights the model starts from; such a model's config has a
      ``pretrained`` setting, and the search checks the file is available before any trial starts.
      Where a setting picks among several (Faster R-CNN's ``backbone``), it is a dict from that
      setting's values to weights, and ``weights_by`` names the setting. ``scratch_config`` is
      what training from random initialization changes in ``default_config`` (``pretrained=False``
      and whatever only makes sense with it).
    - ``task``: how the trainable computes the loss and the class predictions (``models.task``);
      classification unless the model says otherwise.
    - ``smoke_config``: settings ``--smoke`` pins (e.g. the smallest input size), so a smoke run's
      cost does not depend on what the sampler happens to draw.
    - ``cpu_bf16`` / ``gpu_bf16``: whether bf16 autocast speeds this model up on CPUs with fast bf16
      / on GPUs with bf16; measured, not assumed (a small model is bound by kernel launches on a big
      GPU, and autocast's casts then cost more than they save).
    - ``images_per_s``: training images a second of the default configuration, measured on 2 CPU cores and on
      an H100 (``benchmarks/epoch_cost.py``; None: not measured there). Only orders the search's trials, the
      longest first (``expected_seconds``), so that the slowest model's trials do not start last.
    """

    name: str
    config_cls: type  # the dataclass of the architecture's settings (see models.config)
    build: Callable[[Config, BuildContext], nn.Module]
    space: Callable[[Any, DataShape], dict[str, Any] | None]
    default_config: dict[str, Any]
    adapt: Callable[[DataShape], dict[str, Any]] | None = None
    fits: Callable[[Config, DataShape], None] | None = None
    max_epochs: int = 3
    grace_period: int = 1
    gpu_max_epochs: int | None = None  # a GPU's budget: enough for the accuracy the architecture is known for
    gpu_grace_period: int | None = None
    min_images: int = 0  # images a trial trains on at the least, over its epochs (0: the epochs above, whatever the data)
    cpus: float = 1.0
    gpus: float = 0.25
    cpu_bf16: bool = False  # bf16 autocast on CPUs with fast bf16: only where measured to be faster
    gpu_bf16: bool = True  # bf16 autocast on GPUs with bf16 (VGG16 1.3x, AlexNet 1.2x on an H100)
    pretrained_weights: Any = None  # a torchvision weights enum member (or a dict of them, see weights_by)
    weights_by: str | None = None  # the setting whose value picks the weights in pretrained_weights
    scratch_config: dict[str, Any] = field(default_factory=dict)  # what --no-pretrained changes in default_config
    smoke_config: dict[str, Any] = field(default_factory=dict)  # settings pinned by --smoke to keep it cheap
    description: str = ""
    task: Task = CLASSIFICATION
    images_per_s: tuple[float, float | None] = (1000.0, None)  # (2 CPU cores, H100), default configuration

    def defaults_for(self, shape: DataShape) -> dict[str, Any]:
        """``default_config`` made to build for data of ``shape`` (its batches small enough for a small data set,
        its augmentation the strongest policy these images are offered up to the default's); raises ``ConfigError``
        if nothing can."""
        config = {**self.default_config, **(self.adapt(shape) if self.adapt else {})}
        if "batch_size" in config:
            config["batch_size"] = shape.batch_sizes([config["batch_size"]])[0]
        if "augment" in config:  # the strongest policy up to the default's that these images are offered
            offered, policy = shape.augments(), augment_policy(config["augment"])
            choice("augment", policy, AUGMENT_POLICIES)
            wanted = AUGMENT_POLICIES.index(policy)
            config["augment"] = next(p for p in reversed(AUGMENT_POLICIES[:wanted + 1]) if p in offered)
        return config

    def check_fits(self, config: Config, shape: DataShape) -> None:
        """Raise ``ConfigError`` if ``config`` cannot build for data of ``shape`` (or train on mixed images, where
        its task cannot)."""
        if augment_policy(config.get("augment", "none")) == "strong-mix" and not self.task.mixes:
            raise ConfigError(f"augment=strong-mix mixes two labels an image, which {self.name}'s {self.task.name} "
                              f"loss cannot take; choose one of {', '.join(AUGMENT_POLICIES[:3])}")
        if self.fits:
            self.fits(config, shape)

    def budget(self, on_gpu: bool, train_images: int | None = None) -> tuple[int, int]:
        """(epochs a trial may train, ASHA's first rung) on GPUs or on CPUs, for an epoch of ``train_images``
        (unknown: the model's own budget)."""
        if on_gpu:
            epochs, grace = self.gpu_max_epochs or self.max_epochs, self.gpu_grace_period or self.grace_period
        else:
            epochs, grace = self.max_epochs, self.grace_period
        return scaled_budget(epochs, grace, self.min_images, train_images)

    def expected_seconds(self, epochs: int, train_images: int, val_images: int, on_gpu: bool,
                         fixed: Config | None = None) -> float:
        """A rough cost of one trial trained ``epochs`` epochs (each on at most ``max_train_images`` of
        ``train_images`` if pinned, then scored on ``val_images``), from the measured ``images_per_s``: what
        the search needs to start the longest trials first, not a promise of their time."""
        cpu, gpu = self.images_per_s
        rate = gpu if on_gpu and gpu else cpu
        cap = (fixed or {}).get("max_train_images") or train_images
        return epochs * (min(train_images, int(cap)) + val_images / 3) / rate  # evaluating costs about a third

    def weights_for(self, config: Config) -> Any:
        """The pretrained weights a trial with ``config`` starts from."""
        if self.weights_by is None:
            return self.pretrained_weights
        return self.pretrained_weights[config.get(self.weights_by, self.default_config[self.weights_by])]

    def weights_needed(self, fixed: Config) -> list[Any]:
        """Every pretrained weights a search whose trials all get the settings ``fixed`` may load."""
        if self.weights_by is None:
            return [self.pretrained_weights]
        if self.weights_by in fixed:
            return [self.weights_for(fixed)]
        return list(self.pretrained_weights.values())


def scaled_budget(epochs: int, grace: int, min_images: int, train_images: int | None) -> tuple[int, int]:
    """(epochs, first rung) such that a trial sees at least ``min_images`` images when an epoch is
    ``train_images`` (at most ``MAX_SCALED_EPOCHS``, never fewer than ``epochs``); the first rung keeps its
    share of the trial, so ASHA still judges after the same fraction of the optimisation."""
    if not min_images or not train_images:
        return epochs, grace
    wanted = min(MAX_SCALED_EPOCHS, math.ceil(min_images / train_images))
    if wanted <= epochs:
        return epochs, grace
    return wanted, min(wanted, max(grace, round(grace * wanted / epochs)))


_REGISTRY: dict[str, ModelSpec] = {}
_ORIGINS: dict[str, str] = {}  # name -> "file:line" of its register call (what a check of the model names)


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` under its name; registering a name twice is an error."""
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is already registered")
    if spec.name == "all" or "," in spec.name or "/" in spec.name:
        raise ValueError(f"{spec.name!r} cannot be a model name: 'all' and commas have a meaning on the command "
                         "line, and a name is a folder name in the exports")
    # A flat config is split by field name: a model field named like a training setting would
    # silently take (or give) the other's value.
    shared = field_names(spec.config_cls) & (field_names(TrainConfig) | {MODEL_KEY})
    if shared:
        raise ValueError(f"model {spec.name!r}: its config fields {', '.join(sorted(shared))} are training settings "
                         f"(models.config.TrainConfig) or the model key; rename them")
    _REGISTRY[spec.name] = spec
    caller = sys._getframe(1)
    _ORIGINS[spec.name] = f"{caller.f_code.co_filename}:{caller.f_lineno}"
    return spec


def unregister(name: str) -> None:
    """Remove a model (for tests that register throw-away models, and a user's file that failed half-way)."""
    _REGISTRY.pop(name, None)
    _ORIGINS.pop(name, None)


def origin_line(name: str) -> str:
    """``file:line`` of the ``register`` call that added ``name``."""
    return _ORIGINS.get(name, "")


# Families of architectures named by a prefix ("timm:<architecture>"): any member, registered or not, is made into
# a spec on first use (in the command line, each trial process, predict), and checked there.
_FAMILIES: dict[str, Callable[[str], ModelSpec]] = {}
_RESOLVED: dict[str, ModelSpec] = {}


def add_family(prefix: str, resolve: Callable[[str], ModelSpec]) -> None:
    """Names ``prefix:<member>`` are models: ``resolve(member)`` returns the spec (named ``prefix:<member>``) or
    raises ``UnknownModelError``. A registered name of the family (measured settings) wins over ``resolve``."""
    _FAMILIES[prefix] = resolve


def get(name: str) -> ModelSpec:
    """The spec registered as ``name`` (or a member of a family, ``timm:<architecture>``); an unknown name raises
    an error listing the known ones."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    prefix, sep, member = name.partition(":")
    if sep and prefix in _FAMILIES:
        if name not in _RESOLVED:
            _RESOLVED[name] = _FAMILIES[prefix](member)
        return _RESOLVED[name]
    families = "".join(f", {prefix}:<name>" for prefix in _FAMILIES)
    raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(names())}{families}")


def names() -> list[str]:
    """Every registered name, in registration order."""
    return list(_REGISTRY)


def builtin_names() -> list[str]:
    """What ``--model all`` searches: the registered architectures outside any family (a family's registered
    members, ``timm:...``, are named one by one)."""
    return [name for name in _REGISTRY if ":" not in name]


def parse_models(text: str) -> list[str]:
    """``"all"``, a name, or a comma-separated list -> validated names without duplicates."""
    if text.strip() == "all":
        return builtin_names()
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    if not chosen:
        raise UnknownModelError(f"no model named; known models: {', '.join(names())}, or 'all'")
    for name in chosen:
        get(name)
    return list(dict.fromkeys(chosen))
