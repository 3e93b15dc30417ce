"""Search every chosen architecture's hyperparameters with Ray Tune, Optuna TPE and ASHA.

    python -m search.run --model cnn --gpus 0 --num-samples 8 --max-epochs 3
    python -m search.run --model all --gpus 4 --smoke

The flags are checked, the data carved and the search planned before Ray starts (``search.command``); then Ray
starts while the splits load, the search runs (``search.engine``), each model's winner is finished as its study
ends (``search.finish``), and results go to <storage-path>/<name>/ as Parquet files with a leaderboard printed.
"""

from __future__ import annotations

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
from search.command.cluster import prepare_join
from search.command.parser import build_parser
from search.command.plan import plan
from search.command.ports import check_chosen_port
from search.command.settings import SMALL_TRAIN, UsageError, ask
from search.engine.progress import mark
from search.resume.command import absolute_dataset, resumed_args

EXIT_BAD_INPUT = 2


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
            f"{'read from the cache' if decoded.from_cache else 'decoded'} in {decoded.prepare_s:.1f} s ({decoded.cache})"
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
    search's plan for it (``search.command.plan.plan``), what they are printed; ``UsageError``, ``DataError`` or
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

    from search.engine.session import ClusterJoinError, start_ray  # not torch: the loading thread imports it

    try:
        start_ray(settings)
        mark("ray started")
        data = loading.result()
        if settings.resume:
            from search.resume.checks import check_resume

            check_resume(settings, data)
        from search.engine.driver import run_search
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
