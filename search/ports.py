"""The Ray dashboard's port: Ray's own (8265), or the next free one when another search holds it."""

from __future__ import annotations

import socket

from search.settings import Settings, UsageError

RAY_DASHBOARD_PORT = 8265
TRIED = 20  # ports tried above Ray's before giving up


def port_free(host: str, port: int) -> bool:
    """Whether ``port`` on ``host`` can be listened on now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def choose_dashboard_port(settings: Settings) -> tuple[int | None, str | None]:
    """The port the dashboard will listen on and a note to print (or None). ``--dashboard-port`` is taken
    as given, and refused at once where something listens there (Ray would end the search with a traceback
    once it had started); by default Ray's port, or the next free one, which the note names with what the
    two searches share."""
    if not settings.dashboard or settings.address:
        return settings.dashboard_port, None
    host = settings.dashboard_host
    if settings.dashboard_port is not None:
        if not port_free(host, settings.dashboard_port):
            raise UsageError(f"--dashboard-port {settings.dashboard_port} is taken on {host} (another search's "
                             "dashboard?): choose a free port, or --no-dashboard")
        return settings.dashboard_port, None
    for port in range(RAY_DASHBOARD_PORT, RAY_DASHBOARD_PORT + TRIED):
        if port_free(host, port):
            break
    else:
        raise UsageError(f"ports {RAY_DASHBOARD_PORT}-{RAY_DASHBOARD_PORT + TRIED - 1} are all taken on {host}: pass "
                         "--dashboard-port PORT, or --no-dashboard")
    if port == RAY_DASHBOARD_PORT:
        return port, None
    return port, (f"note: port {RAY_DASHBOARD_PORT} is taken (another search on this machine?): this search's "
                  f"dashboard is on port {port}. Each search uses the CPUs and GPUs it was given "
                  f"({settings.cpus or 'all the'} CPUs, {settings.gpus} GPUs here) as if it had the machine to itself: "
                  "give each a share with --cpus and --gpus")
