"""Joining a running Ray cluster (``--address``) that guards itself with Ray's token authentication.

Since Ray 2.5x, ``ray start --head`` turns token authentication on by default and writes its token to
``~/.ray/auth_token``, but a program joining with ``ray.init(address=...)`` sends the token only when
``RAY_AUTH_MODE=token`` was in its environment before Ray loaded (Ray reads its configuration once, at import):
without it, Ray retries for about 20 s, printing ``InvalidAuthToken`` each second, then raises
``ConnectionError``. A client in token mode joins a cluster without authentication as well, so where a token is
at hand the search joins in token mode; where none is, a refused join ends with what to set.
"""

from __future__ import annotations

import os
from pathlib import Path

AUTH_MODE = "RAY_AUTH_MODE"
TOKEN_VARIABLES = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")  # Ray's order: the token itself, then a file


def token_file() -> Path:
    """Ray's default token file (``ray start --head`` writes it; ``ray get-auth-token`` prints it)."""
    return Path.home() / ".ray" / "auth_token"


def token_source() -> str | None:
    """Where Ray would read a token from, or None where there is none."""
    for variable in TOKEN_VARIABLES:
        if os.environ.get(variable):
            return variable
    return str(token_file()) if token_file().is_file() else None


def prepare_join(address: str | None) -> str | None:
    """Call before Ray is imported. Joining with a token at hand and ``RAY_AUTH_MODE`` unset: token mode for
    this process and the ones it starts. A note to print, or None."""
    if not address or AUTH_MODE in os.environ:
        return None
    source = token_source()
    if source is None:
        return None
    os.environ[AUTH_MODE] = "token"
    return f"Joining with Ray's token authentication (token from {source})"


def join_refused(address: str, error: BaseException) -> str:
    """What to do when the cluster at ``address`` could not be joined."""
    if os.environ.get(AUTH_MODE, "").lower() == "token":
        token = (f"the token from {token_source()} is not the cluster's" if token_source()
                 else "token mode is on but no token is at hand")
        return (f"could not join the Ray cluster at {address} ({error}): if it is running (`ray status` on its head), "
                f"{token}: print the cluster's with `ray get-auth-token` on the head and put it in {token_file()} or "
                "RAY_AUTH_TOKEN")
    return (f"could not join the Ray cluster at {address} ({error}). If it is running (`ray status` on its head) it "
            f"probably uses token authentication (Ray's default for `ray start` since 2.5x): print its token with "
            f"`ray get-auth-token` on the head, put it in {token_file()} (or RAY_AUTH_TOKEN) here, and run again "
            f"(set {AUTH_MODE}=token if the token is elsewhere)")
