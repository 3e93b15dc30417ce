"""Batches indexed from one uint8 tensor on the training device, normalized and augmented there.

This replaces a per-sample ``DataLoader`` with PIL transforms, which on MNIST costs more than the
small networks it feeds.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from trainables.data import Split

AUGMENT_SHIFT = 2  # pixels; digits stay recognisable and inside the 28x28 frame


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate each image by its own random offset in [-max_shift, max_shift], filling with zeros.

    images: (B, H, W) of any dtype. One gather over a zero-padded copy, so it costs about one
    pass over the batch and runs on whatever device the images are on.
    """
    b, h, w = images.shape
    padded = torch.nn.functional.pad(images, (max_shift,) * 4)  # (B, H+2s, W+2s)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator, device="cpu").to(images.device)
    rows = offsets[0][:, None] + torch.arange(h, device=images.device)[None, :]  # (B, H)
    cols = offsets[1][:, None] + torch.arange(w, device=images.device)[None, :]  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W)


def normalize(images: torch.Tensor, mean: float, std: float, channels_last: bool = False) -> torch.Tensor:
    """uint8 (B, H, W) -> float32 (B, 1, H, W), scaled to [0, 1] then standardized."""
    x = images.unsqueeze(1).float().div_(255.0).sub_(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def iterate(
    split: Split,
    batch_size: int,
    mean: float,
    std: float,
    shuffle: bool = False,
    augment: bool = False,
    generator: torch.Generator | None = None,
    channels_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (inputs (B, 1, H, W) float, labels (B,)) over one pass of ``split``.

    The last partial batch is kept: dropping it would silently skip validation images.
    """
    n = len(split)
    device = split.images.device
    order = torch.randperm(n, generator=generator).to(device) if shuffle else None
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size] if order is not None else slice(start, start + batch_size)
        images, labels = split.images[idx], split.labels[idx]
        if augment:
            images = random_shift(images, AUGMENT_SHIFT, generator)
        yield normalize(images, mean, std, channels_last), labels
