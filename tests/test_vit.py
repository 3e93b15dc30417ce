"""The from-scratch Vision Transformer: its attention kernel, its checks, and its building blocks."""

from __future__ import annotations

import pytest
import torch

import models
from models.config import ConfigError
from models.nets.vit import ViT, attention, attention_reference
from models.vit import ViTConfig


def test_fused_attention_equals_softmax_qk_v():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 17, 8) for _ in range(3))  # (B, H, T, hd)
    assert torch.allclose(attention(q, k, v), attention_reference(q, k, v), atol=1e-5)


@pytest.mark.parametrize("settings,needle", [
    ({"patch_size": 5}, "patch_size=5 must divide the 28x28 image size: use one of 1, 2, 4, 7, 14, 28"),
    ({"width": 100, "heads": 8}, "heads=8 must divide width=100"),
    ({"drop_path": 1.0}, "drop_path=1.0 must be in"),
])
def test_invalid_shapes_are_explained(settings, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        models.get("vit").build(settings)


@pytest.mark.parametrize("patch_size,tokens", [(4, 50), (7, 17)])
def test_patches_and_class_token_make_the_sequence(patch_size, tokens):
    model = ViT(ViTConfig(patch_size=patch_size, width=32, depth=1, heads=2))
    assert model.pos_embed.shape == (1, tokens, 32)
    seen = {}

    def record(module, inputs, output) -> None:  # returning None keeps the block's output
        seen["shape"] = output.shape

    model.blocks[0].register_forward_hook(record)
    model(torch.randn(5, 1, 28, 28))
    assert seen["shape"] == (5, tokens, 32)


def test_stochastic_depth_only_in_training():
    model = ViT(ViTConfig(width=32, depth=4, heads=2, drop_path=0.5))
    x = torch.randn(8, 1, 28, 28)
    model.eval()
    assert torch.equal(model(x), model(x))
    rates = [block.drop_path.rate for block in model.blocks]
    assert rates[0] == 0.0 and rates[-1] == 0.5 and rates == sorted(rates)


def test_registry_entry_gives_vit_a_longer_budget_than_cnn():
    vit, cnn = models.get("vit"), models.get("cnn")
    assert vit.max_epochs > cnn.max_epochs and vit.grace_period > cnn.grace_period
