"""Across GPUs and machines, on this CPU machine: GPUs declared to Ray as a resource show how many
trials of each model run at once, and a real two-node Ray cluster on loopback runs a search given
with --address, trials landing on both nodes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import pandas as pd
import pytest
import ray
from ray import tune

import search.command.checks as checks
from helpers import planned, run_cli, search_command
from search.engine.resources import resources_for
from search.command.settings import UsageError

GPUS = 4


def plans_for(tmp_path, monkeypatch, *flags):
    """The per-model plans ``search.run`` makes from a command line, on a machine with 4 GPUs."""
    monkeypatch.setattr(checks, "gpus_found", lambda: GPUS)
    return planned(*flags, "--gpus", str(GPUS), "--no-pretrained", "--storage-path", str(tmp_path)).plans


@ray.remote(num_cpus=0)
class Gauge:
    """How many trials are inside at once, and the most there ever were."""

    def __init__(self) -> None:
        self.now, self.peak, self.gpu_ids, self.pids = 0, 0, [], set()

    def enter(self, gpu_ids: list, pid: int) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)
        self.gpu_ids.append(gpu_ids)
        self.pids.add(pid)

    def leave(self) -> None:
        self.now -= 1

    def inside(self) -> int:
        return self.now

    def report(self) -> tuple[int, list, set]:
        return self.peak, self.gpu_ids, self.pids


def run_packed(plans, models: list[str], trials: int, expect_together: int) -> tuple[int, list, set]:
    """Run ``trials`` placeholder trials, of ``models`` in turn, with the resources the search would request and
    its reused processes; each waits until ``expect_together`` are running (or 40 s), so the peak shows how many
    fit. Returns the peak, each trial's GPU ids and the worker processes that ran them."""
    gauge = Gauge.remote()

    def trial(config):
        ray.get(gauge.enter.remote(ray.get_gpu_ids(), os.getpid()))
        deadline = time.time() + 40
        while ray.get(gauge.inside.remote()) < expect_together and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # stay a moment: a trial beyond the capacity would show as a higher peak
        ray.get(gauge.leave.remote())
        tune.report({"done": 1})

    trainable = tune.with_resources(trial, resources_for(plans, use_gpu=True))
    space = {"model": tune.grid_search(models), "i": tune.grid_search(list(range(trials // len(models))))}
    tuner = tune.Tuner(trainable, param_space=space,
                       tune_config=tune.TuneConfig(max_concurrent_trials=trials, reuse_actors=True),
                       run_config=tune.RunConfig(verbose=0, storage_path=None))
    results = tuner.fit()
    assert not results.errors
    return ray.get(gauge.report.remote())


@pytest.fixture(scope="module")
def four_gpus_declared():
    """Ray told there are 4 GPUs and 16 CPUs: no CUDA needed to check how trials are packed."""
    ray.init(address="local", num_cpus=16, num_gpus=GPUS, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.integration
def test_sixteen_quarter_gpu_cnn_trials_run_together_and_vgg16_one_per_gpu(four_gpus_declared, tmp_path, monkeypatch):
    plans = plans_for(tmp_path, monkeypatch, "--model", "cnn")
    assert {p.name: p.gpus for p in plans} == {"cnn": 0.25}  # the registry's default
    peak, gpu_ids, _ = run_packed(plans, ["cnn"], trials=16, expect_together=16)
    assert peak == 16
    assert all(len(ids) == 1 for ids in gpu_ids) and len({ids[0] for ids in gpu_ids}) == GPUS  # 4 per GPU

    plans = plans_for(tmp_path, monkeypatch, "--model", "vgg16")
    peak, gpu_ids, _ = run_packed(plans, ["vgg16"], trials=6, expect_together=GPUS)
    assert peak == GPUS  # never more than one VGG16 trial per GPU
    assert all(len(ids) == 1 for ids in gpu_ids)


@pytest.mark.integration
def test_models_with_different_gpu_needs_share_one_process_per_slot(four_gpus_declared, tmp_path, monkeypatch):
    """CNN (0.25 of a GPU) and VGG16 (a whole one) in one search: one shape, the largest, so that a freed slot
    takes the next trial of either model in the same worker process; the line says what it costs."""
    monkeypatch.setattr(checks, "gpus_found", lambda: GPUS)
    chosen = planned("--model", "cnn,vgg16", "--gpus", str(GPUS), "--no-pretrained", "--storage-path", str(tmp_path))
    assert {p.name: p.gpus for p in chosen.plans} == {"cnn": 1.0, "vgg16": 1.0}
    assert "One process shape for every model" in chosen.shape_note and "cnn 0.25" in chosen.shape_note
    peak, gpu_ids, processes = run_packed(chosen.plans, ["cnn", "vgg16"], trials=12, expect_together=GPUS)
    assert peak == GPUS and len(processes) <= GPUS  # 12 trials of two models in at most one process per slot
    assert all(len(ids) == 1 for ids in gpu_ids)


def test_epoch_budgets_follow_the_kind_of_device_and_the_flags_still_win(tmp_path, monkeypatch):
    import models

    def budgets(*flags):
        return {p.name: (p.max_epochs, p.grace_period) for p in plans_for(tmp_path, monkeypatch, *flags)}

    on_gpus = budgets("--model", "cnn,vit,vgg16")
    assert on_gpus == {"cnn": (15, 2), "vit": (50, 5), "vgg16": (3, 1)}  # vgg16 has one budget for both
    assert on_gpus["cnn"] != (models.get("cnn").max_epochs, models.get("cnn").grace_period)  # the CPU one
    assert budgets("--model", "cnn,vit", "--max-epochs", "cnn=6")["cnn"] == (6, 2)
    assert budgets("--model", "vit", "--grace-period", "8")["vit"] == (50, 8)


def test_gpu_share_is_overridable_per_model(tmp_path, monkeypatch):
    plans = plans_for(tmp_path, monkeypatch, "--model", "cnn,vit", "--gpu-per-trial", "cnn=0.5",
                      "--cpu-per-trial", "vit=2")
    # One process shape for the search: the largest share and CPUs any model asks for (vit's 2 CPUs, 0.5 GPU each)
    assert {p.name: (p.gpus, p.cpus) for p in plans} == {"cnn": (0.5, 2.0), "vit": (0.5, 2.0)}
    resources = resources_for(plans, use_gpu=True)
    assert resources({"model": "cnn"}).required_resources == {"CPU": 2.0, "GPU": 0.5}  # 8 trials on 4 GPUs
    assert resources({"model": "vit"}).required_resources == resources({"model": "cnn"}).required_resources
    alone = plans_for(tmp_path, monkeypatch, "--model", "cnn", "--gpu-per-trial", "cnn=0.5")
    assert [(p.gpus, p.cpus) for p in alone] == [(0.5, 1.0)]


@pytest.mark.parametrize("flags,needle", [
    (["--gpu-per-trial", "cnn=1.5"], "a fraction of one GPU (up to 1) or whole GPUs"),
    (["--gpu-per-trial", "cnn=8"], "more than the 4 GPU(s) given with --gpus"),
    (["--gpu-per-trial", "resnet=1"], "'resnet' is not among the chosen models"),
    (["--gpu-per-trial", "cnn=half"], "'half' is not a number"),
])
def test_impossible_gpu_shares_are_refused(tmp_path, monkeypatch, flags, needle):
    with pytest.raises(UsageError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        plans_for(tmp_path, monkeypatch, "--model", "cnn", *flags)


def test_gpu_share_without_gpus_is_refused(tmp_path, capsys):
    proc = search_command(capsys, "--model", "cnn", "--gpu-per-trial", "0.5", "--storage-path", str(tmp_path))
    assert proc.returncode == 2 and "--gpu-per-trial needs GPUs" in proc.stderr


# The two-node cluster runs in a process of its own, started with a clean environment: a Ray started earlier in
# the test process (an embedded ray.init writes ~/.ray/auth_token and turns on token authentication) leaves its
# authentication settings cached there, and a cluster started from it put the nodes in token mode against a search
# that had no token: every trial actor died at once.
TWO_NODES = """
import json, sys
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, connect=False,
                  head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": False})
worker = cluster.add_node(num_cpus=1, num_gpus=0)
cluster.wait_for_nodes()
print(json.dumps({"address": cluster.address, "worker": worker.node_id}), flush=True)
for line in sys.stdin:  # "remove": the worker node dies as a machine does (no graceful drain)
    cluster.remove_node(worker, allow_graceful=False)
    print("removed", flush=True)
cluster.shutdown()
"""


class TwoNodes:
    """A head and a worker node on loopback, as Ray's own tests start them (``ray.cluster_utils.Cluster``), one
    trial slot each, in a process of its own; ``env`` is the environment a search joining it runs with."""

    def __init__(self, home) -> None:
        import json

        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        self.env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0")  # no ~/.ray/auth_token: no token mode
        self.proc = subprocess.Popen([sys.executable, "-c", TWO_NODES], env=self.env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        started = json.loads(self.proc.stdout.readline())
        self.address, self.worker_id = started["address"], started["worker"]

    def remove_worker(self) -> None:
        self.proc.stdin.write("remove\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "removed"

    def shutdown(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def two_node_cluster(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    cluster = TwoNodes(home)
    yield cluster
    cluster.shutdown()


@pytest.fixture
def token_cluster():
    """A head and a worker node on loopback, started as a user starts them (``ray start``), with Ray's token
    authentication on: (address, token). Its processes are ended by what names them (its temporary folder or
    its port), not by ``ray stop``, which would end every Ray on the machine."""
    import psutil

    temp = tempfile.mkdtemp(prefix="ray-token-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = uuid.uuid4().hex
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0"}
    start = [sys.executable, "-m", "ray.scripts.scripts", "start", "--node-ip-address=127.0.0.1", "--num-cpus=1",
             "--num-gpus=0"]
    try:
        for node in ([f"--port={port}", "--head", "--include-dashboard=false", f"--temp-dir={temp}"],
                     [f"--address=127.0.0.1:{port}"]):
            subprocess.run([*start, *node], env=env, check=True, capture_output=True, timeout=180)
        yield f"127.0.0.1:{port}", token
    finally:
        for proc in psutil.process_iter(["cmdline"]):
            line = " ".join(proc.info["cmdline"] or [])
            if temp in line or f"127.0.0.1:{port}" in line:
                proc.kill()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.integration
def test_search_through_address_runs_trials_on_both_nodes(token_cluster, tmp_path, data_dir, monkeypatch):
    address, token = token_cluster
    # As a user's shell: no RAY_AUTH_MODE (an embedded Ray earlier in this process set it), the token at hand.
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    proc = run_cli("search.run", "--address", address, "--model", "cnn", "--smoke",
                   "--num-samples", "2", "--max-epochs", "1", "--grace-period", "1", "--gpus", "0",
                   "--storage-path", str(tmp_path), "--name", "two-nodes", "--data-dir", str(data_dir),
                   # A process per trial: with reuse, the first trial's process may finish and take the
                   # second trial before the other node's process has even started (what reuse is for).
                   "--set", "batch_size=512", "--fresh-processes", env={"RAY_AUTH_TOKEN": token}, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 node(s)" in proc.stdout and "token authentication (token from RAY_AUTH_TOKEN)" in proc.stdout
    trials = pd.read_parquet(tmp_path / "two-nodes" / "trials.parquet")
    assert len(trials) == 2 and trials["node"].notna().all()
    assert trials["node"].nunique() == 2, trials[["trial_id", "node"]]
    epochs = pd.read_parquet(tmp_path / "two-nodes" / "epochs.parquet")
    assert epochs["node"].nunique() == 2


@pytest.mark.integration
def test_joining_a_token_guarded_cluster_without_its_token_says_what_to_set(token_cluster, tmp_path, data_dir,
                                                                           monkeypatch):
    from imagesets.cache import default_cache_dir

    address, _ = token_cluster
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    home = tmp_path / "home"  # no ~/.ray/auth_token, no RAY_AUTH_TOKEN: no token at hand
    home.mkdir()
    proc = run_cli("search.run", "--address", address, "--model", "cnn", "--smoke", "--gpus", "0", "--storage-path",
                   str(tmp_path), "--data-dir", str(data_dir), "--cache-dir", str(default_cache_dir()),
                   env={"HOME": str(home)}, timeout=300)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ray get-auth-token" in proc.stderr and str(home / ".ray" / "auth_token") in proc.stderr
    assert "Traceback" not in proc.stderr


def reported_nodes(folder, last_epoch: int) -> dict[str, set[str]]:
    """Trial id -> the nodes its reports came from so far, for the trials that have not reported their
    last epoch yet (from Tune's result.json files)."""
    import json

    seen = {}
    for path in folder.glob("*/result.json"):
        reports = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if reports and max(r.get("epoch", 0) for r in reports) < last_epoch:
            seen[reports[-1]["trial_id"]] = {r.get("node", "") for r in reports}
    return seen


@pytest.mark.integration
def test_a_lost_worker_nodes_trials_are_retried_on_the_remaining_node(two_node_cluster, tmp_path, data_dir):
    from helpers import ROOT

    prefix = "/" + two_node_cluster.worker_id[:8]
    folder = tmp_path / "lost"
    # Epochs of a few seconds (8192 training images in batches of 16) and four of them: the node is
    # removed while the trial it holds still has epochs to train, not after it has finished (with the
    # smoke set's 1024 images an epoch took 0.3 s, less than removing a node does).
    epochs_per_trial = 4
    proc = subprocess.Popen(
        [sys.executable, "-m", "search.run", "--address", two_node_cluster.address, "--model", "cnn", "--smoke",
         "--train-size", "8192", "--num-samples", "4", "--max-epochs", str(epochs_per_trial),
         "--grace-period", str(epochs_per_trial), "--gpus", "0", "--retries", "1",
         "--set", "batch_size=16", "--storage-path", str(tmp_path), "--name", "lost", "--data-dir", str(data_dir),
         "--no-dashboard", "--verbose", "0"],
        cwd=ROOT, env=two_node_cluster.env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)

    def on_worker() -> set[str]:
        unfinished = reported_nodes(folder, epochs_per_trial)
        return {trial for trial, nodes in unfinished.items() if any(prefix in n for n in nodes)}

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not on_worker():
        time.sleep(0.2)
    assert proc.poll() is None and on_worker(), "no trial was running on the worker node"
    two_node_cluster.remove_worker()  # its raylet and trial processes die
    cut = on_worker()  # what the node held when it was gone (a trial may have finished meanwhile)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    assert cut, "the worker node's trial finished before the node was removed; nothing was cut short"
    trials = pd.read_parquet(folder / "trials.parquet")
    epochs = pd.read_parquet(folder / "epochs.parquet")
    assert len(trials) == 4 and trials["trial_id"].is_unique and (trials["status"] != "error").all()
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert (epochs.groupby("trial_id")["epoch"].max() == epochs_per_trial).all()  # each trained its budget
    assert (folder / "baselines.parquet").is_file() and (folder / "finalists.parquet").is_file()  # the end phase too
    # The trials cut short on the lost node finished on the other one (retried from their checkpoint).
    finished_on = trials.set_index("trial_id")["node"]
    assert all(prefix not in finished_on[trial] for trial in cut), (cut, finished_on)
