"""timm's architectures as models of the search: ``--model timm:<architecture>`` for any of the about 1,400 that
timm (PyTorch Image Models) builds, fine-tuned the way ``models.finetune`` fine-tunes torchvision's classifiers
(the searched strategy and backbone learning-rate multiplier, the input adapter that resizes and re-normalizes,
the first convolution folded for gray data, a new head), with timm's own stochastic depth (``drop_path_rate``)
searched too. A few architectures are registered here with measured settings; any other is made on first use.

Names are checked against timm's list without importing timm or torch: the list is read from timm's source
(the functions it registers with ``@register_model``), so a misspelled name is refused in a fraction of a second
with the close names. The networks are built by ``models.nets.timm_zoo``.

Weights, as the ecosystem keeps them: a file ``<architecture>.safetensors`` (or ``.pth``, ``.bin``) in
``--weights-dir``; else timm's own source, the Hugging Face hub's cache (``$HF_HOME``, ``$HF_HUB_CACHE``),
downloaded into it when online. Missing weights are an error naming the file and both places, before any trial.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.config import ConfigError, check, from_flat
from models.finetune import SCRATCH_CONFIG, FineTuneConfig, WeightsError, finetune_space, photo_defaults
from models.registry import (SMOKE_TRAIN_IMAGES, BuildContext, Config, ModelSpec, UnknownModelError, add_family,
                             imported, register)

PREFIX = "timm"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".bin")  # what timm loads from a file (pretrained_cfg's ``file``)
INPUT_SIZES = [32, 64, 112]  # 32: every family here reaches a 1x1 map at the least; multiples of 16 (ViT patches)


@functools.cache
def architectures() -> frozenset[str]:
    """Every architecture timm can build, read from its source (``@register_model`` functions): the same list as
    ``timm.list_models()`` (tests/test_timm.py checks), in milliseconds instead of seconds of imports."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    found: set[str] = set()
    for source in folder.glob("*.py"):
        found |= set(re.findall(r"^@register_model(?:\([^)]*\))?\s*\ndef (\w+)\(", source.read_text(), flags=re.M))
    return frozenset(found)


def check_architecture(arch: str) -> None:
    """Raise ``UnknownModelError`` for an architecture timm does not have (or timm missing), naming close ones."""
    known = architectures()
    if not known:
        raise UnknownModelError(f"timm:{arch}: timm is not installed; pip install timm")
    if arch not in known:
        close = difflib.get_close_matches(arch, sorted(known), n=5, cutoff=0.6)
        hint = f"; close names: {', '.join(f'timm:{c}' for c in close)}" if close else \
            "; timm.list_models('*pattern*') lists them"
        raise UnknownModelError(f"unknown timm architecture {arch!r}{hint}")


@dataclass(frozen=True)
class TimmWeights:
    """An architecture's pretrained weights as timm keeps them: ``<arch>.safetensors`` (or .pth, .bin) in
    ``--weights-dir``, or the Hugging Face hub's cache of timm's default weights for it."""

    arch: str

    @property
    def file_name(self) -> str:
        return f"{self.arch}{WEIGHT_SUFFIXES[0]}"

    def __str__(self) -> str:
        return f"timm's default weights for {self.arch}"

    def hub_file(self) -> tuple[str, str] | None:
        """(Hugging Face repository, file) of timm's default weights, or None where timm has none on the hub."""
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(self.arch)
        return (cfg.hf_hub_id, cfg.hf_hub_filename or "model.safetensors") if cfg and cfg.hf_hub_id else None

    def ensure(self, weights_dir: str | os.PathLike | None, download: bool = True) -> Path:
        """The local file of these weights, downloaded into the hub's cache when allowed; else ``WeightsError``."""
        folder = Path(weights_dir).expanduser() if weights_dir else None
        for suffix in WEIGHT_SUFFIXES if folder else ():
            if (folder / f"{self.arch}{suffix}").is_file():
                return folder / f"{self.arch}{suffix}"
        from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

        hub = self.hub_file()
        reason = "timm has no pretrained weights for it on the Hugging Face hub"
        if hub:
            cached = try_to_load_from_cache(*hub)
            if isinstance(cached, str):
                return Path(cached)
            reason = "downloading is turned off"
            if download:
                try:
                    return Path(hf_hub_download(*hub))
                except Exception as e:  # offline, a proxy, HF_HUB_OFFLINE: all end in the same advice
                    reason = f"downloading it failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        where = f"--weights-dir ({folder})" if folder else "a folder given as --weights-dir"
        source = f" (the hub's {hub[0]}/{hub[1]})" if hub else ""
        raise WeightsError(
            f"pretrained weights for timm:{self.arch} not found: put {self.file_name} (or .pth, .bin) in {where}, "
            f"or timm's weights{source} in the Hugging Face cache ({constants.HF_HUB_CACHE}); {reason}. "
            "Or pass --no-pretrained to train from random initialization (recorded as pretrained=False).")


@dataclass(frozen=True)
class TimmConfig(FineTuneConfig):
    """A fine-tuned timm network's settings: ``models.finetune.FineTuneConfig``'s, and its stochastic depth."""

    input_size: int = 32
    drop_path_rate: float = 0.0  # timm's stochastic depth: the rate at the deepest block (0: off)
    classifier_dropout: float = 0.0  # timm's ``drop_rate`` before the head

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0.0 <= self.drop_path_rate < 1.0, f"drop_path_rate={self.drop_path_rate} must be in [0, 1)")


def takes_drop_path(arch: str) -> bool:
    """Whether ``arch``'s constructor takes a stochastic depth (``models.nets.timm_zoo.takes``: torch and timm are
    imported by the first call, in the driver, where the data's tensors load them anyway)."""
    return imported("models.nets.timm_zoo:takes")(arch, "drop_path_rate")


def timm_space(trial: Any, shape: Any, input_sizes: list[int], arch: str) -> dict[str, Any]:
    """The fine-tuning space (``models.finetune.finetune_space``), with AdamW's decoupled weight decay up to 0.1
    (timm's recipes use 0.05), and timm's stochastic depth where the architecture has one (else 0, recorded)."""
    constants = finetune_space(trial, shape, input_sizes, weight_decay=(1e-5, 0.1))
    if takes_drop_path(arch):
        trial.suggest_float("drop_path_rate", 0.0, 0.2)
    else:
        constants["drop_path_rate"] = 0.0
    return constants


def timm_fits(config: Config, shape: Any, arch: str) -> None:
    """A stochastic depth asked of an architecture without one (``--set drop_path_rate=0.1``) is refused."""
    if float(config.get("drop_path_rate") or 0) and not takes_drop_path(arch):
        raise ConfigError(f"drop_path_rate={config['drop_path_rate']}: timm's {arch} has no stochastic depth "
                          "(its constructor takes no drop_path_rate); leave it out")


def timm_spec(arch: str, gpus: float = 0.5, images_per_s: tuple[float, float | None] = (300.0, None),
              cpu_bf16: bool = False, input_sizes: list[int] | None = None) -> ModelSpec:
    """The spec of timm's ``arch`` as ``timm:<arch>``: settings not measured for it take these defaults (half a
    GPU a trial, fp32 on CPUs, a guessed 300 images a second that only orders trials)."""
    sizes = list(input_sizes or INPUT_SIZES)

    def build(config: Config, ctx: BuildContext = BuildContext()) -> Any:
        # named, not imported: torch and timm load with the first network built
        return imported("models.nets.timm_zoo:build_timm")(from_flat(TimmConfig, config), ctx, arch)

    return ModelSpec(
        name=f"{PREFIX}:{arch}",
        config_cls=TimmConfig,
        build=build,
        space=functools.partial(timm_space, input_sizes=sizes, arch=arch),
        fits=functools.partial(timm_fits, arch=arch),
        # AdamW with the backbone at a tenth of the head's rate: timm's own fine-tuning recipes use AdamW.
        default_config=dict(
            strategy="discriminative", backbone_lr_mult=0.1, optimizer="adamw", lr=1e-3, weight_decay=0.05,
            batch_size=128, classifier_dropout=0.0, drop_path_rate=0.0, warmup_epochs=0.5, input_size=sizes[0],
            schedule="cosine", label_smoothing=0.1, augment="none",
        ),
        max_epochs=3,
        grace_period=1,
        cpus=1.0,
        gpus=gpus,
        cpu_bf16=cpu_bf16,
        pretrained_weights=TimmWeights(arch),
        scratch_config=SCRATCH_CONFIG,
        smoke_config={"input_size": sizes[0], "max_train_images": SMOKE_TRAIN_IMAGES},
        images_per_s=images_per_s,
        adapt=photo_defaults,
        description=f"timm's {arch} fine-tuned",
    )


def resolve(arch: str) -> ModelSpec:
    """``timm:<arch>`` for an architecture not registered below: checked against timm's list, default settings."""
    check_architecture(arch)
    return timm_spec(arch)


add_family(PREFIX, resolve)

# Registered with their training speed measured at 32 pixels on 2 AMD EPYC cores, fp32 (bf16 autocast was 2x slower
# for the MobileNet and the EfficientNet there, within 8% for the ConvNeXt: benchmarks/results/epoch_cost_timm.json):
# three common modern families, small enough to search on a CPU. Not measured on a GPU yet.
for _arch, _rate in (("mobilenetv3_small_050", 2871.0), ("convnext_atto", 903.0), ("efficientnet_b0", 620.0)):
    register(timm_spec(_arch, images_per_s=(_rate, None)))
