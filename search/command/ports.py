"""The Ray dashboard's port: Ray's own (8265) or, when another search holds it, the next one Ray could bind.

By default Ray's dashboard binds the port itself and, finding it taken, tries the next ones (Ray's
``port_retries``): the bind is the check, so two searches started together cannot both pick one port (probing a
port before Ray binds it could: both saw it free). A port the user chose is checked now, and again by Ray."""

from __future__ import annotations

import socket

from search.command.settings import Options, UsageError

RAY_DASHBOARD_PORT = 8265


def port_free(host: str, port: int) -> bool:
    """Whether ``port`` on ``host`` can be listened on now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def check_chosen_port(settings: Options) -> None:
    """Refuse a ``--dashboard-port`` that is not a port, or that something listens on now (Ray would end the search
    with a traceback once it had started)."""
    port = settings.dashboard_port
    if port is None or not settings.dashboard or settings.address:
        return
    if not 1 <= port <= 65_535:
        raise UsageError(f"--dashboard-port {port} is not a port: choose one from 1 to 65535 (Ray's is "
                         f"{RAY_DASHBOARD_PORT}), or leave it out")
    if not port_free(settings.dashboard_host, port):
        raise UsageError(f"--dashboard-port {port} is taken on {settings.dashboard_host} (another search's "
                         "dashboard?): choose a free port, leave it out (Ray then takes the next free one), or "
                         "--no-dashboard")


def taken_port_error(settings: Options, error: ValueError) -> UsageError | None:
    """Ray's refusal of a chosen port taken between our check and its bind, as a usage error (else None)."""
    if "already occupied" not in str(error):
        return None
    return UsageError(f"--dashboard-port {settings.dashboard_port} was taken on {settings.dashboard_host} as the "
                      "search started: choose a free port, leave it out, or --no-dashboard")


def port_note(settings: Options, port: int) -> str | None:
    """What to say when Ray's dashboard is not on Ray's own port (another search holds it): where it is, and that
    the two searches share the machine."""
    if settings.dashboard_port is not None or port == RAY_DASHBOARD_PORT:
        return None
    return (f"note: port {RAY_DASHBOARD_PORT} is taken (another search on this machine?): this search's "
            f"dashboard is on port {port}. Each search uses the CPUs and GPUs it was given "
            f"({settings.cpus or 'all the'} CPUs, {settings.gpus} GPUs here) as if it had the machine to itself: "
            "give each a share with --cpus and --gpus")
