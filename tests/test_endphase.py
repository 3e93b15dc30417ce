"""Each model's end phase (its winner's test, bundle and cost to run) runs as Ray work as soon as its study is
done, beside the other trials: it gives what one after another gives, and a kill in it loses nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from helpers import ROOT, run_cli
from test_resume import kill_session

ARGS = ["--model", "cnn,resnet18", "--gpus", "0", "--smoke", "--num-samples", "1", "--no-pretrained",
        "--no-dashboard", "--verbose", "0"]
SAME = ["model", "test_acc", "test_f1", "test_loss", "best_val_acc", "best_epoch", "bundled", "onnx_exported"]


def bundle_bytes(folder, model: str) -> tuple[bytes, bytes]:
    return ((folder / "models" / model / "weights.safetensors").read_bytes(),
            (folder / "models" / model / "model.onnx").read_bytes())


@pytest.mark.integration
def test_end_phase_beside_the_trials_gives_the_serial_results_and_a_kill_in_it_resumes(tmp_path, data_dir):
    env = {"SEARCH_DATA_DIR": str(data_dir)}
    # One CPU: every trial and every end phase one after another.
    serial = run_cli("search.run", *ARGS, "--cpus", "1", "--storage-path", str(tmp_path), "--name", "serial", env=env)
    assert serial.returncode == 0, serial.stdout[-3000:] + serial.stderr[-3000:]

    # Two CPUs: the first model's end phase runs while the other still trains; killed once one model has ended.
    folder = tmp_path / "packed"
    proc = subprocess.Popen([sys.executable, "-m", "search.run", *ARGS, "--cpus", "2", "--storage-path",
                             str(tmp_path), "--name", "packed"], cwd=ROOT, start_new_session=True,
                            env={**os.environ, **env, "RAY_USAGE_STATS_ENABLED": "0"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list((folder / "ended").glob("*.predictions.parquet")):
        time.sleep(0.1)
    ended_first = sorted(p.name.split(".")[0] for p in (folder / "ended").glob("*.predictions.parquet"))
    kill_session(proc)
    assert ended_first, "no model's end phase ended before the kill"
    assert not (folder / "finalists.parquet").exists(), "the search was killed after its end"
    resumed = run_cli("search.run", "--resume", "--storage-path", str(tmp_path), "--name", "packed", env=env)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    packed = pd.read_parquet(folder / "finalists.parquet").set_index("model", drop=False)
    alone = pd.read_parquet(tmp_path / "serial" / "finalists.parquet").set_index("model", drop=False)
    assert sorted(packed["model"]) == ["cnn", "resnet18"]  # each model once, none lost or repeated
    assert packed["cost_latency_ms"].gt(0).all() and packed["end_s"].gt(0).all()
    assert packed["cost_latency_runs"].eq(10).all()  # --smoke's brief measurement, said in every row
    predictions = pd.read_parquet(folder / "predictions.parquet")
    assert not predictions.duplicated(["model", "stage", "index"]).any()
    for model in ended_first:  # finished before the kill, beside the other model's trial: as when alone
        pd.testing.assert_series_equal(packed.loc[model, SAME], alone.loc[model, SAME], check_names=False)
        assert bundle_bytes(folder, model) == bundle_bytes(tmp_path / "serial", model)
    for model in ("cnn", "resnet18"):
        card = (folder / "models" / model / "card.json").read_text()
        assert '"cost"' in card  # measured after the resume where the kill came first
    leftovers = [p.name for p in (folder / "models").iterdir() if p.name.startswith(".")]
    assert not leftovers, f"half-written bundles left behind: {leftovers}"


class FakeRef:
    """A finisher call that has not returned until the test says so."""

    def __init__(self, function, args, threads):
        self.function, self.args, self.threads, self.done, self.error = function, args, threads, False, None


class FakeFinisher:
    """Stands for the ``Finisher`` actor: its calls wait for the test."""

    def __init__(self, started: list):
        started.append(self)
        self.calls: list[FakeRef] = []
        self.call = self  # ``finisher.call.remote(...)``

    def remote(self, function, *args):
        ref = FakeRef(function, args[:-1], args[-1])
        self.calls.append(ref)
        return ref


def test_finishers_take_end_phases_side_by_side_and_a_cost_to_run_alone(tmp_path, monkeypatch):
    import ray

    from helpers import planned
    from search.finish import endphase
    from search.finish.work import Ended

    started: list[FakeFinisher] = []
    monkeypatch.setattr(endphase, "start_finisher", lambda: FakeFinisher(started))
    monkeypatch.setattr(endphase, "node_cpus", lambda: 2)
    monkeypatch.setattr(ray, "put", lambda value: value)
    monkeypatch.setattr(ray, "wait", lambda refs, num_returns, timeout: ([r for r in refs if r.done], []))

    def get(ref):
        if ref.error:
            raise ref.error
        return Ended(ref.args[0], "t", None, pd.DataFrame()) if ref.function == "finish" else None

    monkeypatch.setattr(ray, "get", get)
    settings = planned("--model", "cnn,vit,resnet18", "--gpus", "0", "--cpus", "2", "--no-pretrained",
                       "--storage-path", str(tmp_path))
    ending = endphase.EndPhase(settings, None, say=lambda line: None, slots=2)
    assert ending.pool == 2 and len(started) == 1  # one finisher at the start, a second only when needed
    for model in ("cnn", "vit", "resnet18"):
        ending._submit("finish", model, "finish", {"num_cpus": 1, "num_gpus": 0}, model)
    assert len(started) == 2 and ending.slots_held() == 2 and len(ending.queue) == 1  # two at once, one a slot
    assert [c.threads for f in started for c in f.calls] == [1, 1]  # a slot's threads while trials run
    ending._submit("cost", "cnn", "cost", {"num_cpus": 1, "num_gpus": 1}, "cnn")
    first = started[0].calls[0]
    first.done = True
    ending.searching = False
    ending.collect()
    assert ending.slots_held() == 2 and started[0].calls[1].args == ("resnet18",)  # the queued end phase, not the cost
    assert started[0].calls[1].threads == 1  # after the trials: two cores shared by the two under way
    for f in started:
        for call in f.calls:
            call.done = True
    ending.collect()
    costs = [c for f in started for c in f.calls if c.function == "cost"]
    assert len(costs) == 1 and costs[0].threads == 2 and ending.slots_held() == 0  # alone, with every core
    ending._submit("cost", "vit", "cost", {"num_cpus": 1, "num_gpus": 1}, "vit")
    assert len([c for f in started for c in f.calls if c.function == "cost"]) == 1  # not beside the first
    # A finisher dead past its restart is replaced: the next calls go to a live one.
    costs[0].error = ray.exceptions.RayActorError()
    costs[0].done = True
    ending.collect()
    assert len(started) == 3 and started[2] in ending.finishers
