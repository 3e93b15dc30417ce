"""After a search, its winners as models people use: every registered model's bundle reloads in a fresh
process with its test predictions, ONNX graphs agree with torch, ``trainables.predict`` scores new labelled
images, names bad files, and exits as documented; the README's ONNX lines run without this project;
``--refit`` end to end."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pandas as pd
import pytest
from PIL import Image

from helpers import ROOT, every_model, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("every-model")]  # one worker runs conftest's search
SMOKE_TEST_IMAGES = 512  # search.command.settings.SMOKE's test cap


def smoke(out, name: str, data_dir, *flags: str):
    proc = run_cli("search.run", "--gpus", "0", "--smoke", "--no-pretrained", "--num-samples", "1", "--storage-path",
                   str(out), "--name", name, "--no-dashboard", "--verbose", "0", "--data-dir", str(data_dir), *flags,
                   timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / name, proc


SEARCHED = every_model()  # what conftest's ``searched`` fixture searches


@pytest.fixture(scope="module")
def test_split(data_dir):
    from trainables.data import load_dataset

    return load_dataset("mnist", data_dir, limit=(1_024, 256, SMOKE_TEST_IMAGES), download=False).test


def write_image_folder(root, split, names) -> None:
    """The test split as PNG files in ImageFolder layout, one folder per class."""
    for i, (image, label) in enumerate(zip(split.images.numpy(), split.labels.numpy())):
        path = root / names[label] / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0]).save(path)


def test_every_model_is_bundled_and_reloads_in_a_fresh_process_with_its_test_predictions(searched, data_dir):
    folder, proc = searched
    assert sorted(p.name for p in (folder / "models").iterdir()) == sorted(SEARCHED)
    assert f"python -m trainables.predict {folder}" in proc.stdout
    code = f"""
import json, numpy as np, pandas as pd
from trainables.bundle import Bundle
from trainables.data import load_dataset
test = load_dataset("mnist", {str(data_dir)!r}, limit=(1024, 256, {SMOKE_TEST_IMAGES}), download=False).test
expected = pd.read_parquet({str(folder / "predictions.parquet")!r})
out = {{}}
for model, rows in expected.groupby("model"):
    classes = Bundle.load({str(folder / "models")!r} + "/" + model, "cpu").predict(test.images.numpy()).classes
    out[model] = int((classes != rows.sort_values("index")["predicted"].to_numpy()).sum())
print(json.dumps(out))
"""
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    differing = json.loads(run.stdout.strip().splitlines()[-1])
    assert differing == {name: 0 for name in SEARCHED}


def test_each_card_says_what_is_needed_to_use_the_model(searched):
    folder, _ = searched
    finalists = pd.read_parquet(folder / "finalists.parquet").set_index("model")
    for name in SEARCHED:
        card = json.loads((folder / "models" / name / "card.json").read_text())
        assert card["config"]["model"] == name and card["config"]["epochs"] == 2
        assert card["input"]["channels"] == 1 and card["input"]["image_size"] == 28
        assert card["class_names"] == [str(i) for i in range(10)] and len(card["normalization"]["mean"]) == 1
        assert card["metrics"]["test_acc"] == pytest.approx(finalists.loc[name, "test_acc"])
        assert card["selection"]["val_acc"] == pytest.approx(finalists.loc[name, "best_val_acc"])
        assert card["training"]["stage"] == "search" and "--smoke" in card["command"]
        assert card["cost"]["latency_ms"] > 0 and finalists.loc[name, "cost_latency_ms"] > 0
        assert {"torch", "torchvision"} <= set(card["versions"])
        assert "timm" in card["versions"] or not name.startswith("timm:")


def test_onnx_graphs_agree_with_torch_and_a_model_that_cannot_export_says_why(searched, test_split):
    from trainables.bundle import Bundle, onnx_session, parity, run_onnx

    folder, _ = searched
    finalists = pd.read_parquet(folder / "finalists.parquet").set_index("model")
    images = test_split.images.numpy()
    for name in SEARCHED:
        card = json.loads((folder / "models" / name / "card.json").read_text())
        if name == "faster_rcnn":  # torch.export cannot trace a detector's data-dependent shapes (torch 2.14)
            assert not card["onnx"]["exported"] and "depend on the data" in card["onnx"]["reason"]
            assert not (folder / "models" / name / "model.onnx").exists()
            assert "depend on the data" in finalists.loc[name, "onnx_reason"]
            continue
        assert card["onnx"]["exported"] and finalists.loc[name, "onnx_exported"], card["onnx"]
        onnx_logits = run_onnx(onnx_session(folder / "models" / name / "model.onnx"), images)
        torch_logits = Bundle.load(folder / "models" / name, "cpu").predict(images).logits
        assert parity(torch_logits, onnx_logits)["passed"]
    report = (folder / "report" / "report.md").read_text()
    assert "## Using the winners" in report and "no ONNX: torch.export cannot trace" in report
    assert re.search(r"\*\*all: deploy [\w:]+\*\*", report)


def test_predict_scores_the_test_split_as_an_image_folder_with_the_finalists_accuracy(searched, test_split, tmp_path):
    folder, _ = searched
    finalists = pd.read_parquet(folder / "finalists.parquet")
    best = finalists.loc[finalists["best_val_acc"].idxmax()]  # the default: chosen on validation
    names = pd.read_parquet(folder / "classes.parquet")["name"].tolist()
    write_image_folder(tmp_path / "labelled", test_split, names)
    proc = run_cli("trainables.predict", str(folder), str(tmp_path / "labelled"), "--out", str(tmp_path / "p.csv"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"Accuracy {best['test_acc']:.4f}" in proc.stdout and proc.stdout.startswith(best["model"])
    table = pd.read_csv(tmp_path / "p.csv")
    assert len(table) == SMOKE_TEST_IMAGES
    assert {"path", "predicted", "probability", "label", "top3", "top3_probability"} <= set(table.columns)
    assert (table["predicted"] == table["label"]).mean() == pytest.approx(best["test_acc"])
    confusion = pd.read_csv(tmp_path / "p.confusion.csv", index_col=0)
    assert confusion.to_numpy().sum() == SMOKE_TEST_IMAGES


def test_predict_names_bad_files_predicts_the_rest_and_exits_as_documented(searched, test_split, tmp_path):
    folder, _ = searched
    write_image_folder(tmp_path / "mixed", test_split.subset(20), [str(i) for i in range(10)])
    good = sorted((tmp_path / "mixed").rglob("*.png"))[0]
    (tmp_path / "mixed" / "truncated.png").write_bytes(good.read_bytes()[:40])
    (tmp_path / "mixed" / "text.png").write_text("not an image")
    proc = run_cli("trainables.predict", str(folder), str(tmp_path / "mixed"), "--model", "cnn", "--top-k", "2",
                   "--out", str(tmp_path / "mixed.csv"))
    assert proc.returncode == 1
    assert "truncated.png" in proc.stderr and "text.png" in proc.stderr and "2 of 22" in proc.stderr
    assert len(pd.read_csv(tmp_path / "mixed.csv")) == 20
    only_bad = run_cli("trainables.predict", str(folder), str(tmp_path / "mixed" / "*.png"),
                       "--out", str(tmp_path / "none.csv"))
    assert only_bad.returncode == 2 and "no image could be read" in only_bad.stderr


def readme_onnx_example() -> str:
    text = (ROOT / "README.md").read_text()
    return re.search(r"<!-- onnx-example -->\s*```python\n(.*?)```", text, re.S).group(1)


def test_the_readmes_onnx_lines_run_with_only_onnxruntime_numpy_and_pillow(searched, test_split, tmp_path):
    folder, _ = searched
    Image.fromarray(test_split.images.numpy()[0, 0]).save(tmp_path / "digit.png")
    example = readme_onnx_example().replace("results/<name>/models/cnn", str(folder / "models" / "cnn"))
    example = example.replace('"digit.png"', repr(str(tmp_path / "digit.png")))
    # This project off the path (its folder, and the editable install's finder), then the README's lines.
    isolate = (f"import sys, importlib.util; root = {str(ROOT)!r}\n"
               "sys.path = [p for p in sys.path if p not in ('', '.', root)]\n"
               "sys.meta_path = [f for f in sys.meta_path if '__editable__' not in getattr(f, '__module__', '')]\n"
               "sys.path_hooks = [h for h in sys.path_hooks if '__editable__' not in getattr(h, '__module__', '')]\n"
               "sys.path_importer_cache.clear()\n"
               "assert all(importlib.util.find_spec(m) is None for m in ('trainables', 'search', 'models'))\n")
    proc = subprocess.run([sys.executable, "-c", isolate + example], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = pd.read_parquet(folder / "predictions.parquet").query("model == 'cnn' and index == 0")["predicted"]
    assert proc.stdout.strip().splitlines()[-1] == str(int(expected.iloc[0]))


def test_refit_trains_the_winner_on_train_and_validation_tests_and_bundles_it(tmp_path, data_dir):
    folder, _ = smoke(tmp_path, "refit", data_dir, "--model", "cnn", "--refit")
    row = pd.read_parquet(folder / "finalists.parquet").iloc[0]
    assert row["bundled"] == "refit" and row["refit_epochs"] == row["best_epoch"]
    assert row["refit_train_images"] == 1_024 + 256  # the smoke run's training and validation images
    assert 0 <= row["refit_test_acc"] <= 1 and row["refit_train_s"] > 0 and not pd.isna(row["test_acc"])
    predictions = pd.read_parquet(folder / "predictions.parquet")
    assert predictions.groupby("stage").size().to_dict() == {"refit": SMOKE_TEST_IMAGES, "search": SMOKE_TEST_IMAGES}
    card = json.loads((folder / "models" / "cnn" / "card.json").read_text())
    assert card["training"]["stage"] == "refit" and card["metrics"]["test_acc"] == pytest.approx(row["refit_test_acc"])
    refit_correct = predictions.query("stage == 'refit'").eval("label == predicted").mean()
    assert refit_correct == pytest.approx(row["refit_test_acc"])
    assert "refit on training + validation images" in (folder / "report" / "report.md").read_text()
