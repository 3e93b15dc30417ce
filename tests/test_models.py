"""Every registered model, through the registry: builds, trains a step, and has a clean search space."""

from __future__ import annotations

import optuna
import pytest
import torch

import models
from search.experiment import space_with_pretrained
from models.config import ConfigError, TrainConfig, split_config

optuna.logging.set_verbosity(optuna.logging.WARNING)
ALL = models.names()
PLAIN = (int, float, str, bool, type(None))


def sampled_configs(name: str, n: int = 6) -> list[dict]:
    """Configs drawn from the model's space by a seeded random sampler, plus its default. Models
    fine-tuned from pretrained weights are sampled as ``--no-pretrained`` searches them (no weights
    can be downloaded here; test_finetune.py covers loading them)."""
    spec = models.get(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    configs = [dict(spec.default_config)]
    if spec.pretrained_weights is not None:
        configs = [{**configs[0], **spec.scratch_config}]
    for _ in range(n):
        trial = study.ask()
        if spec.pretrained_weights is not None:
            extra = space_with_pretrained(name, (False,), trial) or {}
        else:
            extra = spec.space(trial) or {}
        configs.append({**trial.params, **extra})
    return configs


@pytest.mark.parametrize("name", ALL)
def test_training_step_and_predictions_through_the_task(name):
    """Through its registry entry's task: a training loss every trainable parameter gets a gradient
    from, and one predicted class and ten class scores per image."""
    spec = models.get(name)
    for config in sampled_configs(name, n=3 if spec.task.rates else 6):
        model = spec.build(config).train()
        x, y = torch.randn(3, 1, 28, 28), torch.tensor([0, 4, 9])
        loss = spec.task.loss(model, x, y)
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad), config
        with torch.no_grad():
            out = spec.task.predict(model.eval(), x)
        assert out.logits.shape == (3, 10) and out.classes.shape == (3,)
        assert ((out.classes >= 0) & (out.classes < 10)).all()
        assert set(out.counts) == set(spec.task.rates)


@pytest.mark.parametrize("name", ALL)
def test_search_space_gives_only_valid_constants(name):
    spec = models.get(name)
    for config in sampled_configs(name, n=20):
        assert all(isinstance(v, PLAIN) for v in config.values()), config
        split_config(config, spec.config_cls, name)  # validates every key and value


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
    assert models.parse_models("all") == ALL
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


def test_cnn_settings_change_the_network():
    cnn = models.get("cnn")
    small = cnn.build({"blocks": 1, "channels": 8, "fc_width": 0})
    big = cnn.build({"blocks": 3, "channels": 32, "fc_width": 256})
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(big) > 10 * count(small)
    assert any(isinstance(m, torch.nn.AvgPool2d) for m in cnn.build({"pool": "avg"}).modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in cnn.build({"batch_norm": False}).modules())
