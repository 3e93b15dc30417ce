"""The search command as a user runs it: bad input is refused before Ray starts, a smoke search
writes the three Parquet files with the documented columns."""

from __future__ import annotations

import os
import sys
import time

import pandas as pd
import pytest

from helpers import ROOT, run_cli, search_command
from analysis.schema import EPOCH_COLUMNS, FINALIST_COLUMNS, PREDICTION_COLUMNS, TRIAL_COLUMNS


def test_unknown_model_lists_the_known_ones(tmp_path, capsys):
    proc = search_command(capsys, "--model", "cnn,resnet", "--storage-path", str(tmp_path))
    assert proc.returncode == 2
    assert "unknown model 'resnet'" in proc.stderr and "cnn" in proc.stderr


def test_more_gpus_than_exist_fails_fast_saying_how_many(tmp_path):
    """The one refusal run as its own process: the command exits 2 before Ray starts."""
    start = time.monotonic()
    proc = run_cli("search.run", "--model", "cnn", "--gpus", "4", "--storage-path", str(tmp_path), timeout=120)
    seconds = time.monotonic() - start
    assert proc.returncode == 2
    assert "--gpus 4 asked for, but 0 GPU(s) found" in proc.stderr
    assert seconds < 30
    assert not any(tmp_path.iterdir()), "nothing may be written for a refused run"


def test_missing_data_directory_is_explained(tmp_path, capsys):
    missing = tmp_path / "no-such-dir"
    proc = search_command(capsys, "--model", "cnn", "--data-dir", str(missing), "--storage-path", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "train-images-idx3-ubyte" in proc.stderr and str(missing / "MNIST" / "raw") in proc.stderr


@pytest.mark.parametrize("flag,value,needle", [
    ("--num-samples", "0", "--num-samples must be positive"),
    ("--max-epochs", "-1", "--max-epochs must be positive"),
    ("--dataset", "cifar", "unknown data set 'cifar': it is neither a registered name"),
    ("--train-size", "0", "--train-size must be positive"),
])
def test_bad_numbers_and_names_are_refused(tmp_path, capsys, flag, value, needle):
    proc = search_command(capsys, "--model", "cnn", flag, value, "--storage-path", str(tmp_path))
    assert proc.returncode == 2 and needle in proc.stderr


def test_training_subset_larger_than_the_training_images_is_refused(tmp_path, data_dir, capsys):
    proc = search_command(capsys, "--model", "cnn", "--train-size", "56000", "--data-dir", str(data_dir),
                   "--storage-path", str(tmp_path))
    assert proc.returncode == 2
    assert "--train-size 56000: only 55000 training images remain after the 5000 validation images" in proc.stderr
    assert not any(tmp_path.iterdir())


def test_training_subset_and_sampler_reach_the_settings(tmp_path):
    from search.command.parser import build_parser
    from search.command.settings import ask

    def settings(*flags):
        return ask(build_parser().parse_args(["--storage-path", str(tmp_path), *flags]))

    assert settings().data.limit == (None, None, None) and settings().sampler == "tpe"
    assert settings("--train-size", "10000", "--sampler", "random").data.limit == (10_000, None, None)
    assert settings("--train-size", "300", "--smoke").data.limit == (300, 256, 512)  # --smoke's other caps stay
    assert settings("--sampler", "random").sampler == "random"


def test_the_search_and_the_train_command_take_the_same_data_flags(tmp_path, capsys):
    """One set of data options (imagesets.options): the same flags, read the same way, refused the same way."""
    from imagesets.options import DataOptions
    from search.command.parser import build_parser as search_parser
    from trainables.train import build_parser as train_parser
    from trainables.train import main as train_main

    argv = ["--dataset", "fashion_mnist", "--data-dir", "/d", "--image-size", "32", "--channels", "3",
            "--cache-dir", "/c", "--val-size", "500", "--train-size", "1000"]
    expected = DataOptions("fashion_mnist", "/d", 32, 3, "/c", 500, (1000, None, None))
    assert DataOptions.from_args(search_parser().parse_args(argv)) == expected
    assert DataOptions.from_args(train_parser().parse_args(argv)) == expected
    assert train_main(["--dataset", "no_such_set", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "--dataset" in err and "no_such_set" in err and "fashion_mnist" in err  # the registered ones, named


@pytest.mark.integration
def test_smoke_search_end_to_end(tmp_path, data_dir):
    proc = run_cli("search.run", "--model", "cnn,vit", "--gpus", "0", "--smoke", "--storage-path", str(tmp_path),
                   "--name", "smoke", "--no-dashboard", "--data-dir", str(data_dir), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    folder = tmp_path / "smoke"
    trials = pd.read_parquet(folder / "trials.parquet")
    epochs = pd.read_parquet(folder / "epochs.parquet")
    finalists = pd.read_parquet(folder / "finalists.parquet")

    assert list(trials.columns[: len(TRIAL_COLUMNS)]) == TRIAL_COLUMNS
    assert {"config.lr", "config.batch_size", "config.blocks", "config.patch_size"} <= set(trials.columns)
    assert trials.loc[trials["model"] == "cnn", "config.patch_size"].isna().all()  # not a CNN setting
    assert trials["model"].value_counts().to_dict() == {"cnn": 2, "vit": 2}
    assert set(trials["status"]) <= {"completed", "stopped_early"}
    assert (trials["device"] == "cpu").all() and (trials["dataset"] == "mnist").all()
    assert trials["pretrained"].isna().all()  # does not apply to a CNN trained from scratch

    assert list(epochs.columns) == EPOCH_COLUMNS
    assert epochs.groupby("trial_id")["epoch"].max().to_dict() == trials.set_index("trial_id")["epochs"].to_dict()

    assert list(finalists.columns[: len(FINALIST_COLUMNS)]) == FINALIST_COLUMNS
    assert sorted(finalists["model"]) == ["cnn", "vit"]
    for winner in finalists.itertuples():
        own = trials[trials["model"] == winner.model]
        assert winner.trial_id == own.loc[own["best_val_acc"].idxmax(), "trial_id"]
        assert 0.1 < winner.test_acc <= 1.0 and 0.0 < winner.test_f1 <= 1.0  # above chance, on 512 images
    assert finalists.set_index("model").loc["cnn", "test_acc"] > 0.3
    predictions = pd.read_parquet(folder / "predictions.parquet")
    assert list(predictions.columns) == PREDICTION_COLUMNS and len(predictions) == 2 * 512
    for winner in finalists.itertuples():  # each winner's predictions make its reported accuracy
        own = predictions[predictions["model"] == winner.model]
        assert (own["trial_id"] == winner.trial_id).all()
        assert (own["label"] == own["predicted"]).mean() == pytest.approx(winner.test_acc)

    # Every step after the trials says when it starts and ends; each winner's test has its own lines, and each
    # model's end phase says when it began (as soon as its study was done, beside the other model's trials).
    for step in ("Writing trials.parquet, epochs.parquet and classes.parquet", "Each model's winner tested once",
                 "Writing the report"):
        assert step in proc.stdout and "done in" in proc.stdout[proc.stdout.index(step):]
    assert "  cnn (" in proc.stdout and "testing on 512 images ..." in proc.stdout
    assert "  cnn: its study is done; testing and bundling its winner" in proc.stdout
    assert "test accuracy" in proc.stdout
    board = proc.stdout[proc.stdout.index("test_acc"):]  # the leaderboard
    assert "\ncnn " in board and "\nvit " in board
    assert not list(folder.glob(".*.tmp")), "no temporary export files may be left behind"
    report = folder / "report" / "report.md"
    assert f"Report:  {report}" in proc.stdout and "| vit |" in report.read_text().replace("| smoke ", "")
    assert "## Is the difference real?" in report.read_text()  # cnn and vit compared image by image

    again = run_cli("search.run", "--model", "cnn", "--smoke", "--storage-path", str(tmp_path), "--name", "smoke",
                    "--no-dashboard", "--data-dir", str(data_dir))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_help_says_what_the_smoke_run_pins_for_each_model():
    import models
    from search.command.parser import build_parser

    text = " ".join(build_parser().format_help().split())
    smoke = text[text.index("--smoke"):]
    for name in models.builtin_names():
        for key, value in models.get(name).smoke_config.items():
            assert f"{key}={value}" in smoke, (name, key)
    assert "1,024/256/512 train/val/test images" in smoke


def test_unwritable_storage_is_refused(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = search_command(capsys, "--model", "cnn", "--storage-path", str(blocker / "results"))
    assert proc.returncode == 2 and "is not writable" in proc.stderr


def test_per_model_budgets_on_the_command_line(tmp_path):
    from helpers import planned
    from search.command.settings import UsageError

    def plans(*flags):
        return {p.name: (p.max_epochs, p.grace_period)
                for p in planned("--model", "cnn,vit", "--storage-path", str(tmp_path), *flags).plans}

    import models
    assert plans() == {n: (models.get(n).max_epochs, models.get(n).grace_period) for n in ("cnn", "vit")}
    assert plans("--max-epochs", "4") == {"cnn": (4, 1), "vit": (4, 3)}
    assert plans("--max-epochs", "vit=20,cnn=2", "--grace-period", "vit=5") == {"cnn": (2, 1), "vit": (20, 5)}
    with pytest.raises(UsageError, match="'alexnet' is not among the chosen models"):
        plans("--max-epochs", "alexnet=3")
    with pytest.raises(UsageError, match="grace-period 4 is longer than cnn's budget of 2"):
        plans("--grace-period", "4", "--max-epochs", "vit=20,cnn=2")
    # The model's own epochs follow the data's size, so a first rung beyond them is judged once the data is known.
    flags = ("--model", "cnn", "--storage-path", str(tmp_path), "--grace-period", "4")
    with pytest.raises(UsageError, match="grace-period 4 is longer than cnn's budget of 3"):
        planned(*flags)
    small = planned(*flags, full_train=20_000)
    assert (small.plans[0].max_epochs, small.plans[0].grace_period) == (9, 4)


@pytest.mark.integration
@pytest.mark.slow
def test_eight_trial_search_reaches_99_percent(tmp_path, data_dir):
    """The issue's acceptance run (about 5 minutes on 2 cores): `pytest -m slow` runs it."""
    proc = run_cli("search.run", "--model", "cnn", "--gpus", "0", "--num-samples", "8", "--max-epochs", "3",
                   "--storage-path", str(tmp_path), "--name", "cnn-8x3", "--no-dashboard", "--data-dir",
                   str(data_dir), "--verbose", "0", timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = pd.read_parquet(tmp_path / "cnn-8x3" / "trials.parquet")
    finalists = pd.read_parquet(tmp_path / "cnn-8x3" / "finalists.parquet")
    assert len(trials) == 8 and (trials["status"] == "stopped_early").any()
    assert finalists.loc[finalists["model"] == "cnn", "test_acc"].item() >= 0.99


@pytest.mark.integration
def test_storage_uri_gets_tune_state_checkpoints_and_the_exports(tmp_path, data_dir, monkeypatch):
    """A URI (here file://, resolved by pyarrow like s3:// or gs://) is Tune's storage; the exports are
    complete locally in ./results/<name> and then uploaded beside Tune's files."""
    remote = tmp_path / "bucket"
    uri = f"file://{remote}"
    proc = run_cli("search.run", "--model", "cnn", "--gpus", "0", "--smoke", "--num-samples", "1", "--max-epochs", "1",
                   "--grace-period", "1", "--storage-path", uri, "--name", "remote", "--no-dashboard",
                   "--data-dir", str(data_dir), timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"Uploaded to {uri}/remote" in proc.stdout
    for folder in (remote / "remote", tmp_path / "results" / "remote"):
        assert pd.read_parquet(folder / "trials.parquet")["status"].tolist() == ["completed"]
        assert (folder / "report" / "report.md").is_file() and (folder / "command.json").is_file()
    assert any((remote / "remote").glob("cnn_*/checkpoint_*/model.pt"))  # Tune wrote its checkpoints there
    again = run_cli("search.run", "--model", "cnn", "--storage-path", uri, "--name", "remote", timeout=120,
                    cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_unusable_storage_uri_is_refused_before_ray_starts(tmp_path, capsys):
    proc = search_command(capsys, "--model", "cnn", "--storage-path", "nosuchscheme://bucket/x")
    assert proc.returncode == 2 and "--storage-path nosuchscheme://bucket/x cannot be opened" in proc.stderr


def test_set_epochs_is_refused_for_max_epochs(tmp_path, capsys):
    proc = search_command(capsys, "--model", "cnn", "--set", "epochs=9", "--storage-path", str(tmp_path))
    assert proc.returncode == 2 and "--set epochs" in proc.stderr and "--max-epochs" in proc.stderr


def test_a_chosen_dashboard_port_that_is_taken_or_no_port_is_refused_before_ray_starts(tmp_path, capsys):
    import socket

    from search.command.ports import RAY_DASHBOARD_PORT, port_note
    from search.command.parser import build_parser
    from search.command.settings import ask

    with socket.socket() as holder:  # another search's dashboard
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        proc = search_command(capsys, "--model", "cnn", "--dashboard-port", str(taken), "--storage-path", str(tmp_path))
        assert proc.returncode == 2 and f"--dashboard-port {taken} is taken" in proc.stderr
    for port in ("99999", "0"):
        proc = search_command(capsys, "--model", "cnn", "--dashboard-port", port, "--storage-path", str(tmp_path))
        assert proc.returncode == 2 and f"--dashboard-port {port} is not a port" in proc.stderr
    assert not any(tmp_path.iterdir())
    settings = ask(build_parser().parse_args(["--model", "cnn", "--cpus", "2"]))
    note = port_note(settings, RAY_DASHBOARD_PORT + 1)  # Ray took the next port: where, and what is shared
    assert f"dashboard is on port {RAY_DASHBOARD_PORT + 1}" in note and "--cpus and --gpus" in note and "2 CPUs" in note
    assert port_note(settings, RAY_DASHBOARD_PORT) is None


@pytest.mark.integration
def test_two_searches_started_together_each_get_a_dashboard_port_and_finish(tmp_path, data_dir):
    """A script that starts two searches with ``&``: both exit 0, each naming its own dashboard port (Ray binds
    the port itself and takes the next on a clash; a port probed free before Ray bound it was lost to the other)."""
    import re
    import subprocess

    command = [sys.executable, "-m", "search.run", "--model", "cnn", "--gpus", "0", "--cpus", "1", "--smoke",
               "--num-samples", "1", "--max-epochs", "1", "--set", "channels=16", "--data-dir", str(data_dir),
               "--verbose", "0"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    procs = [subprocess.Popen([*command, "--storage-path", str(tmp_path / str(i))], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    ports = [re.search(r"Ray dashboard: http://127\.0\.0\.1:(\d+)", out).group(1) for out in outputs]
    assert ports[0] != ports[1], outputs
