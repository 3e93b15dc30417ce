"""Shared fixtures. Tests that need real MNIST read it from $SEARCH_DATA_DIR; under CI=true a
missing data directory fails the test instead of skipping it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    value = os.environ.get("SEARCH_DATA_DIR")
    path = Path(value).resolve() if value else None  # absolute: some tests run commands from elsewhere
    if path is None or not (path / "MNIST" / "raw").is_dir():
        message = f"real MNIST needed: set SEARCH_DATA_DIR to a folder holding MNIST/raw (got {value!r})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def searched(tmp_path_factory, data_dir):
    """One smoke search of every model on MNIST from random initialization, shared by the tests that read what a
    search of each model leaves (test_take_home: bundles, ONNX, predict; test_finetune and test_faster_rcnn: what
    their trials record): (results folder, the finished command)."""
    import shutil

    from helpers import every_model, run_cli

    out = tmp_path_factory.mktemp("every-model")
    proc = run_cli("search.run", "--model", ",".join(every_model()), "--gpus", "0", "--smoke", "--no-pretrained",
                   "--num-samples", "1", "--storage-path", str(out), "--name", "all", "--no-dashboard", "--verbose",
                   "0", "--data-dir", str(data_dir), timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    yield out / "all", proc
    shutil.rmtree(out, ignore_errors=True)  # VGG16's checkpoints and bundle alone are 2 GB


@pytest.fixture(scope="session")
def mnist_small(data_dir):
    """MNIST with a small training subset, read once for the session."""
    from trainables.data import load_dataset

    return load_dataset("mnist", data_dir, limit=(2_048, 512, 512), download=False)
