"""The search's settings, in two steps: what the command line asks, checked before any data is read; then, once
the data is carved, the complete plan, made once and never changed.

``ask`` turns parsed flags into ``Asked`` (each model's requests: ``ModelAsk``) or raises ``UsageError`` with a
message that says what is wrong and how to fix it. ``search.command.plan.plan`` then makes ``Settings``: every
model's ``ModelPlan`` (its epochs and first rung for this data), how trials are scored (``folds``) and whether the
winners are refit. ``search.run`` is the command line around both; ``search.engine.driver`` runs what ``Settings``
describes.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imagesets
import models
from imagesets.options import DataOptions
from models import external
from search.command import storage
from search.command.checks import (UsageError, check_gpu_share, check_gpus,  # noqa: F401 (UsageError:
                                   check_weights, pinned_settings, positive)  # re-exported: what every check raises)

# The whole path, not accuracy: the models whose epochs cost minutes on a CPU also pin max_train_images
# (models.registry.SMOKE_TRAIN_IMAGES), so that a smoke search of every model takes minutes on 2 cores.
DEFAULT_SAMPLES = 8  # trials per model without --num-samples
SMALL_TRAIN = 10_000  # below this many training images a data set is small: its winners are refit by default
SMOKE = dict(limit=(1_024, 256, 512), num_samples=2, max_epochs=2, grace_period=1)
COMMAND_FILE = "command.json"  # the command line that defined an experiment, saved for --resume


@dataclass(frozen=True)
class ModelAsk:
    """What the command line asks of one model, before the data is known."""

    name: str
    num_samples: int
    max_epochs: int | None  # --max-epochs (or --smoke's); None: the model's own for the data (ModelSpec.budget)
    grace_period: int | None  # --grace-period (or --smoke's); None: the model's own for the data
    cpus: float
    gpus: float
    # For models fine-tuned from pretrained weights: the values ``pretrained`` may take. (True,) by
    # default, (False,) with --no-pretrained, (True, False) with --compare-scratch; () otherwise.
    pretrained: tuple[bool, ...] = ()
    fixed: dict[str, Any] = field(default_factory=dict)  # settings every trial gets (--set; --smoke pins some)


@dataclass(frozen=True)
class ModelPlan:
    """How one model is searched: how many trials, for how many epochs (``max_epochs``, the ``epochs`` of its
    trials' ``TrainConfig``), cut at which rungs, on data of which shape (``search.command.plan`` makes it from the
    model's ``ModelAsk`` and the data)."""

    name: str
    num_samples: int
    max_epochs: int
    grace_period: int
    cpus: float
    gpus: float
    pretrained: tuple[bool, ...] = ()  # as ``ModelAsk.pretrained``
    fixed: dict[str, Any] = field(default_factory=dict)  # settings every trial gets (--set; --smoke pins some)
    shape: models.DataShape = models.DataShape()  # the data's: the space and the default adapt to it


@dataclass(frozen=True, kw_only=True)
class Options:
    """How the search runs, as the command line asked: the same before and after the data is known."""

    models: list[str]
    gpus: int
    cpus: int
    data: DataOptions  # which images, decoded how, split how, capped where (--dataset ... --train-size, --smoke)
    storage: Path
    name: str
    seed: int
    time_budget: float | None
    weights_dir: str | None
    reduction_factor: float
    dashboard: bool
    amp: bool
    channels_last: bool
    verbose: int
    resume: bool = False
    retries: int = 0
    address: str | None = None  # a running Ray cluster ("auto" or HOST:PORT); None starts Ray here
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int | None = None  # --dashboard-port; None: Ray's, or the next it can bind (search.command.ports)
    # --storage-path as a URI (s3://, gs://, file://): Tune's state and checkpoints go there, and this
    # project's files are written under ``storage`` (./results) and uploaded at the end.
    remote: str | None = None
    argv: tuple[str, ...] = ()  # the command line that defined the experiment, saved for --resume
    max_concurrent: int | None = None  # --max-concurrent: a cap on the trials run at once
    reuse_processes: bool = True  # a finished trial's process takes the next trial of the same shape
    started_at: float = 0.0  # unix time the command started: the efficiency figures count from it
    sampler: str = "tpe"  # each study's sampler: "tpe", or "random" for a baseline
    repeats: int = 0  # --repeats: each winner trained this many more times at other seeds, each run tested
    epoch_budget: int | None = None  # --epoch-budget: training epochs the whole search may spend
    smoke: bool = False  # --smoke: the whole path on little data; each bundle's cost to run measured briefly

    @property
    def folder(self) -> Path:
        """The local folder of this experiment's exports, report and Optuna journal."""
        return self.storage / self.name

    @property
    def tune_storage(self) -> str:
        return self.remote or str(self.storage)

    @property
    def tune_folder(self) -> str:
        """Where Tune keeps this experiment: the folder, or its place under the storage URI."""
        return storage.join(self.remote, self.name) if self.remote else str(self.folder)


@dataclass(frozen=True, kw_only=True)
class Asked(Options):
    """The command line, checked: each model's requests, and what the data will decide unless a flag did."""

    asks: list[ModelAsk]
    folds: int | None  # --folds; None: not given (cross-validation where the validation split is small)
    refit: bool | None  # --refit / --no-refit; None: not given (on for small data, SMALL_TRAIN)


@dataclass(frozen=True, kw_only=True)
class Settings(Options):
    """The complete plan of a search, made once the data is known (``search.command.plan.plan``)."""

    plans: list[ModelPlan]  # one per model, in --model's order
    folds: int  # trials scored by k-fold cross-validation; 1: on the validation split
    refit: bool  # each winner trained again on train + validation images before it is bundled
    shape_note: str = ""  # what one process shape for every model costs (search.command.plan.one_shape), if anything
    asha_note: str = ""  # where early stopping is unlikely to pay (search.command.plan.asha_note), if anywhere


def per_model(text: str | None, flag: str, chosen: list[str], kind: type = int) -> dict[str, Any]:
    """``"5"`` -> every chosen model gets 5; ``"vit=20,cnn=3"`` -> those models get those values."""
    if not text:
        return {}
    out: dict[str, Any] = {}
    for part in text.split(","):
        name, sep, value = part.strip().rpartition("=")
        targets = [name.strip()] if sep else chosen
        if sep and name.strip() not in chosen:
            raise UsageError(f"{flag} {text!r}: {name.strip()!r} is not among the chosen models ({', '.join(chosen)})")
        try:
            number = kind(value)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise UsageError(f"{flag} {text!r}: {value!r} is not {what}; write N or model=N,model=N") from None
        positive(number, flag)
        out.update({target: number for target in targets})
    return out


def ask(args: argparse.Namespace) -> Asked:
    """Check every flag and turn the command line into ``Asked``, or raise ``UsageError``; no data is read."""
    try:
        external.load_all(args.models_from)  # before --model is read: it may name the user's own
    except external.SourceError as e:
        raise UsageError(str(e)) from None
    try:
        chosen = models.parse_models(args.model)
    except models.UnknownModelError as e:
        raise UsageError(f"--model: {e}") from None
    for value, flag in ((args.num_samples, "--num-samples"), (args.time_budget, "--time-budget"),
                        (args.epoch_budget, "--epoch-budget"),
                        (args.cpus, "--cpus"), (args.max_concurrent, "--max-concurrent")):
        positive(value, flag)
    try:
        data = DataOptions.from_args(args, SMOKE["limit"] if args.smoke else (None, None, None))
    except imagesets.DataError as e:
        raise UsageError(str(e)) from None
    max_epochs = per_model(args.max_epochs, "--max-epochs", chosen)
    grace = per_model(args.grace_period, "--grace-period", chosen)
    gpu_share = per_model(args.gpu_per_trial, "--gpu-per-trial", chosen, kind=float)
    cpu_share = per_model(args.cpu_per_trial, "--cpu-per-trial", chosen, kind=float)
    if gpu_share and not args.gpus:
        raise UsageError("--gpu-per-trial needs GPUs: add --gpus N (0 runs every trial on CPUs)")
    if args.no_pretrained and args.compare_scratch:
        raise UsageError("--no-pretrained and --compare-scratch contradict each other: --compare-scratch already "
                         "searches both; pass one of them")
    pretrained = (False,) if args.no_pretrained else (True, False) if args.compare_scratch else (True,)
    if args.reduction_factor <= 1:
        raise UsageError(f"--reduction-factor must be above 1, got {args.reduction_factor}")
    check_gpus(args.gpus, args.address)
    if args.folds is not None and args.folds < 1:
        raise UsageError(f"--folds must be 1 (the validation split) or more (k-fold cross-validation), got {args.folds}")
    for value, flag in ((args.retries, "--retries"), (args.repeats, "--repeats")):
        if value < 0:
            raise UsageError(f"{flag} must be 0 (none) or more, got {value}")
    pinned = pinned_settings(args.set, chosen, pretrained)
    cpus = args.cpus or os.cpu_count() or 1
    num_samples = args.num_samples or (SMOKE["num_samples"] if args.smoke else DEFAULT_SAMPLES)
    asks = []
    for name in chosen:
        spec = models.get(name)
        epochs = max_epochs.get(name) or (SMOKE["max_epochs"] if args.smoke else None)  # None: the model's own
        first_rung = grace.get(name) or (SMOKE["grace_period"] if args.smoke else None)
        if epochs and first_rung and first_rung > epochs:
            raise UsageError(f"--grace-period {first_rung} is longer than {name}'s budget of {epochs} epochs; "
                             f"lower it or raise --max-epochs")
        trial_cpus = cpu_share.get(name, spec.cpus)
        if trial_cpus > cpus and args.address is None:
            raise UsageError(f"{name} trials need {trial_cpus} CPUs but only {cpus} are available (--cpus)")
        trial_gpus = gpu_share.get(name, spec.gpus) if args.gpus else 0.0
        check_gpu_share(trial_gpus, name, args.gpus)
        asks.append(ModelAsk(name, num_samples, epochs, first_rung, trial_cpus, trial_gpus,
                             pretrained if spec.pretrained_weights is not None else (),
                             {**(spec.smoke_config if args.smoke else {}), **pinned[name]}))
    remote = args.storage_path if storage.is_uri(args.storage_path) else None
    local = Path("results" if remote else args.storage_path).expanduser().resolve()
    label = "-".join(chosen).replace(":", "_")  # timm:convnext_atto: no colon in a folder name (scp, Windows)
    name = args.name or f"{label}-{data.label}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"--name {name!r} must be a plain folder name")
    asked = Asked(
        models=chosen, asks=asks, gpus=args.gpus, cpus=cpus, data=data,
        storage=local, name=name, seed=args.seed, weights_dir=args.weights_dir, time_budget=args.time_budget,
        epoch_budget=args.epoch_budget, sampler=args.sampler, repeats=args.repeats,
        reduction_factor=args.reduction_factor, dashboard=not args.no_dashboard,
        amp=not args.no_amp, channels_last=not args.no_channels_last, verbose=args.verbose, resume=args.resume,
        retries=args.retries, address=args.address, dashboard_host=args.dashboard_host,
        dashboard_port=args.dashboard_port, remote=remote, max_concurrent=args.max_concurrent,
        reuse_processes=not args.fresh_processes, refit=args.refit, smoke=args.smoke,
        # --smoke caps the validation split for speed, not because the data is small: one split, unless asked
        folds=1 if args.smoke and args.folds is None else args.folds,
    )
    check_storage(asked)
    for each in asks:
        check_weights(each.name, each.pretrained, each.fixed, asked.weights_dir)
    return asked


def check_storage(settings: Options) -> None:
    """The results folder (and the storage URI) must be writable and must not hold an earlier experiment of that
    name (``storage.check_experiment_place``)."""
    try:
        storage.check_experiment_place(settings.storage, settings.folder, settings.remote, settings.tune_folder,
                                       settings.name, settings.resume)
    except storage.StorageError as e:
        raise UsageError(str(e)) from None
