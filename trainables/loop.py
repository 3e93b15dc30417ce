"""Small training and evaluation functions with no Ray in them.

They take a model, data and an optimizer and return numbers, so the Tune trainable, the
``trainables.train`` command, tests and benchmarks all call the same code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from torch import nn

from models.task import CLASSIFICATION, Task
from trainables.batches import iterate
from trainables.config import TrainConfig
from trainables.data import Split


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite: this configuration cannot recover."""


@functools.cache
def cpu_supports_bf16() -> bool:
    """Whether oneDNN has fast bf16 kernels on this CPU (AVX-512 BF16/AMX class processors).

    Without them CPU autocast would emulate bf16 slowly, so mixed precision stays off there.
    """
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without the check
        return False


@dataclass(frozen=True)
class Runtime:
    """How to run, as opposed to what to train: device and speed switches, not hyperparameters."""

    device: torch.device
    mean: float
    std: float
    amp: bool = True  # bf16 autocast where the device has fast bf16 (recent GPUs; CPUs, see below)
    channels_last: bool = True  # faster convolutions on CPU (about 1.4x) and on tensor cores
    # On CPUs bf16 pays off for convolutions (the CNN: 1.7x) but slows small matmuls (the ViT: 0.7x);
    # on an H100 it speeds up VGG16 and AlexNet but slows the small CNN and ViT (launch-bound). A
    # model's registry entry says where to use it (``ModelSpec.cpu_bf16``, ``ModelSpec.gpu_bf16``).
    cpu_bf16: bool = False
    gpu_bf16: bool = True

    def place(self, model: nn.Module) -> nn.Module:
        """``model`` on this device, in channels_last layout when that is on."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def for_model(self, spec) -> "Runtime":
        """This runtime with the bf16 choices of the model ``spec``."""
        return dataclasses.replace(self, cpu_bf16=spec.cpu_bf16, gpu_bf16=spec.gpu_bf16)

    @functools.cached_property
    def precision(self) -> str:
        """``bf16`` when matrix work runs under bf16 autocast, else ``fp32``; recorded in results."""
        if not self.amp:
            return "fp32"
        if self.device.type == "cuda":
            return "bf16" if self.gpu_bf16 and torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if self.device.type == "cpu" and self.cpu_bf16 and cpu_supports_bf16() else "fp32"

    @property
    def autocast(self) -> contextlib.AbstractContextManager:
        # Convolutions and matmuls in bf16, reductions, norms and the loss in fp32 (autocast's lists);
        # bf16 keeps fp32's range, so no loss scaling is needed.
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


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


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base learning rate at ``step`` (per-batch schedules)."""
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
    """A per-step schedule planned over ``cfg.epochs`` (ASHA may stop a trial before its end)."""
    total = cfg.epochs * steps_per_epoch
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total // 2)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, warmup, cfg.schedule))


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
    """One pass over ``data`` (shuffled, augmented if ``cfg.augment``); returns the mean of the
    task's training loss.

    Raises ``DivergedError`` as soon as the loss stops being finite.
    """
    model.train()
    total_loss = torch.zeros((), device=runtime.device)
    seen = 0
    start = time.perf_counter()
    batches = iterate(data, cfg.batch_size, runtime.mean, runtime.std, shuffle=True, augment=cfg.augment,
                      generator=generator, channels_last=runtime.channels_last)
    for step, (x, y) in enumerate(batches):
        with runtime.autocast:
            loss = task.loss(model, x, y, cfg.label_smoothing)
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
    for x, y in iterate(data, min(batch_size, task.eval_batch_size), runtime.mean, runtime.std,
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
        f1=float(f1_score(labels, predicted, average="macro")),
        predictions=predicted,
        rates={name: (count / len(labels)).item() for name, count in counts.items()},
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
