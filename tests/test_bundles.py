"""A winner as a model people use, without Ray: the bundle's files and card, its reload in another process,
its ONNX graph against torch, its cost to run, and the choice and scoring that ``trainables.predict`` makes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import models
from analysis.deployment import cost_table, recommend
from analysis.load import Results
from trainables.predict import PredictError, choose_bundle, gather
from helpers import ROOT
from trainables import cost
from trainables.batches import normalize
from trainables.bundle import Bundle, parity, run_onnx, onnx_session, write_bundle
from trainables.card import CARD_FILE, DECODING, WEIGHTS_FILE
from trainables.inference import Classifier, score

MEAN, STD = (0.13,), (0.31,)


def cnn_classifier(seed: int = 0) -> Classifier:
    spec = models.get("cnn")
    torch.manual_seed(seed)
    network = spec.build(spec.default_config, models.BuildContext(models.DataShape(), MEAN, STD))
    return Classifier(network, MEAN, STD, spec.task).eval()


def card_for(classifier_model: str = "cnn", val_acc: float = 0.9) -> dict:
    spec = models.get(classifier_model)
    return {"format": "hpsearch-bundle", "format_version": 1, "model": classifier_model, "description": "",
            "task": "classification", "config": {"model": classifier_model, **spec.default_config}, "params": 1,
            "input": {"dtype": "uint8", "layout": "NCHW", "channels": 1, "image_size": 28, "range": [0, 255],
                      "decoding": DECODING},
            "normalization": {"mean": list(MEAN), "std": list(STD)}, "class_names": [f"c{i}" for i in range(10)],
            "channels_last": False, "data": {"name": "mnist", "source": "mnist"},
            "metrics": {"val_acc": val_acc, "test_acc": 0.5, "test_f1": 0.5, "test_loss": 1.0},
            "selection": {"experiment": "e", "trial_id": "t", "val_acc": val_acc},
            "training": {"stage": "search", "epochs": 1}, "command": ["python", "-m", "search.run"]}


@pytest.fixture(scope="module")
def bundle_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundles") / "models" / "cnn"
    images = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8).numpy()
    written = write_bundle(folder, cnn_classifier(), card_for(), images)
    yield folder, written, images
    shutil.rmtree(folder.parent.parent, ignore_errors=True)


def test_the_classifier_takes_decoded_images_and_normalizes_them_as_training_did():
    classifier = cnn_classifier()
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(classifier(images), classifier.network(normalize(images, MEAN, STD)))


def test_a_bundle_holds_weights_card_readme_and_a_checked_onnx_graph(bundle_folder):
    folder, card, _ = bundle_folder
    assert {p.name for p in folder.iterdir()} == {WEIGHTS_FILE, CARD_FILE, "README.md", "model.onnx"}
    saved = json.loads((folder / CARD_FILE).read_text())
    assert saved["onnx"]["exported"] and saved["onnx"]["parity"]["passed"]
    assert saved["onnx"]["parity"]["images"] == 300 and saved["onnx"]["parity"]["max_abs_logit_diff"] <= 1e-3
    assert {"torch", "torchvision", "onnxruntime"} <= set(saved["versions"])
    assert "model.onnx" in (folder / "README.md").read_text()
    assert not list(folder.parent.glob(".cnn-*"))  # the staging folder was renamed into place


def test_the_weights_are_safetensors_without_optimizer_state(bundle_folder):
    from safetensors.torch import load_file

    folder, _, _ = bundle_folder
    tensors = load_file(folder / WEIGHTS_FILE)
    assert set(tensors) == set(cnn_classifier().network.state_dict())


def test_a_bundle_reloads_in_a_fresh_process_with_the_same_predictions(bundle_folder, tmp_path):
    folder, _, images = bundle_folder
    np.save(tmp_path / "images.npy", images)
    code = ("import sys, numpy as np; from trainables.bundle import Bundle; "
            f"b = Bundle.load({str(folder)!r}, 'cpu'); s = b.predict(np.load({str(tmp_path / 'images.npy')!r})); "
            f"np.save({str(tmp_path / 'logits.npy')!r}, s.logits)")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    expected = score(cnn_classifier(), images).logits
    assert np.array_equal(np.load(tmp_path / "logits.npy").argmax(1), expected.argmax(1))
    assert np.abs(np.load(tmp_path / "logits.npy") - expected).max() < 1e-4


def test_the_onnx_graph_takes_any_batch_of_uint8_images(bundle_folder):
    folder, _, images = bundle_folder
    session = onnx_session(folder / "model.onnx")
    for n in (1, 3, 300):
        assert run_onnx(session, images[:n]).shape == (n, 10)


def test_parity_tells_a_tie_from_a_disagreement():
    torch_logits = np.array([[1.0, 0.9999995], [2.0, 0.0]], dtype=np.float32)
    tie = parity(torch_logits, np.array([[0.9999990, 0.9999998], [2.0, 0.0]], dtype=np.float32))
    assert tie["ties"] == 1 and tie["classes_differ"] == 0 and tie["passed"]
    wrong = parity(torch_logits, np.array([[1.0, 0.9999995], [0.0, 2.0]], dtype=np.float32))
    assert wrong["classes_differ"] == 1 and not wrong["passed"]


def test_predict_refuses_images_of_another_shape(bundle_folder):
    bundle = Bundle.load(bundle_folder[0], "cpu")
    with pytest.raises(ValueError, match=r"uint8 images of shape \(N, 1, 28, 28\)"):
        bundle.predict(np.zeros((2, 3, 28, 28), np.uint8))


def test_cost_to_run_is_measured_at_batch_one_and_in_bulk():
    measured = cost.measure(cnn_classifier(), 1, 28, "cpu", bulk_batch=32)
    assert measured.latency_ms > 0 and measured.latency_p90_ms >= measured.latency_ms
    assert measured.throughput_ips > 0 and measured.bulk_batch == 32 and measured.threads == torch.get_num_threads()
    assert measured.peak_memory_mb >= cost.weights_mb(cnn_classifier())  # at least the weights
    assert set(measured.columns()) >= {"cost_latency_ms", "cost_throughput_ips", "cost_peak_memory_mb"}
    assert measured.latency_runs == 50


def test_a_smoke_search_measures_the_cost_briefly_and_says_so():
    measured = cost.measure(cnn_classifier(), 1, 28, "cpu", effort=cost.QUICK)
    assert measured.latency_runs == 10 and measured.bulk_batch == 16 and measured.throughput_ips > 0
    assert measured.columns()["cost_latency_runs"] == 10


def test_the_default_bundle_is_the_best_on_validation_never_on_test(tmp_path):
    for model, val_acc, test_acc in (("cnn", 0.95, 0.90), ("vit", 0.93, 0.99)):
        folder = tmp_path / "models" / model
        folder.mkdir(parents=True)
        card = card_for(model, val_acc)
        card["metrics"]["test_acc"] = test_acc
        (folder / CARD_FILE).write_text(json.dumps(card))
        (folder / WEIGHTS_FILE).write_bytes(b"")
    assert choose_bundle(tmp_path, None)[0].name == "cnn"
    assert choose_bundle(tmp_path, "vit")[0].name == "vit"
    with pytest.raises(PredictError, match="no bundle of it.*bundled: cnn, vit"):
        choose_bundle(tmp_path, "alexnet")


def test_a_folder_of_class_folders_is_labelled_and_other_inputs_are_expanded(tmp_path):
    for name in ("a/1.png", "a/deep/2.png", "b/3.png", "b/notes.txt"):
        (tmp_path / "labelled" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "labelled" / name).write_bytes(b"")
    labelled = gather([str(tmp_path / "labelled")], ["a", "b", "c"])
    assert [p.split("labelled/")[1] for p in labelled.files] == ["a/1.png", "a/deep/2.png", "b/3.png"]
    assert labelled.labels == [0, 0, 1]
    plain = gather([str(tmp_path / "labelled"), str(tmp_path / "labelled" / "b" / "notes.txt"),
                    str(tmp_path / "*" / "a" / "*.png"), str(tmp_path / "nothing.png")], ["x", "y"])
    assert plain.labels is None and len(plain.files) == 4  # folder (3 images), the named file; the glob adds none new
    assert [reason for _, reason in plain.missing] == ["no such file or folder"]


def scripted_results(accs: dict[str, float], latencies: dict[str, float], wrong: dict[str, int]) -> Results:
    """Finalists with costs, and predictions on 200 images where each model gets ``wrong[m]`` of the first wrong."""
    finalists = pd.DataFrame([dict(experiment="e", model=m, test_acc=accs[m], test_f1=accs[m], bundled="search",
                                   cost_latency_ms=latencies[m], cost_throughput_ips=1.0, cost_bulk_batch=64,
                                   cost_peak_memory_mb=1.0, weights_mb=1.0, params=1, onnx_exported=True,
                                   cost_device="cpu", cost_threads=2) for m in accs])
    predictions = pd.concat([pd.DataFrame(dict(experiment="e", model=m, index=range(200), label=0,
                                               predicted=[1] * wrong[m] + [0] * (200 - wrong[m]))) for m in accs])
    empty = pd.DataFrame()
    return Results(empty, empty, finalists, [], predictions)


def test_the_recommendation_is_the_fastest_winner_not_significantly_less_accurate():
    results = scripted_results({"big": 0.99, "small": 0.98, "tiny": 0.80}, {"big": 10.0, "small": 1.0, "tiny": 0.1},
                               {"big": 2, "small": 4, "tiny": 40})
    (pick,) = recommend(results, cost_table(results))
    assert (pick.model, pick.best) == ("small", "big") and pick.p_value > 0.05  # tiny is significantly worse
    assert "10.0x faster" in pick.sentence() and "p = " in pick.sentence()
