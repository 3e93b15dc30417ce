"""A trained network as people use it: decoded uint8 images in, class scores out.

``Classifier`` wraps a network with the data's normalization, so what it takes is exactly what
``imagesets`` decodes (uint8, N x C x S x S) and nothing else about the training run needs to travel
with it. The finalists' test, the bundles (``trainables.bundle``), their ONNX graphs and ``trainables.predict``
all run images through it, so a bundle's predictions are the ones its test reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.task import CLASSIFICATION, Task
from trainables.batches import eval_batch, normalize

PREDICT_BATCH = 1024  # images run at once (the evaluation loop's batch, so predictions match its test)


class Classifier(nn.Module):
    """uint8 (N, C, S, S) images, as decoded -> (N, K) class scores (``logits``).

    ``task`` says how the network's output becomes scores and classes: for a classifier the classes are
    the scores' argmax, for a detector used as a classifier (Faster R-CNN) the best detection's label.
    """

    def __init__(self, network: nn.Module, mean: Sequence[float], std: Sequence[float], task: Task = CLASSIFICATION,
                 channels_last: bool = False) -> None:
        super().__init__()
        self.network = network
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.task = task
        self.channels_last = channels_last

    def scores(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (N, K) float32, classes (N,)) of a uint8 batch: the same normalization as training."""
        out = self.task.predict(self.network, normalize(images, self.mean, self.std, self.channels_last))
        return out.logits.float(), out.classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.scores(images)[0]


@dataclass
class Scored:
    """A batch of images' class scores: ``logits`` (N, K), ``probabilities`` (their softmax) and ``classes``."""

    logits: np.ndarray
    classes: np.ndarray

    @property
    def probabilities(self) -> np.ndarray:
        shifted = self.logits - self.logits.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        return e / e.sum(axis=1, keepdims=True)


@torch.no_grad()
def score(classifier: Classifier, images: np.ndarray | torch.Tensor, device: torch.device | str | None = None,
          batch_size: int = PREDICT_BATCH) -> Scored:
    """Run uint8 (N, C, S, S) ``images`` through ``classifier`` in fp32, ``batch_size`` at a time, on the
    classifier's device (or ``device``)."""
    classifier.eval()
    device = torch.device(device) if device is not None else next(classifier.parameters()).device
    images = torch.as_tensor(np.asarray(images)) if isinstance(images, np.ndarray) else images
    size = eval_batch(images, min(batch_size, classifier.task.eval_batch_size))  # as the evaluation loop's
    logits, classes = [], []
    for start in range(0, len(images), size):
        batch_logits, batch_classes = classifier.scores(images[start:start + size].to(device))
        logits.append(batch_logits.cpu())
        classes.append(batch_classes.cpu())
    if not logits:
        return Scored(np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64))
    return Scored(torch.cat(logits).numpy(), torch.cat(classes).numpy().astype(np.int64))
