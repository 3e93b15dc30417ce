"""The one Ray Tune trainable for every model: it wires ``trainables.fit`` to ``tune.report``."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import models
from trainables.data import Split
from trainables.fit import Prepared, fit, prepare
from trainables.loop import Runtime
from trainables.runtime import describe, set_threads

CHECKPOINT_FILE = "model.pt"


@dataclass
class TrialData:
    """What every trial shares, put in Ray's object store once by ``tune.with_parameters``.

    Only the train and validation splits travel: trials never see the test split.
    """

    train: Split
    val: Split
    mean: float
    std: float
    num_classes: int
    seed: int
    amp: bool = True
    channels_last: bool = True
    weights_dir: str | None = None


def trial_device() -> torch.device:
    """The GPU Ray assigned to this trial (it sets CUDA_VISIBLE_DEVICES), else the CPU."""
    import ray

    return torch.device("cuda:0") if ray.get_gpu_ids() and torch.cuda.is_available() else torch.device("cpu")


def node_name() -> str:
    """The Ray node a trial runs on, as ``hostname/node-id-prefix``: two nodes on one host differ."""
    import socket

    import ray

    return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"


def save_checkpoint(prepared: Prepared, metrics: dict[str, Any], folder: Path) -> None:
    """Weights for the finalists' test, plus what a resumed trial needs to go on from this epoch."""
    torch.save({"model": prepared.model.state_dict(), "epoch": metrics["epoch"],
                "optimizer": prepared.optimizer.state_dict(), "scheduler": prepared.scheduler.state_dict(),
                "val_acc": metrics["val_acc"], "spent": (metrics["train_time_s"], metrics["elapsed_s"])},
               folder / CHECKPOINT_FILE)


def resume_state(prepared: Prepared, folder: str | Path) -> tuple[int, float, tuple[float, float]]:
    """Load a checkpoint into model, optimizer and schedule: (epoch, best val_acc, seconds spent)."""
    state = torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    prepared.model.load_state_dict(state["model"])
    prepared.optimizer.load_state_dict(state["optimizer"])
    prepared.scheduler.load_state_dict(state["scheduler"])
    return int(state["epoch"]), float(state["val_acc"]), tuple(state["spent"])


def load_weights(model: torch.nn.Module, folder: str | Path) -> int:
    """Load a checkpoint written by this trainable into ``model``; returns the epoch it was taken at."""
    state = torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    return int(state["epoch"])


def train_trial(config: dict[str, Any], data: TrialData) -> None:
    """Train one configuration, reporting every epoch; checkpoint only when ``val_acc`` improves.

    Tune keeps a single checkpoint per trial (``CheckpointConfig(num_to_keep=1)`` scored on
    ``val_acc``), so the one on disk is always the trial's best epoch. A trial restarted after a
    crash (``--resume``) goes on from that checkpoint: the epochs after it are trained again.
    """
    from ray import tune

    started_at = time.time()  # unix time: lets analysis place every epoch on the search's clock
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    set_threads(cpus)
    device = trial_device()
    runtime = Runtime(device, data.mean, data.std, amp=data.amp, channels_last=data.channels_last)
    runtime = runtime.for_model(models.get(config["model"]))
    train, val = data.train.to(device), data.val.to(device)
    torch.manual_seed(data.seed)
    prepared = prepare(config["model"], config, train, runtime, data.num_classes, data.weights_dir)
    where, node = describe(device), node_name()
    start_epoch, best, spent = 0, float("-inf"), (0.0, 0.0)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start_epoch, best, spent = resume_state(prepared, folder)
        started_at -= spent[1]
    for metrics in fit(prepared, train, val, runtime, seed=data.seed, start_epoch=start_epoch, spent=spent):
        metrics["device"], metrics["node"] = where, node
        metrics["precision"] = runtime.precision
        metrics["started_at"], metrics["reported_at"] = started_at, time.time()
        if metrics["val_acc"] > best:
            best = metrics["val_acc"]
            with tempfile.TemporaryDirectory() as folder:
                save_checkpoint(prepared, metrics, Path(folder))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        else:
            tune.report(metrics)
