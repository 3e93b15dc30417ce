"""Monitoring in a real browser: a live search's Ray dashboard, opened with headless Chromium
(Debian's ``chromium``, which ``.ci/run`` installs), shows the search's trials by name; the dashboard
listens on 127.0.0.1 and keeps Ray's token authentication on."""

from __future__ import annotations

import http.server
import json
import os
import queue
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from helpers import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.integration]
CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)


@pytest.fixture
def chromium() -> str:
    if CHROMIUM is None:
        message = "headless Chromium needed (apt-get install chromium; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
        return json.loads(response.read())


@contextmanager
def token_proxy(upstream: str, token: str):
    """A local proxy adding the Authorization header: Chromium has no flag to send one, and this is
    what the dashboard's login prompt does for a person (it stores the token as a cookie)."""

    class Forward(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection", "accept-encoding")}
            request = urllib.request.Request(upstream + self.path, headers={**headers, "Authorization": f"Bearer {token}"})
            try:
                response = urllib.request.urlopen(request, timeout=30)
            except urllib.error.HTTPError as e:
                response = e
            body = response.read()
            self.send_response(response.status)
            for key, value in response.headers.items():
                if key.lower() not in ("transfer-encoding", "connection", "content-length", "content-encoding"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def lines_of(proc: subprocess.Popen) -> queue.Queue:
    """The process's output, line by line, without blocking the test."""
    out: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [out.put(line) for line in proc.stdout], daemon=True).start()
    return out


def wait_for(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")


def browse(chromium: str, url: str, profile: Path, *mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,900",
                           f"--user-data-dir={profile}", "--virtual-time-budget=15000", *mode, url],
                          capture_output=True, text=True, timeout=120)


def test_dashboard_in_a_browser_shows_the_live_searchs_trials(tmp_path, data_dir, chromium):
    token, port = secrets.token_hex(16), free_port()
    env = {**os.environ, "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_AUTH_MODE", None)  # Ray's default: token authentication on
    proc = subprocess.Popen(
        [sys.executable, "-m", "search.run", "--model", "vit", "--smoke", "--num-samples", "2", "--max-epochs", "30",
         "--grace-period", "30", "--time-budget", "50", "--dashboard-port", str(port), "--storage-path", str(tmp_path),
         "--name", "live", "--data-dir", str(data_dir), "--verbose", "0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output, seen = lines_of(proc), []

    def dashboard_line():
        while not output.empty():
            seen.append(output.get())
            if seen[-1].startswith("Ray dashboard: http://"):
                return seen[-1]
        assert proc.poll() is None, "".join(seen)[-3000:]

    try:
        line = wait_for(dashboard_line, 180, "the dashboard's address")
        base = f"http://127.0.0.1:{port}"
        assert line.startswith(f"Ray dashboard: {base}")  # bound to 127.0.0.1 by default

        with pytest.raises(urllib.error.HTTPError) as refused:
            get_json(f"{base}/api/v0/actors")
        assert refused.value.code == 401  # token authentication is on

        def running_trials():
            actors = get_json(f"{base}/api/v0/actors?detail=1", token)["data"]["result"]["result"]
            return [a for a in actors if a.get("repr_name", "").startswith("vit_") and a["state"] == "ALIVE"]

        trials = wait_for(running_trials, 180, "a running trial actor")
        with token_proxy(base, token) as proxied:
            shot = tmp_path / "dashboard.png"
            browse(chromium, f"{proxied}/#/actors", tmp_path / "profile", f"--screenshot={shot}")
            dom = browse(chromium, f"{proxied}/#/actors", tmp_path / "profile", "--dump-dom").stdout
        assert proc.poll() is None, "the search ended before the browser looked"
        assert shot.is_file() and shot.stat().st_size > 20_000, "no screenshot of the page"
        assert "Authentication Token Required" not in dom
        assert trials[0]["repr_name"] in dom  # the trial, by model and id, in the actor view
        assert "SearchTrial" in dom
        if os.environ.get("DASHBOARD_SCREENSHOT"):
            shutil.copy(shot, os.environ["DASHBOARD_SCREENSHOT"])
        print(f"screenshot: {shot}")
    finally:
        try:
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
    while not output.empty():
        seen.append(output.get())
    assert proc.returncode == 0, "".join(seen)[-3000:]
    assert (tmp_path / "live" / "trials.parquet").is_file()
    assert (tmp_path / "live" / "optuna.journal").is_file()  # optuna-dashboard reads this
