"""Batches indexed from one uint8 tensor on the training device, normalized and augmented there.

This replaces a per-sample ``DataLoader`` with PIL transforms, which on MNIST costs more than the
small networks it feeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from trainables.augment import augment as augmented
from trainables.data import Split


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
              channels_last: bool = False) -> torch.Tensor:
    """uint8 (B, C, H, W), or float on the same 0-255 scale (augmented) -> float32 (B, C, H, W), scaled to [0, 1]
    then standardized per channel."""
    mean_t = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    x = images.float().div_(255.0).sub_(mean_t).div_(std_t)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


EVAL_INPUT_BYTES = 32 * 2**20  # float32 input of one evaluation batch at the most (its activations scale with it)


def eval_batch(images: torch.Tensor | np.ndarray, most: int) -> int:
    """Images evaluated at once: ``most`` (the task's, 1,024 for a classifier), fewer for large images, so
    that a batch's float32 input stays within ``EVAL_INPUT_BYTES`` (1,024 MNIST digits take 3 MiB; 1,024
    images of 256x256 RGB would take 768 MiB, and a CNN's first activations several times that)."""
    per_image = 4 * max(1, math.prod(images.shape[1:]))
    return max(1, min(most, EVAL_INPUT_BYTES // per_image))


BLOCK_BYTES = 8 * 2**20  # a streamed split is read in blocks of this size: large, sequential reads
BLOCKS_MIXED = 16  # images of this many blocks are shuffled together (the memory a streamed epoch reads ahead)


def rows_per_block(split: Split) -> int:
    """Images in one ``BLOCK_BYTES`` block of ``split``."""
    return max(1, BLOCK_BYTES // max(1, split.nbytes // max(len(split), 1)))


def block_order(n: int, block: int, generator: torch.Generator | None = None, mixed: int = BLOCKS_MIXED) -> torch.Tensor:
    """A quasi-random order of ``n`` images for data read from disk (FFCV's idea): the blocks of ``block``
    consecutive images in a random order, and the images of each run of ``mixed`` blocks shuffled together.
    An epoch then reads the file in large sequential pieces, each image once, while a batch still draws
    from many places of a split that was shuffled once when it was carved."""
    blocks = torch.randperm(-(-n // block), generator=generator)
    parts = []
    for start in range(0, len(blocks), mixed):
        rows = torch.cat([torch.arange(b * block, min((b + 1) * block, n)) for b in blocks[start:start + mixed].tolist()])
        parts.append(rows[torch.randperm(len(rows), generator=generator)])
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)


def iterate(
    split: Split,
    batch_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    shuffle: bool = False,
    augment: str = "none",
    generator: torch.Generator | None = None,
    channels_last: bool = False,
    mirror: bool = False,
    device: torch.device | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (inputs (B, C, H, W) float, labels (B,)) over one pass of ``split``.

    ``augment`` is the policy the images are augmented with (``trainables.augment.augment``; the mirroring only
    where ``mirror`` says a flip keeps the class: photos, not digits). The last partial batch is kept: dropping it would silently
    skip validation images. A split larger than memory (``Split.streamed``) is read in a block order
    (``block_order``) and stays on the host: each batch moves to ``device``.
    """
    n = len(split)
    device = split.images.device
    if not shuffle:
        order = None
    elif split.streamed:
        order = block_order(n, rows_per_block(split), generator)
    else:
        order = torch.randperm(n, generator=generator).to(device)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size] if order is not None else slice(start, start + batch_size)
        images, labels = split.images[idx], split.labels[idx]
        if device is not None and images.device != device:  # a streamed split stays on the host
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        images = augmented(images, augment, mirror, generator)
        yield normalize(images, mean, std, channels_last), labels
