"""The training loop, with no Ray in it: one epoch's training and evaluation, and one
configuration trained over its epochs (``prepare`` then ``fit``).

The functions take a model, data and an optimizer and return numbers, so the Tune trial, the
``trainables.train`` command, tests and benchmarks all call the same code.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import models
from models.config import TrainConfig, split_config
from models.task import CLASSIFICATION, Task
from trainables.augment import mix
from trainables.batches import eval_batch, iterate
from trainables.data import Split
from trainables.runtime import Runtime


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite: this configuration cannot recover."""


@dataclass
class EpochStats:
    loss: float
    samples: int
    seconds: float

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class EvalStats:
    loss: float
    acc: float
    f1: float  # macro F1 from scikit-learn
    predictions: np.ndarray
    rates: dict[str, float] = dataclasses.field(default_factory=dict)  # the task's, e.g. no_box_rate


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg``, over the parameters that train (frozen ones are left out).

    A model may split its parameters into groups with learning-rate multipliers (``param_groups()``,
    e.g. a pretrained backbone learning slower). Weight decay skips biases and norm scales (1-D
    tensors), which regularizing only slows down.
    """
    split = model.param_groups() if hasattr(model, "param_groups") else [(list(model.parameters()), 1.0)]
    groups = []
    for params, lr_mult in split:
        params = [p for p in params if p.requires_grad]
        groups += [{"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay, "lr": cfg.lr * lr_mult},
                   {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, "lr": cfg.lr * lr_mult}]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "sgd":
        # Nesterov's look-ahead needs momentum: momentum=0 is plain SGD.
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    if cfg.optimizer == "adam":
        # Adam's weight decay is L2 added to the gradient; AdamW decouples it (the better default).
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str, restarts: tuple[int, ...] = ()) -> float:
    """Multiplier of the base learning rate at ``step`` (per-batch schedules). With ``restarts`` (steps), the
    schedule runs as one cycle up to the first, another from there to the next, ..., the last to ``total_steps``:
    each cycle decays in full by its end (the warm-up, if any, is the first cycle's)."""
    start = max((r for r in restarts if r <= step), default=0)
    end = min((r for r in restarts if r > step), default=total_steps)
    step, total_steps, warmup_steps = step - start, end - start, warmup_steps if start == 0 else 0
    if schedule == "onecycle":
        # Linear up for the first 25% (or the warm-up if longer), then linear down to 0.
        peak = max(warmup_steps, total_steps // 4, 1)
        return (step + 1) / peak if step < peak else max(0.0, (total_steps - step) / max(total_steps - peak, 1))
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return 1.0


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule planned over ``cfg.epochs``, in cycles ending at ``cfg.restarts`` (ASHA's rungs, so
    that a rung judges trials at the end of a cycle, not in the middle of one) if the search gives them."""
    total = cfg.epochs * steps_per_epoch
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total // 2)
    restarts = tuple(e * steps_per_epoch for e in cfg.restart_epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, warmup, cfg.schedule, restarts))


def train_one_epoch(
    model: nn.Module,
    data: Split,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    cfg: TrainConfig,
    runtime: Runtime,
    generator: torch.Generator | None = None,
    task: Task = CLASSIFICATION,
) -> EpochStats:
    """One pass over ``data`` (shuffled, augmented by the policy ``cfg.augment``, mixed under "strong-mix");
    returns the mean of the task's training loss.

    Raises ``DivergedError`` as soon as the loss stops being finite.
    """
    model.train()
    total_loss = torch.zeros((), device=runtime.device)
    seen = 0
    start = time.perf_counter()
    norm = data.normalization
    batches = iterate(data, cfg.batch_size, norm.mean, norm.std, shuffle=True, augment=cfg.augment,
                      generator=generator, channels_last=runtime.channels_last, mirror=norm.mirror,
                      device=runtime.device)
    for step, (x, y) in enumerate(batches):
        mixed = None
        if cfg.augment == "strong-mix":
            x, other, lam = mix(x, y, generator)
            mixed = (other, lam)
        with runtime.autocast:
            loss = task.loss(model, x, y, cfg.label_smoothing, mixed)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.detach() * len(y)  # stays on the device: no sync per batch
        seen += len(y)
        if step % 50 == 0 and not torch.isfinite(loss):
            raise DivergedError(f"diverged: training loss became {loss.item()} at batch {step}")
    mean_loss = (total_loss / max(seen, 1)).item()
    if not math.isfinite(mean_loss):
        raise DivergedError(f"diverged: training loss became {mean_loss}")
    if runtime.device.type == "cuda":
        torch.cuda.synchronize(runtime.device)
    return EpochStats(mean_loss, seen, time.perf_counter() - start)


@torch.no_grad()
def evaluate(model: nn.Module, data: Split, runtime: Runtime, batch_size: int = 1024,
             task: Task = CLASSIFICATION) -> EvalStats:
    """Loss, accuracy and macro F1 (scikit-learn) of ``model`` on ``data``, without augmentation,
    plus the task's rates (per image). The loss is the cross-entropy of the task's class scores."""
    model.eval()
    total_loss = torch.zeros((), device=runtime.device)
    counts = {name: torch.zeros((), device=runtime.device) for name in task.rates}
    predictions = []
    norm = data.normalization
    for x, y in iterate(data, eval_batch(data.images, min(batch_size, task.eval_batch_size)), norm.mean, norm.std,
                        channels_last=runtime.channels_last):
        with runtime.autocast:
            out = task.predict(model, x)
        total_loss += F.cross_entropy(out.logits.float(), y, reduction="sum")
        predictions.append(out.classes)
        for name in task.rates:
            counts[name] += out.counts[name]
    predicted = torch.cat(predictions).cpu().numpy()
    labels = data.labels.cpu().numpy()
    return EvalStats(
        loss=(total_loss / len(labels)).item(),
        acc=float((predicted == labels).mean()),
        f1=float(macro_f1(labels, predicted)),
        predictions=predicted,
        rates={name: (count / len(labels)).item() for name, count in counts.items()},
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class Prepared:
    """A model ready to train, with everything built from one flat config."""

    model: nn.Module
    train_cfg: TrainConfig
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    params: int
    task: Task = CLASSIFICATION  # how the loop gets losses and predictions (from the registry entry)


def prepare(model_name: str, config: Mapping[str, Any], train: Split, runtime: Runtime,
            shape: models.DataShape = models.DataShape(), weights_dir: str | None = None) -> Prepared:
    """Validate ``config`` for ``model_name`` and build model, optimizer and schedule on the device,
    for data of ``shape``."""
    spec = models.get(model_name)
    train_cfg = split_config(config, spec.config_cls, model_name)
    ctx = models.BuildContext(shape, train.normalization.mean, train.normalization.std, weights_dir)
    model = runtime.place(spec.build(config, ctx))
    optimizer = make_optimizer(model, train_cfg)
    steps_per_epoch = -(-len(train.subset(train_cfg.max_train_images or None)) // train_cfg.batch_size)
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
    train = train.subset(prepared.train_cfg.max_train_images or None)
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
            # The accuracy's standard error on this validation split (binomial): what one split can tell apart.
            "val_acc_se": math.sqrt(scores.acc * (1 - scores.acc) / max(len(val), 1)),
            "folds": 1,
            "train_images": len(train),
            **scores.rates,
        }


def fit_folds(
    prepared: list[Prepared],
    pairs: list[tuple[Split, Split]],
    runtime: Runtime,
    seed: int = 0,
    start_epoch: int = 0,
    spent: tuple[float, float] = (0.0, 0.0),
) -> Iterator[dict[str, float]]:
    """``fit`` of one model per (train, validation) pair, in step: each epoch trains every fold's model once,
    then yields the folds' mean of every metric ``fit`` yields, with ``val_acc_se`` the standard error of the
    mean validation accuracy over the folds and ``folds`` their count. So ASHA's rungs and the study compare
    trials on the fold mean at equal epochs, and a stopped trial stops on every fold. One pair is ``fit``."""
    if len(pairs) == 1:
        yield from fit(prepared[0], *pairs[0], runtime, seed=seed, start_epoch=start_epoch, spent=spent)
        return
    started = time.perf_counter() - spent[1]
    runs = [fit(model, train, val, runtime, seed=seed + fold, start_epoch=start_epoch)
            for fold, (model, (train, val)) in enumerate(zip(prepared, pairs))]
    for per_fold in zip(*runs):
        yield fold_mean(per_fold, spent[0], time.perf_counter() - started)


def fold_mean(per_fold: tuple[dict[str, float], ...], train_spent: float, elapsed: float) -> dict[str, float]:
    """One epoch's metrics over the folds: means, except the seconds (summed: every fold's training is the
    trial's) and ``val_acc_se`` (the sample standard deviation of the folds' accuracies over sqrt(k))."""
    k = len(per_fold)
    mean = {key: float(np.mean([m[key] for m in per_fold])) for key in per_fold[0]}
    seconds = [m["epoch_time_s"] for m in per_fold]
    samples = sum(m["samples_per_s"] * m["epoch_time_s"] for m in per_fold)
    return {**mean, "epoch": per_fold[0]["epoch"], "params": per_fold[0]["params"], "folds": k,
            "train_images": round(mean["train_images"]), "epoch_time_s": sum(seconds),
            "train_time_s": train_spent + sum(m["train_time_s"] for m in per_fold), "elapsed_s": elapsed,
            "samples_per_s": samples / sum(seconds) if sum(seconds) > 0 else float("nan"),
            "val_acc_se": float(np.std([m["val_acc"] for m in per_fold], ddof=1) / math.sqrt(k))}


def train_only(prepared: Prepared, train: Split, runtime: Runtime, seed: int = 0) -> float:
    """Train for ``train_cfg.epochs`` epochs without evaluating (a refit on the training and validation
    images together leaves nothing to validate on, and its epochs were chosen by the search); returns the
    seconds spent in training passes. The same epochs as ``fit``'s, with the same seeding."""
    generator = torch.Generator().manual_seed(seed)
    train = train.subset(prepared.train_cfg.max_train_images or None)
    return sum(train_one_epoch(prepared.model, train, prepared.optimizer, prepared.scheduler, prepared.train_cfg,
                               runtime, generator, prepared.task).seconds for _ in range(prepared.train_cfg.epochs))


def macro_f1(labels: Any, predicted: Any) -> float:
    """scikit-learn's macro F1, imported on first use: a worker process starts training a second
    sooner, and scikit-learn loads while the first epoch's batches already ran."""
    from sklearn.metrics import f1_score

    return float(f1_score(labels, predicted, average="macro"))
