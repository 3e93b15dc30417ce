"""The one Ray Tune trainable for every model: it wires ``trainables.loop`` to ``tune.report``.

Tune reuses a trial's process for the next trial of the same resource shape (``reuse_actors``), so
this module keeps what is worth keeping between trials (the splits already on the device) and
makes sure nothing else survives one (seeds, the model, its optimizer, their GPU memory).
"""

from __future__ import annotations

import gc
import hashlib
import os
import random
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import models
from trainables.data import Split, fold_pairs
from trainables.loop import Prepared, fit_folds, prepare
from trainables.runtime import Runtime, describe, set_threads

CHECKPOINT_FILE = "model.pt"


@dataclass
class TrialData:
    """What every trial shares, put in Ray's object store once by ``tune.with_parameters``.

    Only the train and validation splits travel: trials never see the test split. With ``folds`` above 1
    (a small data set), a trial is scored by stratified cross-validation over both (``fold_pairs``, folds fixed
    by ``fold_seed``) instead of on the validation split.
    """

    train: Split
    val: Split
    shape: models.DataShape
    seed: int
    amp: bool = True
    channels_last: bool = True
    weights_dir: str | None = None
    folds: int = 1
    fold_seed: int = 0
    key: str = field(default="")  # the splits' identity: device copies are cached under it

    def __post_init__(self) -> None:
        if not self.key:
            self.key = fingerprint(self.train, self.val)


def fingerprint(*splits: Split) -> str:
    """A short key of the splits: equal data, equal key. A split carved into the cache is named by its file
    (whose name is the hash of the rows it holds) and length; one in memory by a hash of its bytes, read in
    place (about 0.1 s for MNIST), never copied."""
    digest = hashlib.blake2b(digest_size=12)
    for split in splits:
        if split.file is not None:
            digest.update(f"{split.file}:{len(split)}".encode())
        else:
            digest.update(memoryview(np.ascontiguousarray(split.images.numpy())).cast("B"))
        digest.update(memoryview(np.ascontiguousarray(split.labels.numpy())).cast("B"))
    return digest.hexdigest()


class DeviceData:
    """The train and validation splits on a device, kept for the process's next trials.

    Copying MNIST to a GPU and allocating it there is part of what a new trial paid before its first
    batch; a reused process pays it once per data set. A different data set (key) or device frees
    the previous copy first, so at most one copy is ever held.
    """

    _held: tuple[tuple[str, str], Split, Split] | None = None
    _folds: tuple[tuple[str, str, int, int], list[tuple[Split, Split]]] | None = None

    @classmethod
    def get(cls, data: TrialData, device: torch.device) -> tuple[Split, Split]:
        wanted = (data.key, str(device))
        if cls._held is None or cls._held[0] != wanted:
            cls.clear()
            # A training split larger than memory stays a memory map on the host (its batches move one by one).
            train = data.train if data.train.streamed else data.train.to(device)
            cls._held = (wanted, train, data.val.to(device))
        return cls._held[1], cls._held[2]

    @classmethod
    def pairs(cls, data: TrialData, device: torch.device) -> list[tuple[Split, Split]]:
        """What a trial trains and scores on: the (train, validation) splits, or one such pair per fold."""
        train, val = cls.get(data, device)
        if data.folds <= 1:
            return [(train, val)]
        wanted = (data.key, str(device), data.folds, data.fold_seed)
        if cls._folds is None or cls._folds[0] != wanted:
            cls._folds = (wanted, fold_pairs(train, val, data.folds, data.fold_seed))
        return cls._folds[1]

    @classmethod
    def clear(cls) -> None:
        cls._held = cls._folds = None
        release_memory()


def release_memory() -> None:
    """Collect what the last trial left (reference cycles included) and hand its cached GPU blocks
    back, so the next trial in this process starts from the memory a fresh one would see."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def seed_everything(seed: int) -> None:
    """Every random generator a trial may draw from, reset: a trial's numbers must not depend on
    what ran before it in the same process."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # CPU and every CUDA device


_TRIALS_RUN = 0  # trials started in this process: 1 for a fresh process, more for a reused one


def trial_device() -> torch.device:
    """The GPU Ray assigned to this trial (it sets CUDA_VISIBLE_DEVICES), else the CPU."""
    import ray

    return torch.device("cuda:0") if ray.get_gpu_ids() and torch.cuda.is_available() else torch.device("cpu")


def node_name() -> str:
    """The Ray node a trial runs on, as ``hostname/node-id-prefix``: two nodes on one host differ."""
    import ray

    return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"


def _state(prepared: Prepared) -> dict[str, Any]:
    return {"model": prepared.model.state_dict(), "optimizer": prepared.optimizer.state_dict(),
            "scheduler": prepared.scheduler.state_dict()}


def _load(prepared: Prepared, state: dict[str, Any]) -> None:
    prepared.model.load_state_dict(state["model"])
    prepared.optimizer.load_state_dict(state["optimizer"])
    prepared.scheduler.load_state_dict(state["scheduler"])


def save_checkpoint(prepared: Prepared | list[Prepared], metrics: dict[str, Any], folder: Path) -> None:
    """Weights for the finalists' test, plus what a resumed trial needs to go on from this epoch. Under
    cross-validation (a list, one per fold) the first fold's model is the one tested; every fold is kept."""
    first, *others = prepared if isinstance(prepared, list) else [prepared]
    torch.save({**_state(first), "other_folds": [_state(p) for p in others], "epoch": metrics["epoch"],
                "val_acc": metrics["val_acc"], "spent": (metrics["train_time_s"], metrics["elapsed_s"])},
               folder / CHECKPOINT_FILE)


def resume_state(prepared: Prepared | list[Prepared], folder: str | Path) -> tuple[int, float, tuple[float, float]]:
    """Load a checkpoint into model, optimizer and schedule (each fold's): (epoch, best val_acc, seconds spent)."""
    state = torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    first, *others = prepared if isinstance(prepared, list) else [prepared]
    _load(first, state)
    saved = state.get("other_folds", [])
    if len(saved) != len(others):
        raise ValueError(f"the checkpoint holds {len(saved) + 1} fold(s), the trial {len(others) + 1}")
    for fold, fold_state in zip(others, saved):
        _load(fold, fold_state)
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
    Each report also says which process ran the trial, how many trials that process had started,
    and when training began, from which the search's efficiency is computed.
    """
    global _TRIALS_RUN
    began = time.time()  # unix time: lets analysis place every epoch on the search's clock
    _TRIALS_RUN += 1
    # The previous trial's objects are unreachable only once its thread is gone, which is now (when
    # Tune stops a trial, the SystemExit it raises in tune.report keeps the trial's frames alive).
    release_memory()
    if _TRIALS_RUN == 1:
        # What the process imported stays for good: left out of later collections, a collection
        # then scans only what trials created (0.2 s a trial less with torch and Ray loaded).
        gc.freeze()
    prepared, runtime, pairs = _setup(config, data)
    start, best, spent = _resume(prepared) or (0, float("-inf"), (0.0, 0.0))
    # started_at: when the trial would have started had it never been interrupted (elapsed_s
    # counts from there); train_started_at: when this process began training it.
    facts = dict(device=describe(runtime.device), node=node_name(), precision=runtime.precision,
                 process=f"{socket.gethostname()}:{os.getpid()}", trial_in_process=_TRIALS_RUN,
                 started_at=began - spent[1], setup_s=time.time() - began, train_started_at=time.time())
    seed = prepared[0].train_cfg.seed
    for metrics in fit_folds(prepared, pairs, runtime, seed=seed, start_epoch=start, spent=spent):
        best = _report({**metrics, **facts, "reported_at": time.time()}, prepared, best)


def _setup(config: dict[str, Any], data: TrialData):
    """Threads, seeds, device, the splits there (cached in the process) and the model ready to train: one,
    or one per fold (each on its own fold's training images)."""
    from ray import tune

    set_threads(tune.get_context().get_trial_resources().required_resources.get("CPU", 1))
    device = trial_device()
    runtime = Runtime(device, amp=data.amp, channels_last=data.channels_last)
    runtime = runtime.for_model(models.get(config["model"]))
    pairs = DeviceData.pairs(data, device)
    # The trial's own seed (the search's, or a repeat's), set before the models are built: it initializes them.
    config = {"seed": data.seed, **config}
    seed_everything(int(config["seed"]))
    prepared = [prepare(config["model"], config, train, runtime, data.shape, data.weights_dir) for train, _ in pairs]
    return prepared, runtime, pairs


def _resume(prepared: list[Prepared]) -> tuple[int, float, tuple[float, float]] | None:
    """The trial's checkpoint loaded into ``prepared`` when Tune restarts it (``--resume``, retries)."""
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return resume_state(prepared, folder)


def _report(metrics: dict[str, Any], prepared: list[Prepared], best: float) -> float:
    """Report one epoch to Tune, with a checkpoint when ``val_acc`` improved; returns the best."""
    from ray import tune

    if metrics["val_acc"] <= best:
        tune.report(metrics)
        return best
    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(prepared, metrics, Path(folder))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
    return metrics["val_acc"]
