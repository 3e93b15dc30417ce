"""Training one configuration of one model for its epochs: the part shared by the Tune trainable
and the ``trainables.train`` command. Yields the per-epoch metrics that the search reports."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import models
from models.task import CLASSIFICATION, Task
from trainables.config import TrainConfig, split_config
from trainables.data import Split
from trainables.loop import Runtime, count_parameters, evaluate, make_optimizer, make_scheduler, train_one_epoch


@dataclass
class Prepared:
    """A model ready to train, with everything built from one flat config."""

    model: nn.Module
    train_cfg: TrainConfig
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    params: int
    task: Task = CLASSIFICATION  # how the loop gets losses and predictions (from the registry entry)


def prepare(model_name: str, config: Mapping[str, Any], train: Split, runtime: Runtime, num_classes: int = 10,
            weights_dir: str | None = None) -> Prepared:
    """Validate ``config`` for ``model_name`` and build model, optimizer and schedule on the device."""
    spec = models.get(model_name)
    train_cfg = split_config(config, spec.config_cls, model_name)
    ctx = models.BuildContext(num_classes, runtime.mean, runtime.std, weights_dir)
    model = runtime.place(spec.build(config, ctx))
    optimizer = make_optimizer(model, train_cfg)
    steps_per_epoch = -(-len(train) // train_cfg.batch_size)
    scheduler = make_scheduler(optimizer, train_cfg, steps_per_epoch)
    return Prepared(model, train_cfg, optimizer, scheduler, count_parameters(model), spec.task)


def fit(
    prepared: Prepared,
    train: Split,
    val: Split,
    runtime: Runtime,
    seed: int = 0,
    start_epoch: int = 0,
    spent: tuple[float, float] = (0.0, 0.0),
) -> Iterator[dict[str, float]]:
    """Train for ``train_cfg.epochs`` epochs, yielding after each one the metrics the search reports:
    ``epoch, train_loss, val_loss, val_acc, val_f1, epoch_time_s, train_time_s, elapsed_s,
    samples_per_s, params``, and the task's rates (``no_box_rate`` for a detector).
    ``train_time_s`` counts training passes only; ``elapsed_s`` is wall clock of the trial,
    evaluation included. A resumed trial passes the epoch it resumes after and
    the (train, elapsed) seconds already spent, so both keep counting from there.
    """
    generator = torch.Generator().manual_seed(seed + start_epoch)
    started = time.perf_counter() - spent[1]
    train_time = spent[0]
    for epoch in range(start_epoch + 1, prepared.train_cfg.epochs + 1):
        stats = train_one_epoch(prepared.model, train, prepared.optimizer, prepared.scheduler,
                                prepared.train_cfg, runtime, generator, prepared.task)
        train_time += stats.seconds
        scores = evaluate(prepared.model, val, runtime, task=prepared.task)
        yield {
            "epoch": epoch,
            "train_loss": stats.loss,
            "val_loss": scores.loss,
            "val_acc": scores.acc,
            "val_f1": scores.f1,
            "epoch_time_s": stats.seconds,
            "train_time_s": train_time,
            "elapsed_s": time.perf_counter() - started,
            "samples_per_s": stats.samples_per_s,
            "params": prepared.params,
            **scores.rates,
        }
