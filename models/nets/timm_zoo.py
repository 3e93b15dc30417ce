"""The networks of ``models/timm_zoo.py``: timm's ``create_model`` with the data's classes and channels (timm folds
the first convolution's RGB filters into one channel for gray data and leaves the new head untrained), its weights
from the file ``models.timm_zoo.TimmWeights`` found, behind the input adapter of ``models.nets.finetune``."""

from __future__ import annotations

import functools

import torch
from torch import nn

from models.finetune import ensure_weights
from models.nets.finetune import FineTuned
from models.registry import BuildContext
from models.timm_zoo import TimmConfig, TimmWeights


@functools.cache
def takes(arch: str, setting: str) -> bool:
    """Whether timm's ``arch`` takes the constructor argument ``setting`` (``drop_path_rate``: DenseNet, DLA, VGG and
    Inception do not), asked by building it once on PyTorch's meta device (no memory, no weights: 0.02-0.2 s)."""
    import timm

    try:
        with torch.device("meta"):
            timm.create_model(arch, pretrained=False, **{setting: 0.1})
    except TypeError as e:
        return setting not in str(e)
    except Exception:  # anything else is not about this setting: the trial that builds it reports it
        return True
    return True


def build_timm(cfg: TimmConfig, ctx: BuildContext, arch: str) -> nn.Module:
    """timm's ``arch`` with a ``ctx.num_classes``-way head for ``ctx.shape.channels`` channels, its pretrained
    weights loaded if ``cfg.pretrained`` (from the file found, never a download here), fed at ``cfg.input_size``."""
    import timm

    kwargs: dict = dict(num_classes=ctx.num_classes, in_chans=ctx.shape.channels)
    # Only where asked for: not every architecture takes them (the default, 0, builds any of timm's).
    kwargs.update({k: v for k, v in (("drop_rate", cfg.classifier_dropout), ("drop_path_rate", cfg.drop_path_rate))
                   if v})
    default_cfg = timm.models.get_pretrained_cfg(arch)
    if default_cfg is not None and default_cfg.fixed_input_size:
        kwargs["img_size"] = cfg.input_size  # a ViT's position embeddings are made (and loaded) for that size
    if cfg.pretrained and ctx.load_weights:
        path = ensure_weights(TimmWeights(arch), ctx.weights_dir)
        net = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
    else:
        net = timm.create_model(arch, pretrained=False, **kwargs)
    norm = (tuple(net.pretrained_cfg["mean"]), tuple(net.pretrained_cfg["std"]))
    return FineTuned(net, cfg, ctx, net.pretrained_cfg["classifier"], pretrained_norm=norm)
