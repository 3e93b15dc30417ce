"""timm's architectures as models of the search (models/timm_zoo.py): any name of timm's list, checked without
importing torch; weights from a file the test writes are the weights trained from; missing weights and bad names
refused before Ray. The smoke search, bundles, ONNX and predict of timm models are tests/test_take_home.py's (its
search includes every registered timm model and one named on the command line only)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import models
from helpers import ROOT, search_command
from models.finetune import WeightsError, ensure_weights
from models.timm_zoo import TimmWeights, architectures

REGISTERED = [name for name in models.names() if name.startswith("timm:")]
ARCH = "mobilenetv3_small_050"  # the smallest registered one: quick to build


def test_the_list_read_from_timms_source_is_timms_own():
    import timm

    assert architectures() == frozenset(timm.list_models())


def test_a_misspelled_name_exits_2_with_close_names_before_torch_or_timm_is_imported(tmp_path):
    code = ("import sys; from search.run import main; code = main(sys.argv[1:]); "
            "print('IMPORTED', 'torch' in sys.modules, 'timm' in sys.modules); sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code, "--model", "cnn,timm:convnext_atoo", "--storage-path",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "unknown timm architecture 'convnext_atoo'" in proc.stderr and "timm:convnext_atto" in proc.stderr
    assert "Traceback" not in proc.stderr and "IMPORTED False False" in proc.stdout


def test_every_registered_timm_model_and_any_other_is_a_model_of_the_search():
    assert REGISTERED and all(models.get(name).pretrained_weights == TimmWeights(name[5:]) for name in REGISTERED)
    other = models.get("timm:regnetx_002")  # not registered: made on first use, the same object after
    assert other is models.get("timm:regnetx_002") and "timm:regnetx_002" not in models.names()
    assert not [name for name in models.parse_models("all") if name.startswith("timm:")]  # all: the built-in ones


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    """``<arch>.safetensors`` as timm's hub keeps it (ImageNet-shaped: 3 channels, 1,000 classes), one tensor
    changed to a value no initialization gives, so that the test sees whether it was loaded."""
    import timm
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("timm-weights")
    torch.manual_seed(7)
    state = {k: v.contiguous() for k, v in timm.create_model(ARCH).state_dict().items()}
    state["blocks.1.0.conv_dw.weight"] = torch.full_like(state["blocks.1.0.conv_dw.weight"], 0.125)
    save_file(state, folder / f"{ARCH}.safetensors")
    return folder


def test_weights_from_the_weights_folder_are_the_ones_trained_from(weights_dir):
    from safetensors.torch import load_file

    saved = load_file(weights_dir / f"{ARCH}.safetensors")
    ctx = models.BuildContext(weights_dir=str(weights_dir))  # MNIST-shaped: gray, 10 classes
    model = models.get(f"timm:{ARCH}").build({"pretrained": True}, ctx)
    state = model.net.state_dict()
    assert torch.equal(state["blocks.1.0.conv_dw.weight"], saved["blocks.1.0.conv_dw.weight"])  # the changed one
    assert torch.allclose(state["conv_stem.weight"], saved["conv_stem.weight"].sum(dim=1, keepdim=True))  # gray
    kept = [k for k in saved if not k.startswith(("conv_stem.", "classifier."))]
    assert len(kept) > 50 and all(torch.equal(state[k], saved[k]) for k in kept)
    assert model.net.get_classifier().out_features == 10
    scratch = models.get(f"timm:{ARCH}").build({"pretrained": False, "strategy": "all"}, ctx)
    assert not torch.equal(scratch.net.state_dict()["blocks.1.0.conv_dw.weight"], saved["blocks.1.0.conv_dw.weight"])


def test_the_searched_strategy_slows_or_freezes_the_backbone_and_the_head_always_trains(weights_dir):
    ctx = models.BuildContext(weights_dir=str(weights_dir))
    spec = models.get(f"timm:{ARCH}")
    slowed = spec.build({"pretrained": True, "strategy": "discriminative", "backbone_lr_mult": 0.05}, ctx)
    (backbone, mult), (head, one) = slowed.param_groups()
    assert mult == 0.05 and one == 1.0 and {id(p) for p in slowed.net.get_classifier().parameters()} <= {
        id(p) for p in head}
    frozen = spec.build({"pretrained": True, "strategy": "head"}, ctx)
    assert not any(p.requires_grad for p in frozen.backbone_parameters())
    assert all(p.requires_grad for p in frozen.net.get_classifier().parameters())


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """The Hugging Face hub as this machine has it: nothing cached, no network."""
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)


def test_missing_weights_name_the_file_both_places_and_the_way_out(tmp_path, offline_hub):
    with pytest.raises(WeightsError) as e:
        ensure_weights(TimmWeights(ARCH), tmp_path)
    message = str(e.value)
    assert f"{ARCH}.safetensors" in message and str(tmp_path) in message and "Hugging Face cache" in message
    assert "timm/mobilenetv3_small_050" in message and "--no-pretrained" in message and "no network" in message


def test_a_search_without_the_weights_is_refused_before_ray_starts(tmp_path, capsys, offline_hub):
    empty = tmp_path / "weights"
    empty.mkdir()
    proc = search_command(capsys, "--model", f"cnn,timm:{ARCH}", "--weights-dir", str(empty), "--storage-path",
                          str(tmp_path / "results"))
    assert proc.returncode == 2 and f"{ARCH}.safetensors" in proc.stderr and str(empty) in proc.stderr
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_a_setting_of_timms_own_is_searched_and_checked(tmp_path, capsys):
    import optuna

    spec = models.get(f"timm:{ARCH}")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = [study.ask() for _ in range(5)]
    for trial in drawn:
        trial.suggest_categorical("pretrained", [False])
        spec.space(trial, models.DataShape())
    assert len({t.params["drop_path_rate"] for t in drawn}) == 5
    assert all(1e-5 <= t.params["weight_decay"] <= 0.1 for t in drawn)
    proc = search_command(capsys, "--model", f"timm:{ARCH}", "--set", "drop_path_rate=1.5", "--no-pretrained",
                          "--storage-path", str(tmp_path))
    assert proc.returncode == 2 and "drop_path_rate=1.5" in proc.stderr


def test_an_architecture_without_stochastic_depth_is_searched_without_it(tmp_path, capsys):
    """DLA's constructor takes no ``drop_path_rate``: its space records 0 instead of drawing a rate that would fail
    every trial that builds it, and a rate pinned for it is refused before Ray starts."""
    import optuna

    spec = models.get("timm:dla34")
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    trial.suggest_categorical("pretrained", [False])
    assert spec.space(trial, models.DataShape())["drop_path_rate"] == 0.0 and "drop_path_rate" not in trial.params
    proc = search_command(capsys, "--model", "timm:dla34", "--set", "drop_path_rate=0.1", "--no-pretrained",
                          "--storage-path", str(tmp_path))
    assert proc.returncode == 2 and "timm's dla34 has no stochastic depth" in proc.stderr

