"""The persistent local Prefect server of `make serve`: started in the background
(scheduler on), waited for until /api/health answers, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

SERVER_START_SECONDS = 120.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def api_url(host: str, port: int) -> str:
    reach = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{reach}:{port}/api"


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def start_server(
    host: str = "127.0.0.1",
    port: int = 4200,
    home: str | Path | None = None,
    log: str | Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = SERVER_START_SECONDS,
) -> tuple[subprocess.Popen, str]:
    """`prefect server start` in the background (scheduler on), once /api/health answers: (process, API URL)."""
    url = api_url(host, port)
    if healthy(url):
        raise RuntimeError(f"a server already answers on {url}: use it with PREFECT_API_URL={url} and no --server")
    child_env = {**os.environ, **(env or {})}
    if home is not None:
        child_env["PREFECT_HOME"] = str(home)
    child_env.pop("PREFECT_API_URL", None)  # the server itself is no client of another one
    child_env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    prefect_home = Path(child_env.get("PREFECT_HOME") or Path.home() / ".prefect")
    prefect_home.mkdir(parents=True, exist_ok=True)
    log_path = Path(log) if log else prefect_home / "server.log"
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port), "--scheduler"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_env,
            start_new_session=True,  # Ctrl-C reaches it through stop_server, after the deployment is paused
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited with status {process.returncode}; see {log_path}")
        if healthy(url):
            return process, url
        time.sleep(0.25)
    stop_server(process)
    raise RuntimeError(f"prefect server did not answer on {url} within {timeout:.0f} s; see {log_path}")


def stop_server(process: subprocess.Popen, timeout: float = 20.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def public_api_url(local: str, host: str, port: int, given: str | None = None) -> str:
    """The API URL to hand to flows (and through them to Dask workers on other machines)."""
    if given:
        return given.rstrip("/")
    if host not in ("0.0.0.0", "::", ""):
        return local
    public = f"http://{socket.gethostname()}:{port}/api"
    if healthy(public):
        return public
    print(
        f"designs serve: {public} does not answer here; flows use {local} (pass --api-url for workers elsewhere)",
        file=sys.stderr,
    )
    return local
