"""Search every chosen architecture's hyperparameters with Ray Tune, Optuna TPE and ASHA.

    python -m search.run --model cnn --gpus 0 --num-samples 8 --max-epochs 3
    python -m search.run --model all --gpus 4 --smoke

Everything is checked before Ray starts; results go to <storage-path>/<name>/ as Parquet files
(trials, epochs, finalists) and a leaderboard is printed at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import imagesets
import models
from imagesets.folds import FoldsError
from imagesets.housekeeping import describe_usage
from imagesets.options import add_data_arguments
from search.cluster import prepare_join
from search.resume.command import absolute_dataset, resumed_args
from search.plans import SAMPLERS
from search.ports import check_chosen_port
from search.progress import mark
from search.data_plan import plan
from search.settings import SMALL_TRAIN, SMOKE, UsageError, ask

EXIT_BAD_INPUT = 2


def pretrained_models() -> list[str]:
    """The registered models that start from pretrained weights."""
    return [name for name in models.names() if models.get(name).pretrained_weights is not None]


def smoke_help() -> str:
    """What --smoke does, with the settings it pins for each model, read from the registry."""
    train, val, test = SMOKE["limit"]
    pins = "; ".join(f"{name} " + ", ".join(f"{k}={v}" for k, v in models.get(name).smoke_config.items())
                     for name in models.names() if models.get(name).smoke_config)
    return (f"the whole path (training, early stopping, checkpoints, finalists, exports, report) on tiny data in "
            f"minutes, not for accuracy: {train:,}/{val:,}/{test:,} train/val/test images, {SMOKE['num_samples']} "
            f"trials a model, {SMOKE['max_epochs']} epochs; pinned per model: {pins}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m search.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="cnn", help=f"a name, a comma list, or 'all' ({', '.join(models.names())})")
    p.add_argument("--gpus", type=int, default=0, help="GPUs to use; 0 runs on CPUs")
    p.add_argument("--cpus", type=int, default=None, help="CPUs for trials (default: all cores)")
    p.add_argument("--gpu-per-trial", default=None, metavar="F|MODEL=F,...",
                   help="share of a GPU each trial takes, for every model or per model, e.g. cnn=0.5,vgg16=1 "
                        "(default: each model's own: cnn 0.25, vit 0.5, vgg16 1 ...)")
    p.add_argument("--cpu-per-trial", default=None, metavar="N|MODEL=N,...",
                   help="CPUs each trial takes, for every model or per model (default: each model's own, 1)")
    p.add_argument("--address", default=None, metavar="auto|HOST:PORT",
                   help="run on an existing Ray cluster instead of starting Ray here; --storage-path must then "
                        "be reachable by every node (a shared filesystem path)")
    p.add_argument("--max-concurrent", type=int, default=None, metavar="N",
                   help="run at most N trials at once (default: as many as the CPUs/GPUs hold, per model)")
    p.add_argument("--fresh-processes", action="store_true",
                   help="start a new process for every trial instead of reusing a finished trial's (slower: "
                        "each pays the torch import, CUDA context and data copy again)")
    p.add_argument("--num-samples", type=int, default=None, help="trials per model (default 8; 2 with --smoke)")
    p.add_argument("--max-epochs", default=None, metavar="N|MODEL=N,...",
                   help="ASHA's epoch budget: N for every model, or per model, e.g. vit=20,cnn=3 "
                        "(default: each model's own; 2 with --smoke)")
    p.add_argument("--grace-period", default=None, metavar="N|MODEL=N,...",
                   help="ASHA's first rung in epochs, for every model or per model (default: each model's own)")
    p.add_argument("--reduction-factor", type=float, default=2.0, help="ASHA keeps 1/this of trials per rung")
    p.add_argument("--sampler", default="tpe", choices=SAMPLERS,
                   help="how each study picks the next configuration: Optuna's TPE, or random search (a baseline; "
                        "with --grace-period equal to --max-epochs nothing is stopped early either)")
    add_data_arguments(p)
    p.add_argument("--storage-path", default="results",
                   help="where <name>/ with the results is written: a folder (on a cluster, one every node "
                        "reaches) or a URI Ray Tune accepts (s3://, gs://, file://; exports are also kept in ./results)")
    p.add_argument("--name", default=None, help="experiment name (default: models, dataset and time)")
    p.add_argument("--seed", type=int, default=0, help="seeds Optuna's samplers and the trials")
    p.add_argument("--time-budget", type=float, default=None, help="seconds; running trials stop when it is spent")
    p.add_argument("--epoch-budget", type=int, default=None, metavar="N",
                   help="training epochs the whole search may spend, counted over every trial of every model; "
                        "when it is spent, running trials stop and no new one starts (searches compared at an "
                        "equal budget: benchmarks/search_quality.py)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="pin a setting in every trial of the models that have it (e.g. --set batch_size=256); "
                        "the rest is searched")
    p.add_argument("--repeats", type=int, default=0, metavar="K",
                   help="after the search, train each model's winning configuration K more times at other seeds "
                        "(full budget, same machinery) and test each run: repeats.parquet, and the mean, spread "
                        "and 95%% interval of the winner's test accuracy and F1 in finalists.parquet")
    p.add_argument("--folds", type=int, default=None, metavar="K",
                   help="score each trial by stratified K-fold cross-validation over the training and validation "
                        "images (the fold mean is what the search maximizes and ASHA judges; every fold trains, so "
                        "a trial costs K times as much); 1: on the validation split (default: 5 where the validation "
                        "split has fewer than 500 images, one of which moves accuracy by over 0.2 points, else 1)")
    p.add_argument("--refit", action=argparse.BooleanOptionalAction, default=None,
                   help="after the search, train each winner's configuration again from scratch on the training and "
                        "validation images, for the epochs at which its trial peaked, test it once and bundle it "
                        "(models/<model>/); finalists.parquet keeps both test figures (default: on for a data set "
                        "of fewer than 10,000 training images, whose validation images are too many to leave out; "
                        "else off, bundling the trial's best checkpoint)")
    p.add_argument("--retries", type=int, default=0, help="times a failed trial is restarted (from its checkpoint)")
    p.add_argument("--resume", action="store_true",
                   help="continue the experiment --name in --storage-path after a crash or kill, with its "
                        "original settings: finished trials are kept, running ones go on from their checkpoint; "
                        "with --num-samples N, grow a search (finished or not) to N trials per model, each "
                        "model's study learning from the earlier ones (a changed data set or space is refused)")
    p.add_argument("--smoke", action="store_true", help=smoke_help())
    p.add_argument("--weights-dir", default=None,
                   help="folder holding pretrained weight files under torchvision's names, searched before "
                        "torchvision's cache ($TORCH_HOME/hub/checkpoints); on a cluster, a path every node has")
    p.add_argument("--no-pretrained", action="store_true",
                   help=f"train the models that start from pretrained weights ({', '.join(pretrained_models())}) "
                        "from random initialization (pretrained=False)")
    p.add_argument("--compare-scratch", action="store_true",
                   help="search pretrained=True/False as a hyperparameter of fine-tunable models")
    p.add_argument("--no-dashboard", action="store_true", help="do not start the Ray dashboard")
    p.add_argument("--dashboard-host", default="127.0.0.1",
                   help="interface the dashboard listens on; 0.0.0.0 exposes it to the network (token "
                        "authentication stays on)")
    p.add_argument("--dashboard-port", type=int, default=None,
                   help="the dashboard's port (default: 8265, or the next free one when another search holds it)")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast (by default on where the GPU or CPU has fast bf16)")
    p.add_argument("--no-channels-last", action="store_true", help="keep convolutions in NCHW layout")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Tune's output: 0 quiet, 1 table, 2 all")
    return p


def process_start_time() -> float:
    """Unix time this process started (Linux's /proc), so the efficiency figures count the
    interpreter's start and the imports too; elsewhere, now."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # since boot
        uptime = float(Path("/proc/uptime").read_text().split()[0])  # 10 ms resolution, unlike btime's 1 s
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()


def describe_data(carved) -> str:
    """Two lines: what the search will train on and where its decoded images came from; what the cache holds."""
    decoded, sizes = carved.decoded, carved.sizes
    shown = " / ".join(f"{sizes[split]:,} {split}" for split in ("train", "val", "test"))
    skipped = f"; {decoded.skipped} file(s) that are not images skipped" if decoded.skipped else ""
    return (f"Data: {decoded.name} ({decoded.channels}x{decoded.image_size}x{decoded.image_size}, "
            f"{len(decoded.class_names)} classes): {shown} images"
            f"{' (test carved from the training images)' if carved.test_carved else ''}; "
            f"{'read from the cache' if decoded.from_cache else 'decoded'} in {decoded.seconds:.1f} s ({decoded.cache})"
            f"{skipped}" + ("; larger than the memory available: trials read it from disk in blocks"
                            if carved.streamed else "") + f"\n      {describe_usage(Path(decoded.cache).parent)}")


def check_folds(settings, carved) -> None:
    """Cross-validation needs every class in every fold, and the pool in memory (each fold's splits are copies)."""
    import numpy as np

    from imagesets.folds import fold_ids

    if settings.folds <= 1:
        return
    if carved.streamed:
        raise UsageError(f"--folds {settings.folds}: the training images are larger than memory, and cross-validation "
                         "copies them into each fold; use --folds 1 (one validation split) or --train-size")
    labels = np.concatenate([carved.labels("train"), carved.labels("val")])
    fold_ids(labels, settings.folds, settings.seed)  # a class with fewer images than folds: FoldsError


def describe_selection(settings, carved, refit_asked: bool | None) -> str:
    """How trials are scored, how long each model trains, and whether winners are refit, as decided for this data."""
    val = carved.sizes["val"]
    pool = carved.sizes["train"] + val
    if settings.folds > 1:
        lines = [f"Selection: {settings.folds}-fold stratified cross-validation over the {pool:,} training + "
                 f"validation images (seed {settings.seed}; {val:,} validation images alone would move "
                 f"accuracy by {100 / max(val, 1):.2f} points an image)"]
    else:
        lines = [f"Selection: on the {val:,} validation images"]
    lines.append("Budgets: " + ", ".join(f"{p.name} {p.max_epochs} epochs (first rung {p.grace_period})"
                                        for p in settings.plans))
    if settings.refit and refit_asked is None:
        lines.append(f"Small data set ({carved.full_sizes['train']:,} training images, under {SMALL_TRAIN:,})"
                     + (" and cross-validation" if settings.folds > 1 else "") + ": each winner is refit on training "
                     "+ validation images before it is tested and bundled"
                     + ("" if settings.folds > 1 else " (--no-refit: keep the trial's own checkpoint)"))
    return "\n".join(lines)


def planned(asked, train_size: int | None):
    """The data ``asked`` names, decoded (or read from the cache) and carved into splits, torch-free, and the
    search's plan for it (``search.data_plan.plan``), what they are printed; ``UsageError``, ``DataError`` or
    ``FoldsError`` where the data cannot serve the flags. Returns (the settings, the carved data)."""
    from imagesets.carving import carve_data

    carved = carve_data(asked.data)
    print(describe_data(carved))
    decoded, sizes = carved.decoded, carved.sizes
    shape = models.DataShape(decoded.channels, decoded.image_size, len(decoded.class_names), sizes["train"])
    settings = plan(asked, shape, sizes["val"], carved.full_sizes["train"])
    check_folds(settings, carved)
    print(describe_selection(settings, carved, asked.refit))
    if train_size and carved.full_sizes["train"] < train_size:
        raise UsageError(f"--train-size {train_size}: only {carved.full_sizes['train']} training images remain "
                         f"after the {carved.full_sizes['val']} validation images; ask for fewer")
    return settings, carved


class Loading(threading.Thread):
    """The carved splits as tensors, beside Ray's start: torch's import (seconds on a small machine) and the split
    files' writing or mapping overlap Ray's processes starting. ``result()`` gives the ``Dataset`` or raises what
    loading raised."""

    def __init__(self, carved) -> None:
        super().__init__(name="data", daemon=True)  # a refusal from Ray's side must not wait for the splits
        self.carved, self.data, self.error = carved, None, None
        self.start()

    def run(self) -> None:
        try:
            from trainables.data import dataset_from

            self.data = dataset_from(self.carved)
            mark("data loaded")
        except BaseException as e:  # handed to the main thread, which reports it
            self.error = e

    def result(self):
        self.join()
        if self.error is not None:
            raise self.error
        return self.data


def main(argv: Sequence[str] | None = None) -> int:
    started_at = process_start_time()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.resume:
            args, argv = resumed_args(args, build_parser())
        asked = ask(args)
        check_chosen_port(asked)
        line = prepare_join(asked.address)  # before Ray loads: it reads its auth mode once
        if line:
            print(line)
        named = argv if "--name" in argv else [*argv, "--name", asked.name]  # a generated name is kept
        named = absolute_dataset(named)  # --resume finds a folder from any working directory
        asked = dataclasses.replace(asked, argv=tuple(named), started_at=started_at)
        settings, carved = planned(asked, args.train_size)  # every refusal the data can give: before Ray
    except (UsageError, imagesets.DataError, FoldsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    mark("data carved")
    loading = Loading(carved)
    import ray

    from search.ray_session import ClusterJoinError, start_ray  # not torch: the loading thread imports it

    try:
        start_ray(settings)
        mark("ray started")
        data = loading.result()
        if settings.resume:
            from search.resume.checks import check_resume

            check_resume(settings, data)
        from search.driver import run_search
    except (UsageError, imagesets.DataError, ClusterJoinError) as e:
        ray.shutdown()
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BaseException:
        ray.shutdown()
        raise
    return run_search(settings, data)


if __name__ == "__main__":
    sys.exit(main())
