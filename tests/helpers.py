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


def kill_session(proc) -> None:
    """SIGKILL a command started with ``start_new_session=True`` and everything it started (Ray's processes share
    its session): kill -9, as a crash or an out-of-memory killer would."""
    import signal
    import subprocess

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    subprocess.run(["pkill", "-9", "-s", str(proc.pid)], check=False)


def search_command(capsys, *args: str) -> SimpleNamespace:
    """``python -m search.run ARGS`` run in this process, for commands refused before Ray starts
    (seconds faster than a new interpreter importing torch): its exit status and output."""
    from search.run import main

    code = main(list(args))
    out = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


def planned(*flags: str, shape=None, val_images: int = 5_000, full_train: int = 55_000):
    """The settings ``search.run`` plans from FLAGS for MNIST-sized data (55,000 training and 5,000 validation
    images), or for ``shape``, without reading any data (``search.command.settings.ask``, then ``search.command.plan.plan``)."""
    import models
    from search.command.plan import plan
    from search.command.parser import build_parser
    from search.command.settings import ask

    shape = shape or models.DataShape(train_images=full_train)
    return plan(ask(build_parser().parse_args(list(flags))), shape, val_images, full_train)


def every_model() -> list[str]:
    """Every registered model, and one of timm's named on the command line only (made on first use, in each
    process)."""
    import models

    return models.names() + ["timm:regnetx_002"]
