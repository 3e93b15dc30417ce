"""The fine-tuned architectures (every registered model built by ``models.finetune``: VGG16,
AlexNet, ResNet-18): the offline weight-loading path, the gray-digit input adapter, the fine-tuning
strategies, and refusing to run without weights."""

from __future__ import annotations

import shutil
import time

import pytest
import torch

import models
from helpers import run_cli, search_command
from models.config import ConfigError, TrainConfig
from models.finetune import (IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD, IMAGENET_MEAN, IMAGENET_STD, FineTuneConfig,
                             WeightsError, ensure_weights, tv_weights, weights_file_name)
from models.nets.finetune import first_conv_name, fold_rgb_conv, head_name
from trainables.loop import make_optimizer

# torchvision's fine-tuned classifiers (timm's, built on the same adapter, are tests/test_timm.py's)
FINE_TUNED = [name for name in models.builtin_names() if issubclass(models.get(name).config_cls, FineTuneConfig)]


def imagenet_network(name: str) -> torch.nn.Module:
    """The torchvision network ``name`` fine-tunes, ImageNet-shaped (found by its weights' type)."""
    import torchvision.models as tvm

    weights = tv_weights(models.get(name).pretrained_weights)
    builder = next(b for b in tvm.list_models() if tvm.get_model_weights(b) is type(weights))
    return tvm.get_model(builder, weights=None)


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory):
    """A weights folder holding, under torchvision's file names, state dicts of the architectures
    that this test writes (random values, distinguishable from a fresh initialization)."""
    folder = tmp_path_factory.mktemp("weights")
    for name in FINE_TUNED:
        torch.manual_seed(123)
        state = imagenet_network(name).state_dict()
        torch.save(state, folder / weights_file_name(models.get(name).pretrained_weights))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)  # 0.8 GB of weights


@pytest.mark.parametrize("name", FINE_TUNED)
def test_pretrained_weights_are_loaded_from_the_weights_folder(name, weights_dir):
    saved = torch.load(weights_dir / weights_file_name(models.get(name).pretrained_weights), weights_only=True)
    ctx = models.BuildContext(weights_dir=str(weights_dir))
    model = models.get(name).build({"pretrained": True}, ctx)
    net, first, head = model.net, first_conv_name(imagenet_network(name)), head_name(imagenet_network(name))
    # Every pretrained layer kept its weights (buffers too: batch-norm statistics); the first conv
    # holds the RGB filters summed; the head is new and 10-way.
    assert torch.equal(net.get_submodule(first).weight, saved[f"{first}.weight"].sum(dim=1, keepdim=True))
    state = net.state_dict()
    kept = [k for k in saved if not k.startswith((f"{first}.", f"{head}."))]
    assert len(kept) > 10 and all(torch.equal(state[k], saved[k]) for k in kept)
    assert net.get_submodule(head_name(net)).out_features == 10


@pytest.mark.parametrize("name", FINE_TUNED)
def test_colour_data_keeps_the_pretrained_rgb_filters_and_gets_imagenet_normalized_input(name, weights_dir):
    saved = torch.load(weights_dir / weights_file_name(models.get(name).pretrained_weights), weights_only=True)
    shape = models.DataShape(channels=3, image_size=32, num_classes=7)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)  # CIFAR-like, per channel
    model = models.get(name).build({"pretrained": True, "input_size": 64},
                                   models.BuildContext(shape, mean, std, weights_dir=str(weights_dir)))
    first = first_conv_name(model.net)
    assert torch.equal(model.net.get_submodule(first).weight, saved[f"{first}.weight"])  # (out, 3, k, k), untouched
    assert model.net.get_submodule(head_name(model.net)).out_features == 7
    seen = {}
    model.net.get_submodule(first).register_forward_pre_hook(lambda module, inputs: seen.update(x=inputs[0]))
    pixel = torch.tensor([0.2, 0.5, 0.9])  # one colour everywhere, as the data set normalized it
    x = ((pixel - torch.tensor(mean)) / torch.tensor(std)).view(1, 3, 1, 1).expand(2, 3, 32, 32)
    assert model.eval()(x).shape == (2, 7)
    imagenet = (pixel - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(seen["x"][0, :, 5, 5], imagenet, atol=1e-5)


@pytest.mark.parametrize("name", FINE_TUNED)
def test_missing_weights_name_the_file_the_folders_and_the_way_out(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    weights = models.get(name).pretrained_weights
    with pytest.raises(WeightsError) as info:
        ensure_weights(weights, tmp_path / "empty", download=False)
    message = str(info.value)
    assert weights_file_name(weights) in message and str(tmp_path / "empty") in message
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints") in message and "--no-pretrained" in message
    with pytest.raises(WeightsError):
        models.get(name).build({"pretrained": True}, models.BuildContext(weights_dir=str(tmp_path)))


def test_offline_download_failure_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = tv_weights(models.get("alexnet").pretrained_weights)

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(type(weights), "get_state_dict", offline)
    with pytest.raises(WeightsError, match="downloading it failed.*Name or service not known"):
        ensure_weights(weights, None)


def test_folded_first_conv_equals_repeating_the_gray_channel():
    torch.manual_seed(0)
    rgb = torch.nn.Conv2d(3, 8, 3, padding=1)
    gray = torch.rand(2, 1, 16, 16)
    assert torch.allclose(fold_rgb_conv(rgb)(gray), rgb(gray.expand(-1, 3, -1, -1)), atol=1e-5)


@pytest.mark.parametrize("name", FINE_TUNED)
def test_input_is_resized_and_renormalized_on_the_way_in(name):
    size = models.get(name).config_cls().MIN_INPUT + 16
    ctx = models.BuildContext(mean=(0.1307,), std=(0.3081,))
    model = models.get(name).build({"pretrained": False, "strategy": "all", "input_size": size}, ctx)
    seen = {}

    def record(module, inputs) -> None:
        seen["x"] = inputs[0]

    model.net.get_submodule(first_conv_name(model.net)).register_forward_pre_hook(record)
    black = torch.full((2, 1, 28, 28), (0.0 - 0.1307) / 0.3081)  # a black MNIST image, data-set normalized
    assert model(black).shape == (2, 10)
    assert seen["x"].shape == (2, 1, size, size)
    assert torch.allclose(seen["x"], torch.full_like(seen["x"], (0.0 - IMAGENET_GRAY_MEAN) / IMAGENET_GRAY_STD), atol=1e-5)


@pytest.mark.parametrize("name", FINE_TUNED)
def test_the_searched_classifier_dropout_is_the_rate_of_every_dropout_before_the_head(name):
    model = models.get(name).build({"pretrained": False, "classifier_dropout": 0.3})
    rates = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    # VGG16 and AlexNet: their classifier's own two dropouts; ResNet-18 has none: one before its new head
    assert rates == ([0.3] if name == "resnet18" else [0.3, 0.3])


@pytest.mark.parametrize("name", FINE_TUNED)
def test_input_below_what_the_network_accepts_is_an_error(name):
    too_small = models.get(name).config_cls().MIN_INPUT - 1
    with pytest.raises(ConfigError, match=f"input_size={too_small} is below what this network accepts"):
        models.get(name).build({"pretrained": False, "strategy": "all", "input_size": too_small})


@pytest.mark.parametrize("name", FINE_TUNED)
def test_strategies_freeze_or_slow_the_backbone(name):
    spec = models.get(name)
    everything = spec.build({"pretrained": False, "strategy": "all"})
    assert all(p.requires_grad for p in everything.parameters())
    frozen = spec.build({"pretrained": True, "strategy": "head"}, models.BuildContext(load_weights=False))
    backbone = {id(p) for p in frozen.backbone_parameters()}
    first_conv = frozen.net.get_submodule(first_conv_name(frozen.net)).weight
    assert id(first_conv) in backbone and not any(p.requires_grad for p in frozen.backbone_parameters())
    head = frozen.net.get_submodule(head_name(frozen.net))
    assert all(p.requires_grad for p in head.parameters())
    optimizer = make_optimizer(frozen, TrainConfig(lr=0.01))
    trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not trained & backbone and {id(p) for p in head.parameters()} <= trained
    slow = spec.build({"pretrained": True, "strategy": "discriminative", "backbone_lr_mult": 0.1},
                      models.BuildContext(load_weights=False))
    lrs = sorted({round(g["lr"], 9) for g in make_optimizer(slow, TrainConfig(lr=0.01)).param_groups})
    assert lrs == pytest.approx([0.001, 0.01])
    with pytest.raises(ConfigError, match="strategy='head' with pretrained=False"):
        spec.build({"pretrained": False, "strategy": "head"})


def test_search_without_weights_stops_before_any_trial(tmp_path, capsys, monkeypatch):
    start = time.monotonic()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    proc = search_command(capsys, "--model", "vgg16,alexnet", "--gpus", "0", "--smoke", "--storage-path",
                          str(tmp_path / "out"), "--no-dashboard")
    assert proc.returncode == 2
    assert time.monotonic() - start < 30
    assert "vgg16-397923af.pth" in proc.stderr and "--no-pretrained" in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_search_flags_that_contradict_are_refused(tmp_path, capsys):
    proc = search_command(capsys, "--model", "alexnet", "--no-pretrained", "--compare-scratch",
                          "--storage-path", str(tmp_path))
    assert proc.returncode == 2 and "contradict" in proc.stderr


@pytest.mark.integration
@pytest.mark.xdist_group("every-model")  # with test_take_home's: one worker runs conftest's search
def test_smoke_search_without_pretraining_records_it(searched):
    import pandas as pd

    folder, _ = searched  # conftest: a --smoke --no-pretrained search of every model
    trials = pd.read_parquet(folder / "trials.parquet")
    trials = trials[trials["model"].isin(FINE_TUNED)]
    assert sorted(trials["model"].unique()) == sorted(FINE_TUNED)
    assert (trials["pretrained"] == False).all()  # noqa: E712  (a column of booleans)
    assert (trials["config.strategy"] == "all").all()  # from scratch, nothing is frozen
    sizes = trials.groupby("model")["config.input_size"].unique().to_dict()
    assert {m: list(v) for m, v in sizes.items()} == {"alexnet": [64], "resnet18": [32], "vgg16": [32]}  # --smoke's
    finalists = pd.read_parquet(folder / "finalists.parquet")
    assert set(FINE_TUNED) <= set(finalists["model"])


@pytest.mark.integration
def test_search_with_a_weights_folder_records_pretrained(tmp_path, weights_dir, data_dir):
    import pandas as pd

    proc = run_cli("search.run", "--model", "alexnet", "--gpus", "0", "--smoke", "--num-samples", "1",
                   "--max-epochs", "1", "--weights-dir", str(weights_dir), "--storage-path", str(tmp_path),
                   "--name", "pre", "--no-dashboard", "--data-dir", str(data_dir), "--verbose", "0",
                   env={"TORCH_HOME": str(tmp_path / "torch-home")}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = pd.read_parquet(tmp_path / "pre" / "trials.parquet")
    assert trials["pretrained"].tolist() == [True] and trials["status"].tolist() == ["completed"]
