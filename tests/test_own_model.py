"""A network of the user's own (``--models-from``): the README's example, run as written from a folder outside the
repository, searched beside a built-in model, killed (kill -9) and resumed, bundled with the file that defined it, predicted from in a fresh
process; and mistakes in such a file named with its line, before Ray starts."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import ROOT, kill_session, run_cli, search_command


@pytest.fixture(autouse=True)
def registry_as_it_was():
    """What a test loads in this process (its models, and the variable that hands them to Ray's workers) goes with it."""
    import models
    from models import external

    # Not monkeypatch: an absent variable it deletes is not restored as absent once the command sets it, and every
    # later test's search would inherit it (measured: pytest 8's monkeypatch.delenv records nothing then).
    saved = os.environ.pop(external.ENV, None)
    before, loaded = set(models.names()), dict(external._LOADED)
    yield
    os.environ.pop(external.ENV, None)
    if saved is not None:
        os.environ[external.ENV] = saved
    for name in set(models.names()) - before:
        models.unregister(name)
    external._LOADED.clear()
    external._LOADED.update(loaded)


def readme_own_model_example() -> str:
    text = (ROOT / "README.md").read_text()
    return re.search(r"<!-- own-model-example -->\s*```python\n(.*?)```", text, re.S).group(1)


def own_file(folder, text: str, name: str = "my_models.py"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


@pytest.mark.integration
def test_the_readmes_own_model_is_searched_bundled_and_predicted_from_outside_the_repository(tmp_path, data_dir):
    elsewhere = tmp_path / "elsewhere"
    file = own_file(elsewhere, readme_own_model_example())
    # And a module of a package on PYTHONPATH, with a relative import: every worker imports it as a module too.
    own_file(tmp_path / "lib" / "zoo", "", "__init__.py")
    own_file(tmp_path / "lib" / "zoo", "from models.config import from_flat as flat\n", "parts.py")
    own_file(tmp_path / "lib" / "zoo", readme_own_model_example().replace('name="tiny_mlp"', 'name="zoo_mlp"').replace(
        "from models.config import from_flat", "from .parts import flat as from_flat"), "mlp.py")
    env = {"SEARCH_DATA_DIR": str(data_dir), "PYTHONPATH": str(tmp_path / "lib")}
    folder = elsewhere / "out" / "own"
    # Killed (kill -9) once the user's model trains, then resumed from another folder without --models-from.
    search = subprocess.Popen(
        [sys.executable, "-m", "search.run", "--models-from", "my_models.py", "--models-from", "zoo.mlp", "--model",
         "tiny_mlp,zoo_mlp,cnn", "--gpus", "0", "--smoke", "--num-samples", "1", "--no-dashboard", "--verbose", "0",
         "--storage-path", "out", "--name", "own"], cwd=elsewhere, env={**os.environ, **env, "RAY_USAGE_STATS_ENABLED": "0"},
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=(tmp_path / "search.err").open("w"))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and search.poll() is None and \
            not any(f.stat().st_size for f in folder.glob("tiny_mlp_*/result.json")):
        time.sleep(0.2)
    assert search.poll() is None, (tmp_path / "search.err").read_text()[-3000:]
    kill_session(search)
    assert not (folder / "trials.parquet").exists(), "the search ended before it was killed"
    proc = run_cli("search.run", "--resume", "--name", "own", "--storage-path", str(folder.parent), cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    finalists = pd.read_parquet(folder / "finalists.parquet").set_index("model")
    assert sorted(finalists.index) == ["cnn", "tiny_mlp", "zoo_mlp"] and finalists.loc["tiny_mlp", "test_acc"] > 0.1
    assert json.loads((folder / "models" / "zoo_mlp" / "card.json").read_text())["origin"]["module"] == "zoo.mlp"
    assert bool(finalists.loc["tiny_mlp", "onnx_exported"])
    card = json.loads((folder / "models" / "tiny_mlp" / "card.json").read_text())
    assert card["origin"]["file"] == str(file.resolve())
    assert card["origin"]["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    assert "origin" not in json.loads((folder / "models" / "cnn" / "card.json").read_text())
    saved = json.loads((folder / "command.json").read_text())  # --resume finds the file from anywhere
    assert str(file.resolve()) in json.dumps(saved)

    # A fresh process, from another folder, without --models-from: the card's file is loaded.
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "blank.png")
    predicted = run_cli("trainables.predict", str(folder), str(tmp_path / "blank.png"), "--model", "tiny_mlp",
                        "--out", str(tmp_path / "p.csv"), cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    rows = pd.read_csv(tmp_path / "p.csv", dtype=str)
    assert len(rows) == 1 and rows["predicted"].iloc[0] in [str(d) for d in range(10)]
    # The file changed since: still loaded, with a warning; gone: a message naming it.
    file.write_text(file.read_text() + "\n# edited\n")
    changed = run_cli("trainables.predict", str(folder), str(tmp_path / "blank.png"), "--model", "tiny_mlp",
                      "--out", str(tmp_path / "p2.csv"), cwd=tmp_path)
    assert changed.returncode == 0 and "changed since this bundle was made" in changed.stderr
    file.unlink()
    gone = run_cli("trainables.predict", str(folder), str(tmp_path / "blank.png"), "--model", "tiny_mlp",
                   "--out", str(tmp_path / "p3.csv"), cwd=tmp_path)
    assert gone.returncode == 2 and str(file.resolve()) in gone.stderr and "Traceback" not in gone.stderr


@pytest.mark.parametrize("mistake, line, says", [
    ("raise RuntimeError('not ready')\n", 1, "RuntimeError: not ready"),  # at import
    ("x = (\n", 1, "SyntaxError"),
    ("import models\n", 0, "registers no model"),
])
def test_a_file_that_cannot_load_exits_2_naming_its_line(tmp_path, capsys, mistake, line, says):
    file = own_file(tmp_path, mistake, "broken.py")
    run = search_command(capsys, "--models-from", str(file), "--model", "cnn", "--gpus", "0")
    assert run.returncode == 2 and says in run.stderr
    assert (f"{file}:{line}:" if line else f"{file}:") in run.stderr


def test_a_space_that_draws_an_unknown_setting_is_refused_with_the_users_line(tmp_path, capsys, data_dir):
    example = readme_own_model_example()
    bad = example.replace('trial.suggest_float("dropout", 0.0, 0.5)', 'trial.suggest_float("dropuot", 0.0, 0.5)')
    file = own_file(tmp_path, bad, "typo.py")
    run = search_command(capsys, "--models-from", str(file), "--model", "tiny_mlp", "--gpus", "0", "--smoke",
                         "--data-dir", str(data_dir), "--storage-path", str(tmp_path / "out"))
    assert run.returncode == 2 and "dropuot" in run.stderr, run.stderr
    register_line = next(i for i, text in enumerate(bad.splitlines(), 1) if text.startswith("models.register("))
    assert f"{file}:{register_line}:" in run.stderr  # the settings its register call gave the search
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("trials.parquet"))


def test_a_missing_file_or_module_is_named(capsys):
    run = search_command(capsys, "--models-from", "no_such_models.py", "--model", "cnn")
    assert run.returncode == 2 and "--models-from no_such_models.py: no such file" in run.stderr
    run = search_command(capsys, "--models-from", "no_such_package.models", "--model", "cnn")
    assert run.returncode == 2 and "nor an importable module" in run.stderr
