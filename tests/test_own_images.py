"""Every registered model searched end to end on data that is not MNIST: a folder of colour images a
user brings, and scikit-learn's 8x8 digits; class names reach the exports and the report."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import models
from analysis.schema import CLASS_COLUMNS
from helpers import run_cli
from test_imagesets import write_folder

pytestmark = pytest.mark.integration


def smoke(tmp_path, name: str, *flags: str):
    proc = run_cli("search.run", "--model", "all", "--gpus", "0", "--smoke", "--no-pretrained", "--num-samples", "1",
                   "--storage-path", str(tmp_path / "out"), "--name", name, "--no-dashboard", "--verbose", "0",
                   "--cache-dir", str(tmp_path / "cache"), *flags, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, tmp_path / "out" / name


def test_every_model_searches_a_folder_of_colour_images(tmp_path):
    root = write_folder(tmp_path / "shapes", classes=3, per_class=15, modes=("RGB", "RGBA", "P"),
                        formats=("png", "png", "bmp"))
    (root / "class_1" / "notes.txt").write_text("skipped, and counted")
    proc, folder = smoke(tmp_path, "rgb", "--dataset", str(root))
    assert "Data: shapes (3x32x32, 3 classes)" in proc.stdout and "1 file(s) that are not images skipped" in proc.stdout
    trials = pd.read_parquet(folder / "trials.parquet")
    assert sorted(trials["model"]) == sorted(models.builtin_names()) and (trials["dataset"] == "shapes").all()
    assert set(trials["status"]) == {"completed"}
    finalists = pd.read_parquet(folder / "finalists.parquet")
    assert sorted(finalists["model"]) == sorted(models.builtin_names())
    classes = pd.read_parquet(folder / "classes.parquet")
    assert list(classes.columns) == CLASS_COLUMNS and classes["name"].tolist() == ["class_0", "class_1", "class_2"]
    assert classes["test"].tolist() == [3, 3, 3]  # a fifth of each class, carved stratified
    record = json.loads((folder / "dataset.json").read_text())
    assert (record["source"], record["channels"], record["image_size"]) == (str(root.resolve()), 3, 32)
    assert record["test_carved"] and record["split_seed"] == 0 and len(record["mean"]) == 3
    predictions = pd.read_parquet(folder / "predictions.parquet")
    assert predictions["label"].between(0, 2).all() and predictions["predicted"].between(0, 2).all()
    report = (folder / "report" / "report.md").read_text()
    assert "## The data" in report and "## Per class" in report and "| class_2 |" in report
    assert (folder / "report" / "confusion_faster_rcnn.png").is_file()
    per_class = pd.read_csv(folder / "report" / "per_class.csv")
    assert set(per_class["name"]) == {"class_0", "class_1", "class_2"} and len(per_class) == 3 * len(models.builtin_names())


def test_every_model_searches_scikit_learns_digits(tmp_path):
    # --no-refit: the winners' refit on small data is the colour folder's (above) and test_small_data's to check
    proc, folder = smoke(tmp_path, "digits", "--dataset", "digits", "--no-refit")
    assert "Data: digits (1x8x8, 10 classes)" in proc.stdout
    # --verbose 0 keeps the steps quiet too
    assert "Each model's winner tested once" not in proc.stdout and "its study is done" not in proc.stdout
    trials = pd.read_parquet(folder / "trials.parquet")
    assert sorted(trials["model"]) == sorted(models.builtin_names()) and set(trials["status"]) == {"completed"}
    finalists = pd.read_parquet(folder / "finalists.parquet").set_index("model")
    assert finalists.loc["cnn", "test_acc"] > 0.3  # well above chance (0.1) after two epochs
    record = json.loads((folder / "dataset.json").read_text())
    assert record["image_size"] == 8 and record["class_names"] == [str(d) for d in range(10)]
    assert record["sizes"]["test"] == 359
    # A classical baseline in every search: on digits an RBF SVC on the raw pixels is hard to beat, and the
    # report says so plainly when no (smoke-trained) searched model beats it.
    baselines = pd.read_parquet(folder / "baselines.parquet").set_index("model")
    assert baselines.loc["svc_rbf", "test_acc"] > 0.95 and not baselines["capped"].any()
    report = (folder / "report" / "report.md").read_text()
    assert "## A classical baseline" in report and "No searched model beats the classical baseline" in report
