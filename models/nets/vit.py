"""The network of ``models/vit.py``: a Vision Transformer written in this project (patch embedding, a
class token, learned position embeddings, pre-norm encoder blocks of multi-head self-attention and an
MLP, each with stochastic depth, a final norm and a linear head).

Shapes: B batch, N patches (+1 class token = T tokens), D width, H heads, hd = D / H per head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.config import from_flat
from models.registry import BuildContext, Config, DataShape
from models.vit import ViTConfig


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
    """softmax(Q K^T / sqrt(hd)) V over (B, H, T, hd) tensors, by PyTorch's fused kernel."""
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The same computation written out; the tests compare it with ``attention``."""
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5  # (B, H, T, T)
    return scores.softmax(dim=-1) @ v  # (B, H, T, hd)


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, attn_dropout: float, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.attn_dropout = attn_dropout
        self.out_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape  # (B, T, D)
        qkv = self.qkv(x).view(b, t, 3, self.heads, d // self.heads)  # (B, T, 3, H, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, T, hd)
        y = attention(q, k, v, self.attn_dropout if self.training else 0.0)  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(b, t, d)  # (B, T, D)
        return self.out_dropout(self.proj(y))


class DropPath(nn.Module):
    """Stochastic depth: during training, skip a residual branch for a random subset of samples."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty(x.shape[0], *([1] * (x.ndim - 1))).bernoulli_(keep)  # (B, 1, 1)
        return x * mask / keep


class Block(nn.Module):
    """Pre-norm encoder block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ViTConfig, drop_path: float) -> None:
        super().__init__()
        hidden = int(cfg.width * cfg.mlp_ratio)
        self.norm1 = nn.LayerNorm(cfg.width)
        self.attn = MultiHeadSelfAttention(cfg.width, cfg.heads, cfg.attn_dropout, cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.width)
        self.mlp = nn.Sequential(nn.Linear(cfg.width, hidden), nn.GELU(), nn.Dropout(cfg.dropout),
                                 nn.Linear(hidden, cfg.width), nn.Dropout(cfg.dropout))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ViT(nn.Module):
    def __init__(self, cfg: ViTConfig, shape: DataShape = DataShape()) -> None:
        super().__init__()
        cfg.check_image(shape.image_size)
        num_patches = (shape.image_size // cfg.patch_size) ** 2
        # A strided convolution is exactly "cut into patches, flatten, apply one linear map".
        self.patch_embed = nn.Conv2d(shape.channels, cfg.width, cfg.patch_size, stride=cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, cfg.width))
        self.dropout = nn.Dropout(cfg.dropout)
        rates = [cfg.drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(Block(cfg, rate) for rate in rates)
        self.norm = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, shape.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # Truncated-normal (std 0.02) embeddings and linear layers, as in the original ViT recipe;
        # PyTorch's default uniform init trains noticeably slower here.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.head.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, S, S)
        x = self.patch_embed(x)  # (B, D, S/p, S/p)
        x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, D)
        x = self.dropout(torch.cat([cls, x], dim=1) + self.pos_embed)  # (B, T, D)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))  # class token -> (B, num_classes)


def build(config: Config, ctx: BuildContext = BuildContext()) -> nn.Module:
    """The ViT described by the architecture keys of a flat config."""
    return ViT(from_flat(ViTConfig, config), ctx.shape)
