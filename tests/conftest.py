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
def mnist_small(data_dir):
    """MNIST with a small training subset, read once for the session."""
    from trainables.data import load_dataset

    return load_dataset("mnist", data_dir, limit=(2_048, 512, 512), download=False)
