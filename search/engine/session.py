"""Ray for the search: started embedded here with exactly the resources the search may use, or a running
cluster joined (``--address``); and where to watch the search once it runs."""

from __future__ import annotations

import os

import ray

from search.command.cluster import AUTH_MODE, join_refused
from search.command.ports import port_note, taken_port_error
from search.command.settings import Settings
from search.engine.studies import OPTUNA_FILE


THREAD_TIMEOUT = "TUNE_FUNCTION_THREAD_TIMEOUT_S"  # Tune's wait for a reused process's last trial (start_ray)


def worker_env() -> dict:
    """A cluster's workers do not inherit this process's environment: the user's model files (``--models-from``) and
    Tune's wait for a reused process are named to them through the job's runtime environment (each node loads the
    file at the same path). Ray started here passes its environment to its workers itself."""
    from models import external

    files = os.environ.get(external.ENV)
    return {"env_vars": {THREAD_TIMEOUT: os.environ[THREAD_TIMEOUT], **({external.ENV: files} if files else {})}}


class ClusterJoinError(Exception):
    """``--address`` names a cluster that could not be joined (the message says what to do)."""


def start_ray(settings: Settings) -> None:
    """Ray embedded in this process with exactly the CPUs and GPUs the search may use, or, with
    ``--address``, a connection to a running cluster (whose nodes bring their own resources)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Keeping only the best checkpoint forces a state snapshot at each one: cheap here, so Tune's
    # warning about it would only be noise in the progress output.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # A reused process waits this long for its last trial's thread to end before it takes the next trial (Tune's
    # default, 2 s, failed a ViT trial in CI: VGG16's thread, on a loaded machine, ended later).
    os.environ.setdefault(THREAD_TIMEOUT, "120")
    if settings.address:
        try:
            context = ray.init(address=settings.address, log_to_driver=settings.verbose > 1, runtime_env=worker_env())
        except (ConnectionError, ray.exceptions.AuthenticationError) as e:  # unreachable, or no token / not its token
            raise ClusterJoinError(join_refused(settings.address, e)) from None
        print(describe_cluster(settings))
    else:
        if os.environ.get("RAY_ADDRESS"):
            print(f"note: RAY_ADDRESS is set ({os.environ['RAY_ADDRESS']}) but --address is not: starting a "
                  "separate Ray here; pass --address auto to run on that cluster")
        try:
            context = ray.init(
                address="local",  # a new Ray here, even if this machine also runs a cluster (`ray start`)
                num_cpus=settings.cpus,
                num_gpus=settings.gpus,
                include_dashboard=settings.dashboard,
                dashboard_host=settings.dashboard_host,
                # None: Ray's dashboard binds 8265 or, taken, the next free port itself (no race with a search
                # starting beside this one); a chosen port was checked, but may be taken since.
                dashboard_port=settings.dashboard_port,
                log_to_driver=settings.verbose > 1,
            )
        except ValueError as e:
            taken = taken_port_error(settings, e)
            if taken is None:
                raise
            raise taken from None
    url = context.dashboard_url if settings.dashboard or settings.address else None
    note = port_note(settings, int(url.rsplit(":", 1)[-1])) if url and not settings.address else None
    if note:
        print(note)
    print(monitoring_help(settings, url))


def describe_cluster(settings: Settings) -> str:
    """The cluster the search joined; a cluster still short of GPUs is waiting for its autoscaler."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    total = ray.cluster_resources()
    text = (f"Ray cluster at {settings.address}: {len(nodes)} node(s), {total.get('CPU', 0):g} CPUs, "
            f"{total.get('GPU', 0):g} GPUs. Results go to {settings.tune_storage}: every node must reach it "
            "(a shared filesystem path or a storage URI).")
    if settings.gpus and total.get("GPU", 0) < settings.gpus:
        text += (f"\nnote: --gpus {settings.gpus} but the cluster has {total.get('GPU', 0):g} GPU(s) now; trials "
                 "wait until its autoscaler adds GPU nodes (cluster.yaml: max_workers)")
    return text


def monitoring_help(settings: Settings, dashboard_url: str | None) -> str:
    """Where to watch the search: the Ray dashboard and optuna-dashboard over the studies."""
    lines = []
    if dashboard_url:
        port = dashboard_url.rsplit(":", 1)[-1]
        lines.append(f"Ray dashboard: http://{dashboard_url}  (Actors: trial processes, each shown as the trial "
                     "it runs, e.g. cnn_3f2a1_00004)")
        if os.environ.get(AUTH_MODE) == "token":
            # Ray's token authentication (on by default since Ray 2.5x) guards the dashboard and its API.
            lines.append("  it asks for Ray's token: print it with `ray get-auth-token` (or read ~/.ray/auth_token, "
                         "or $RAY_AUTH_TOKEN if you set one) and paste it into the prompt")
        if dashboard_url.startswith(("127.0.0.1", "localhost")) and not settings.address:
            lines.append(f"  from another machine: ssh -L {port}:127.0.0.1:{port} THIS_HOST, then open "
                         f"http://127.0.0.1:{port}")
    lines.append(f"Optuna studies: pip install optuna-dashboard && optuna-dashboard {settings.folder / OPTUNA_FILE}")
    return "\n".join(lines)
