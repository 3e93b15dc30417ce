"""Helpers the tests share (fixtures are in conftest.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict | None = None, timeout: float = 600, cwd: Path | None = None):
    """Run ``python -m <args>`` from the project's root, as a user would; returns the completed process."""
    import subprocess

    full_env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd or ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def search_command(capsys, *args: str) -> SimpleNamespace:
    """``python -m search.run ARGS`` run in this process, for commands refused before Ray starts
    (seconds faster than a new interpreter importing torch): its exit status and output."""
    from search.run import main

    code = main(list(args))
    out = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)
