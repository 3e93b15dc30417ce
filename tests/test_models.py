"""Every registered model, through the registry, on data of every shape the search supports (1 or 3
channels, 8 to 224 pixels, 2 to 1,000 classes): builds, trains a step, and has a clean search space
whose every draw builds."""

from __future__ import annotations

import optuna
import pytest
import torch

import models
from helpers import planned
from search.command.space import default_params, space_with_pretrained
from models.config import ConfigError, TrainConfig, params_to_config, split_config

optuna.logging.set_verbosity(optuna.logging.WARNING)
ALL = models.names()
PLAIN = (int, float, str, bool, type(None))
MNIST = models.DataShape(1, 28, 10)
SHAPES = [MNIST, models.DataShape(3, 32, 5), models.DataShape(1, 8, 10), models.DataShape(3, 48, 2)]


def sampled_configs(name: str, shape: models.DataShape = MNIST, n: int = 6) -> list[dict]:
    """Configs drawn from the model's space for data of ``shape`` by a seeded random sampler, plus its
    default. Models fine-tuned from pretrained weights are sampled as ``--no-pretrained`` searches them
    (no weights can be downloaded here; test_finetune.py covers loading them)."""
    spec = models.get(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    configs = [spec.defaults_for(shape)]
    if spec.pretrained_weights is not None:
        configs = [{**configs[0], **spec.scratch_config}]
    for _ in range(n):
        trial = study.ask()
        if spec.pretrained_weights is not None:
            extra = space_with_pretrained(name, (False,), trial, shape) or {}
        else:
            extra = spec.space(trial, shape) or {}
        configs.append({**params_to_config(trial.params), **extra})
    return configs


def context(shape: models.DataShape) -> models.BuildContext:
    return models.BuildContext(shape, mean=(0.5,) * shape.channels, std=(0.25,) * shape.channels)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", ALL)
def test_training_step_and_predictions_through_the_task(name, shape):
    """Through its registry entry's task, on data of ``shape``: a training loss every trainable
    parameter gets a gradient from, and one predicted class and K class scores per image."""
    spec = models.get(name)
    k = shape.num_classes
    # Other shapes: the default and one draw; the fine-tuned torchvision networks (up to 138M weights, seconds a
    # build) draw fewer from their small spaces.
    draws = (3 if spec.task.rates or spec.pretrained_weights is not None else 6) if shape == MNIST else 1
    for config in sampled_configs(name, shape, n=draws):
        model = spec.build(config, context(shape)).train()
        x, y = torch.randn(3, shape.channels, shape.image_size, shape.image_size), torch.tensor([0, 1, k - 1])
        loss = spec.task.loss(model, x, y)
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad), config
        with torch.no_grad():
            out = spec.task.predict(model.eval(), x)
        assert out.logits.shape == (3, k) and out.classes.shape == (3,)
        assert ((out.classes >= 0) & (out.classes < k)).all()
        assert set(out.counts) == set(spec.task.rates)


@pytest.mark.parametrize("name", ALL)
def test_the_default_builds_for_large_images_and_a_thousand_classes(name):
    shape = models.DataShape(3, 224, 1000)
    spec = models.get(name)
    config = {**spec.defaults_for(shape), **(spec.scratch_config if spec.pretrained_weights is not None else {})}
    with torch.no_grad():
        out = spec.task.predict(spec.build(config, context(shape)).eval(), torch.randn(2, 3, 224, 224))
    assert out.logits.shape == (2, 1000)


@pytest.mark.parametrize("shape", SHAPES + [models.DataShape(3, 224, 1000)], ids=str)
@pytest.mark.parametrize("name", ALL)
def test_search_space_draws_only_what_builds_for_the_data(name, shape):
    spec = models.get(name)
    for config in sampled_configs(name, shape, n=20):
        assert all(isinstance(v, PLAIN) for v in config.values()), config
        split_config(config, spec.config_cls, name)  # validates every key and value
        spec.check_fits(config, shape)  # and it builds for this size


def test_the_cnns_space_keeps_batch_norm_and_strides_only_large_images():
    """Reshaped from measurement (docs/models.md): random draws without batch norm, or strided at 28 pixels,
    trained far below the default; Adam's learning rates start at 3e-4."""
    small = sampled_configs("cnn", MNIST, n=40)
    assert all(c["batch_norm"] for c in small) and all(c["stride"] == 1 for c in small)
    assert all(c["lr"] >= 3e-4 for c in small)
    assert {c["stride"] for c in sampled_configs("cnn", models.DataShape(3, 64, 10), n=30)} == {1, 2}


def test_the_spaces_adapt_to_the_size():
    vit, cnn = models.get("vit"), models.get("cnn")
    patch = lambda size: {c["patch_size"] for c in sampled_configs("vit", models.DataShape(1, size, 10), n=20)}
    assert patch(28) == {4, 7} and patch(32) == {4, 8} and patch(8) == {2} and patch(16) == {2, 4}
    assert vit.defaults_for(models.DataShape(3, 224, 10))["patch_size"] == 32
    blocks = lambda size: {c["blocks"] for c in sampled_configs("cnn", models.DataShape(1, size, 10), n=30)}
    assert blocks(28) == {1, 2, 3} and blocks(224) == {4} and max(blocks(8)) <= 3
    with pytest.raises(ConfigError, match="cannot take 29x29.*--image-size 28 or 30"):
        vit.defaults_for(models.DataShape(1, 29, 10))
    with pytest.raises(ConfigError, match="patch_size=7 must divide the 32x32"):
        vit.check_fits({**vit.default_config, "patch_size": 7}, models.DataShape(3, 32, 10))
    assert cnn.defaults_for(models.DataShape(1, 64, 10))["blocks"] == 3


def test_a_small_data_set_is_searched_with_small_batches():
    """At least 16 steps an epoch: on 1,300 images a batch of 512 would give ASHA's first rung 3 steps."""
    small, mnist = models.DataShape(1, 8, 10, train_images=1_300), models.DataShape(1, 28, 10, train_images=55_000)
    batches = lambda name, shape: {c["batch_size"] for c in sampled_configs(name, shape, n=20)}
    assert batches("cnn", small) == {64} and batches("vit", small) == {64}
    assert batches("cnn", mnist) == {64, 128, 256, 512}
    assert models.get("vit").defaults_for(small)["batch_size"] == 64
    assert models.get("cnn").defaults_for(mnist)["batch_size"] == 256


def test_images_too_small_to_shift_are_searched_without_augmentation():
    """A one-pixel shift is an eighth of an 8x8 image (measured: the ViT's default fell from 73% to 18% on
    digits): such images are not shifted, so no trial is spent on ``augment="light"`` and no default asks for it."""
    tiny, mnist = models.DataShape(1, 8, 10), models.DataShape(1, 28, 10)
    assert tiny.augments() == ["none"] and mnist.augments() == ["none", "light"]
    assert models.augment_shift(8) == 0 and models.augment_shift(28) == 2 and models.augment_shift(224) == 16
    for name in ("cnn", "vit", "resnet18"):
        assert {c["augment"] for c in sampled_configs(name, tiny, n=20)} == {"none"}, name
        assert {c["augment"] for c in sampled_configs(name, mnist, n=20)} == {"none", "light"}, name
    assert models.get("vit").defaults_for(tiny)["augment"] == "none"
    assert models.get("vit").defaults_for(mnist)["augment"] == "light"


def test_photos_are_searched_with_light_and_strong_augmentation_and_mixing_only_over_long_budgets():
    """RGB images of 32 px and more: none, light (crop and flip) and strong (TrivialAugment) for every model;
    CutMix/MixUp only where a trial trains 10 epochs or more, and never for the detector (one label a box);
    fine-tuned models start from the crop and flip, digits from nothing."""
    short, long = models.DataShape(3, 32, 10, epochs=3), models.DataShape(3, 32, 10, epochs=15)
    for name in ("cnn", "resnet18", "faster_rcnn"):
        assert {c["augment"] for c in sampled_configs(name, short, n=30)} == {"none", "light", "strong"}, name
    assert {c["augment"] for c in sampled_configs("resnet18", long, n=40)} == {"none", "light", "strong", "strong-mix"}
    assert "strong-mix" not in {c["augment"] for c in sampled_configs("faster_rcnn", long, n=40)}
    with pytest.raises(ConfigError, match="strong-mix mixes two labels.*faster_rcnn"):
        models.get("faster_rcnn").check_fits({"augment": "strong-mix"}, long)
    for name in ("resnet18", "vgg16", "timm:mobilenetv3_small_050"):
        assert models.get(name).defaults_for(long)["augment"] == "light", name
        assert models.get(name).defaults_for(MNIST)["augment"] == "none", name
        # from scratch the crop costs more than it gives over a short budget: the default trial goes without
        scratch = planned("--model", name, "--no-pretrained", shape=models.DataShape(3, 32, 10, train_images=10_000))
        assert default_params(scratch.plans[0])["augment"] == "none", name
    assert models.get("cnn").defaults_for(long)["augment"] == "none"


def test_augment_names_a_policy_and_reads_the_booleans_of_earlier_searches():
    """Configurations saved before policies (``augment=True``, ``--set augment=false``) still train as they did."""
    assert TrainConfig(augment=True).augment == "light" and TrainConfig(augment=False).augment == "none"
    assert split_config({"augment": "true"}, models.get("cnn").config_cls, "cnn").augment == "light"
    assert split_config({"augment": "strong"}, models.get("cnn").config_cls, "cnn").augment == "strong"
    with pytest.raises(ConfigError, match="augment='medium' is not allowed.*'none', 'light', 'strong', 'strong-mix'"):
        TrainConfig(augment="medium")


@pytest.mark.parametrize("name", ALL)
def test_default_config_is_complete_and_valid(name):
    spec = models.get(name)
    cfg = split_config(spec.default_config, spec.config_cls, name)
    assert isinstance(cfg, TrainConfig)
    assert spec.max_epochs >= spec.grace_period >= 1


def test_registry_rejects_duplicates_and_lists_known_names():
    with pytest.raises(ValueError, match="already registered"):
        models.register(models.get("cnn"))
    with pytest.raises(models.UnknownModelError, match="known models: .*cnn"):
        models.get("resnet")
    assert models.parse_models("all") == [name for name in ALL if not name.startswith("timm:")]  # the built-in
    assert models.parse_models("cnn,cnn") == ["cnn"]


def test_a_model_whose_settings_shadow_training_settings_is_refused():
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class ShadowingConfig:
        width: int = 8
        lr: float = 0.1  # also TrainConfig's: one flat config could not say whose it is

    with pytest.raises(ValueError, match="'shadow': its config fields lr are training settings"):
        models.register(dataclasses.replace(models.get("cnn"), name="shadow", config_cls=ShadowingConfig))
    assert "shadow" not in models.names()


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match="unknown setting.*lr_rate"):
        split_config({"lr_rate": 0.1}, models.get("cnn").config_cls, "cnn")
    with pytest.raises(ConfigError, match="optimizer='rmsprop'.*'adam'"):
        split_config({"optimizer": "rmsprop"}, models.get("cnn").config_cls, "cnn")
    with pytest.raises(ConfigError, match="batch_size='big' cannot be read as int"):
        split_config({"batch_size": "big"}, models.get("cnn").config_cls, "cnn")


def test_cnn_that_shrinks_the_image_to_nothing_is_explained():
    cnn = models.get("cnn")
    with pytest.raises(ConfigError, match="shrinks a 28x28 image.*padding='same'"):
        cnn.build({"blocks": 4, "kernel_size": 7, "padding": "valid", "stride": 2})
    with pytest.raises(ConfigError, match="shrinks a 8x8 image"):
        cnn.check_fits({"blocks": 3, "stride": 2}, models.DataShape(1, 8, 10))


def test_cnn_settings_change_the_network():
    cnn = models.get("cnn")
    small = cnn.build({"blocks": 1, "channels": 8, "fc_width": 0})
    big = cnn.build({"blocks": 3, "channels": 32, "fc_width": 256})
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(big) > 10 * count(small)
    assert any(isinstance(m, torch.nn.AvgPool2d) for m in cnn.build({"pool": "avg"}).modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in cnn.build({"batch_norm": False}).modules())
