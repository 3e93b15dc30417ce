"""Batches indexed from one uint8 tensor on the training device, normalized and augmented there.

This replaces a per-sample ``DataLoader`` with PIL transforms, which on MNIST costs more than the
small networks it feeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from models import augment_shift
from trainables.data import Split


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate each image by its own random offset in [-max_shift, max_shift], filling with zeros.

    images: (B, C, H, W) of any dtype. One gather over a zero-padded copy, so it costs about one
    pass over the batch and runs on whatever device the images are on.
    """
    b, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (max_shift,) * 4).permute(0, 2, 3, 1)  # (B, H+2s, W+2s, C)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator, device="cpu").to(images.device)
    rows = offsets[0][:, None] + torch.arange(h, device=images.device)[None, :]  # (B, H)
    cols = offsets[1][:, None] + torch.arange(w, device=images.device)[None, :]  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (B, C, H, W)


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror a random half of the (B, C, H, W) images left to right."""
    flip = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)[:, None, None, None]
    return torch.where(flip, images.flip(-1), images)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
              channels_last: bool = False) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 (B, C, H, W), scaled to [0, 1] then standardized per channel."""
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
    augment: bool = False,
    generator: torch.Generator | None = None,
    channels_last: bool = False,
    mirror: bool = False,
    device: torch.device | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (inputs (B, C, H, W) float, labels (B,)) over one pass of ``split``.

    ``augment`` shifts each image at random (by up to ``models.augment_shift`` pixels: images too small for
    that are not shifted), and also mirrors half of them where ``mirror`` says a flip keeps the class
    (photos, not digits). The last partial batch is kept: dropping it would silently
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
    shift = augment_shift(split.images.shape[-1])
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size] if order is not None else slice(start, start + batch_size)
        images, labels = split.images[idx], split.labels[idx]
        if device is not None and images.device != device:  # a streamed split stays on the host
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if augment:
            if shift:  # images too small to shift (models.augment_shift) may still be mirrored
                images = random_shift(images, shift, generator)
            if mirror:
                images = random_flip(images, generator)
        yield normalize(images, mean, std, channels_last), labels
