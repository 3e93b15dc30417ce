"""The augmentation policies (``models.config.AUGMENT_POLICIES``) on whole batches, on the training device.

Every transform takes a (B, C, H, W) batch and draws each image's own parameters, so a batch costs a few
tensor operations rather than B calls: shifts and crops are one gather or one ``grid_sample``; TrivialAugment
(torchvision's ``transforms.v2``, which draws one operation a call) is applied to groups of images; mixing
(CutMix or MixUp) pairs each image with another of its batch and returns both labels with their weight.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from models import augment_shift
from models.registry import DataShape

CROP_SCALE = (0.25, 1.0)  # the share of the image a random resized crop keeps (torchvision's 0.08 is for 224 px)
CROP_RATIO = (3 / 4, 4 / 3)  # its aspect ratio, log-uniform (torchvision's)
# TrivialAugment draws one operation and strength per call: per image a batch of 128 at 32 px took 22.8 ms on
# 2 cores, per group of 8 images 4.5 ms (the whole batch at once: 2.2 ms, but then every image of a step gets
# the same operation). A step's 16 groups get 16 draws.
TRIVIAL_GROUP = 8
MIXUP_ALPHA, CUTMIX_ALPHA = 0.8, 1.0  # timm's defaults (DeiT's recipe); each batch is one or the other, half each


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate each image by its own random offset in [-max_shift, max_shift], filling with zeros.

    images: (B, C, H, W) of any dtype. One gather over a zero-padded copy, so it costs about one
    pass over the batch and runs on whatever device the images are on.
    """
    b, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4).permute(0, 2, 3, 1)  # (B, H+2s, W+2s, C)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator, device="cpu").to(images.device)
    rows = offsets[0][:, None] + torch.arange(h, device=images.device)[None, :]  # (B, H)
    cols = offsets[1][:, None] + torch.arange(w, device=images.device)[None, :]  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (B, C, H, W)


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror a random half of the (B, C, H, W) images left to right."""
    flip = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)[:, None, None, None]
    return torch.where(flip, images.flip(-1), images)


def random_resized_crop(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image's own random crop (``CROP_SCALE`` of its area, aspect ratio in ``CROP_RATIO``) resized back to
    the image's size, bilinear: one ``grid_sample`` for the batch. Returns float images on the same 0-255 scale."""
    b = len(images)
    area = torch.empty(b).uniform_(*CROP_SCALE, generator=generator)
    log_ratio = torch.empty(b).uniform_(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]), generator=generator)
    width = (area * log_ratio.exp()).sqrt().clamp(max=1.0)  # as fractions of the image's width and height
    height = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
    # the crop's centre, in grid_sample's [-1, 1] coordinates, anywhere that keeps the crop inside the image
    cx = (torch.rand(b, generator=generator) * 2 - 1) * (1 - width)
    cy = (torch.rand(b, generator=generator) * 2 - 1) * (1 - height)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = width, cx, height, cy
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def trivial_augment(images: torch.Tensor) -> torch.Tensor:
    """TrivialAugment (Müller & Hutter 2021, torchvision's ``TrivialAugmentWide``) on uint8 images: one operation
    and strength drawn for each group of ``TRIVIAL_GROUP`` images (from torch's global generator, which every
    trial seeds)."""
    from torchvision.transforms import v2

    policy = v2.TrivialAugmentWide()
    return torch.cat([policy(group) for group in images.split(TRIVIAL_GROUP)])


def augment(images: torch.Tensor, policy: str, mirror: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """``images`` (uint8 (B, C, H, W)) under ``policy``, before normalization; uint8 or float on the 0-255 scale.

    Photos (``models.DataShape.photos``: RGB of 32 pixels and more) are cropped at random and resized back; other images are shifted
    by up to ``models.augment_shift`` pixels (not at all below it); both are mirrored where ``mirror`` says a flip
    keeps the class. "strong" and "strong-mix" apply TrivialAugment first (the mixing is ``mix``'s, on labels too).
    """
    if policy == "none":
        return images
    if policy.startswith("strong"):
        images = trivial_augment(images)
    shift = augment_shift(images.shape[-1])
    if DataShape(images.shape[1], images.shape[-1]).photos:
        images = random_resized_crop(images, generator)
    elif shift:  # images too small to shift (models.augment_shift) may still be mirrored
        images = random_shift(images, shift, generator)
    return random_flip(images, generator) if mirror else images


def mix(x: torch.Tensor, labels: torch.Tensor,
        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """CutMix or MixUp (half the batches each) of the normalized batch ``x``: each image with another of the batch.
    Returns (mixed images, the other images' labels, the weight ``lam`` of the batch's own labels): the loss is
    ``lam * loss(labels) + (1 - lam) * loss(other labels)`` (``models.task.Task.loss``)."""
    b = len(x)
    other = torch.randperm(b, generator=generator).to(x.device)
    beta = np.random.default_rng(int(torch.randint(2**31, (1,), generator=generator)))
    if torch.rand(1, generator=generator).item() < 0.5:
        lam = float(beta.beta(MIXUP_ALPHA, MIXUP_ALPHA))
        return lam * x + (1 - lam) * x[other], labels[other], lam
    h, w = x.shape[-2:]
    cut = math.sqrt(1 - float(beta.beta(CUTMIX_ALPHA, CUTMIX_ALPHA)))  # the pasted box's side, as a fraction
    cy, cx = (int(v) for v in beta.integers(0, (h, w)))
    top, bottom = max(cy - int(h * cut / 2), 0), min(cy + int(h * cut / 2), h)
    left, right = max(cx - int(w * cut / 2), 0), min(cx + int(w * cut / 2), w)
    x = x.clone()
    x[..., top:bottom, left:right] = x[other][..., top:bottom, left:right]
    return x, labels[other], 1 - (bottom - top) * (right - left) / (h * w)  # the box as clipped to the image
