"""The networks of ``models/finetune.py``: a torchvision classifier with ImageNet weights, its first
convolution folded to one channel for gray data, a new head, and an input adapter that resizes and
re-normalizes each batch the way ImageNet images were."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.finetune import IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD, IMAGENET_MEAN, IMAGENET_STD, FineTuneConfig, \
    ensure_weights, tv_builder
from models.registry import BuildContext


def load_pretrained(net: nn.Module, weights: Any, weights_dir: str | os.PathLike | None) -> Path:
    """Load ``weights`` into ``net`` (whose layers are still ImageNet-shaped); returns the file used."""
    path = ensure_weights(weights, weights_dir)
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return path


def fold_rgb_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """A one-channel convolution equal to ``conv`` applied to a gray image repeated in 3 channels."""
    gray = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None)
    with torch.no_grad():
        gray.weight.copy_(conv.weight.sum(dim=1, keepdim=True))  # (out, 3, k, k) -> (out, 1, k, k)
        if conv.bias is not None:
            gray.bias.copy_(conv.bias)
    return gray


def first_conv_name(net: nn.Module) -> str:
    """The name of the first convolution ``net`` holds (the one that sees the image)."""
    return next(name for name, m in net.named_modules() if isinstance(m, nn.Conv2d))


def head_name(net: nn.Module) -> str:
    """The name of the last fully connected layer ``net`` holds (its classifier's output layer)."""
    return [name for name, m in net.named_modules() if isinstance(m, nn.Linear)][-1]


def imagenet_affine(ctx: BuildContext, mean: tuple[float, ...] = IMAGENET_MEAN,
                    std: tuple[float, ...] = IMAGENET_STD) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), each (1, C, 1, 1): the data's normalization -> the one the network was pretrained with
    (``mean``/``std`` of RGB images, ImageNet's unless given; for gray data their averages, since the first
    convolution's RGB filters are summed into one channel)."""
    if ctx.shape.channels == 3:
        target_mean, target_std = torch.tensor(mean), torch.tensor(std)
    elif tuple(mean) == IMAGENET_MEAN and tuple(std) == IMAGENET_STD:
        target_mean, target_std = torch.tensor([IMAGENET_GRAY_MEAN]), torch.tensor([IMAGENET_GRAY_STD])
    else:
        target_mean, target_std = torch.tensor(mean).mean().view(1), torch.tensor(std).mean().view(1)
    data_mean, data_std = torch.tensor(ctx.mean), torch.tensor(ctx.std)
    scale, shift = data_std / target_std, (data_mean - target_mean) / target_std
    return scale.view(1, -1, 1, 1), shift.view(1, -1, 1, 1)


class FineTuned(nn.Module):
    """A torchvision classifier behind an input adapter; ``backbone`` names the part that
    ``strategy`` freezes or slows (None: everything but the head)."""

    def __init__(self, net: nn.Module, cfg: FineTuneConfig, ctx: BuildContext, head: str | tuple[str, ...],
                 backbone: str | None = None, pretrained_norm: tuple[tuple[float, ...], tuple[float, ...]] = (
                     IMAGENET_MEAN, IMAGENET_STD)) -> None:
        super().__init__()
        self.net = net
        self.size = cfg.input_size
        self.backbone_lr_mult = cfg.backbone_lr_mult if cfg.strategy == "discriminative" else 1.0
        # Not saved with the weights: they follow from the data, which the model is rebuilt for.
        scale, shift = imagenet_affine(ctx, *pretrained_norm)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("shift", shift, persistent=False)
        heads = (head,) if isinstance(head, str) else head  # a distilled ViT has two (timm's "head", "head_dist")
        head_ids = {id(p) for name in heads for p in net.get_submodule(name).parameters()}
        part = net.get_submodule(backbone).parameters() if backbone else net.parameters()
        self._backbone_ids = {id(p) for p in part if id(p) not in head_ids}
        if cfg.strategy == "head":
            for p in self.backbone_parameters():
                p.requires_grad_(False)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The pretrained part's parameters (what ``strategy`` freezes or slows)."""
        return [p for p in self.net.parameters() if id(p) in self._backbone_ids]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, S, S)
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)  # (B, C, I, I)
        return self.net(x * self.scale + self.shift)  # (B, num_classes)

    def param_groups(self) -> list[tuple[list[nn.Parameter], float]]:
        """(parameters, learning-rate multiplier): the backbone may learn slower than the classifier."""
        backbone = self.backbone_parameters()
        rest = [p for p in self.parameters() if id(p) not in self._backbone_ids]
        return [(backbone, self.backbone_lr_mult), (rest, 1.0)]


def classifier_dropouts(net: nn.Module, head: str) -> list[nn.Dropout]:
    """The dropout layers of the part of ``net`` that holds its head (VGG's and AlexNet's ``classifier``)."""
    parent = net.get_submodule(head.rpartition(".")[0]) if "." in head else None
    return [m for m in parent.modules() if isinstance(m, nn.Dropout)] if parent is not None else []


def build_finetuned(cfg: FineTuneConfig, ctx: BuildContext, builder: str | Callable[..., nn.Module], weights: Any,
                    backbone: str | None = None) -> nn.Module:
    """Build ``builder`` (a torchvision constructor, or its name), load its ImageNet weights if
    ``cfg.pretrained``, then give it a ``ctx.num_classes``-way head and, for gray data, a one-channel
    first convolution."""
    net = tv_builder(builder)(weights=None)
    if cfg.pretrained and ctx.load_weights:
        load_pretrained(net, weights, ctx.weights_dir)
    head, first = head_name(net), first_conv_name(net)
    new_head = nn.Linear(net.get_submodule(head).in_features, ctx.num_classes)
    # torchvision's builders take no dropout argument (VGG and AlexNet keep theirs in ``classifier``, ResNet has
    # none): the classifier's own dropout layers get the searched rate; a network without any gets one before
    # its new head.
    dropouts = classifier_dropouts(net, head)
    for layer in dropouts:
        layer.p = cfg.classifier_dropout
    net.set_submodule(head, new_head if dropouts else nn.Sequential(nn.Dropout(cfg.classifier_dropout), new_head))
    if ctx.shape.channels == 1:
        net.set_submodule(first, fold_rgb_conv(net.get_submodule(first)))
    return FineTuned(net, cfg, ctx, head, backbone)
