"""How a model is trained and scored: a task adapter declared by its registry entry.

The training loop never asks which model it runs. It asks the model's task for the training loss of
a batch and for the class predictions of a batch; a classifier and a detector used as a classifier
(Faster R-CNN) answer differently, behind the same two calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the registry holds tasks and stays free of torch (the command line starts without it)
    import torch
    from torch import nn


@dataclass
class Predictions:
    """One batch's answer: ``logits`` (B, C) whose cross-entropy is the reported loss, ``classes``
    (B,) the predicted class of each image, and per-batch counts for task-specific metrics (e.g. how
    many images a detector found no box in), summed over the split and divided by its size."""

    logits: torch.Tensor
    classes: torch.Tensor
    counts: dict[str, torch.Tensor] = field(default_factory=dict)


class Task:
    """Image classification: the model maps (B, 1, H, W) to (B, C) logits."""

    name = "classification"
    # Names of the per-image rates ``predict`` counts (``no_box_rate`` for a detector); each becomes
    # a per-epoch metric and a column of the epochs export.
    rates: tuple[str, ...] = ()
    eval_batch_size = 1024  # the most images evaluated at once

    mixes = True  # trains on mixed images (augment="strong-mix": two labels an image, weighted)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0,
             mixed: tuple[torch.Tensor, float] | None = None) -> torch.Tensor:
        """The training loss of one batch (the model is in training mode). ``mixed``: the labels the images were
        mixed with and the weight ``lam`` of ``y`` (``trainables.augment.mix``); cross-entropy is linear in the
        target, so ``lam`` of one loss plus the rest of the other is the loss on the mixed labels."""
        import torch.nn.functional as F

        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        if mixed is None:
            return loss
        other, lam = mixed
        return lam * loss + (1 - lam) * F.cross_entropy(logits, other, label_smoothing=label_smoothing)

    def predict(self, model: nn.Module, x: torch.Tensor) -> Predictions:
        """Class scores and predicted classes of one batch (the model is in evaluation mode)."""
        logits = model(x)
        return Predictions(logits, logits.argmax(dim=1))


CLASSIFICATION = Task()
