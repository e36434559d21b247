"""The persistent local Prefect server of `make serve`: started in the background
(scheduler on), waited for until /api/health answers, stopped with SIGTERM.
And the temporary server of a `designs generate` run without PREFECT_API_URL,
started so that Ctrl-C and `kill -9` of the run treat it as part of the run."""

from __future__ import annotations

import os
import runpy
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

SERVER_START_SECONDS = 120.0
# The temporary server checks this often whether the run that started it is still there.
PARENT_POLL_SECONDS = 0.5
# Then it gets this long for uvicorn's own shutdown before it quits.
ORPHAN_SHUTDOWN_SECONDS = 10.0


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


def start_temporary_server() -> str | None:
    """Start the temporary Prefect server that a flow run without PREFECT_API_URL uses, before the
    flow would start it itself, in a way that suits a command run from a terminal: in a session of its
    own, so that a terminal's Ctrl-C (SIGINT to the whole foreground process group) reaches the run
    alone, which stops cleanly and stops the server at exit as Prefect does (a server stopped under the
    flow left it retrying its API calls for minutes); and watching its parent, so that a run killed
    with `kill -9` does not leave it behind. Flows then find it running (Prefect keeps one temporary
    server per process). Returns its API URL, or None where a server is configured."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None

    class RunBoundServer(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen:
            # Prefect 3.8.8's command and environment (SubprocessASGIServer._run_uvicorn_command),
            # run under exit_with_parent in a new session.
            import prefect
            from prefect.settings import get_current_settings

            uvicorn_args = ["--app-dir", str(prefect.__module_path__.parent)]
            uvicorn_args += ["--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1"]
            uvicorn_args += ["--port", str(self.port), "--log-level", "error", "--lifespan", "on"]
            env = {
                **os.environ,
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
                **get_current_settings().to_environment_variables(exclude_unset=True),
            }
            return subprocess.Popen(
                [sys.executable, "-m", "flows.server", str(os.getpid()), *uvicorn_args],
                env=env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    server = RunBoundServer()  # registered as this process's temporary server, unless one exists already
    server.start()
    return server.api_url


def exit_with_parent(parent: int) -> None:
    """In the server's process: once `parent` is gone (its parent changes: killed, even with SIGKILL),
    SIGTERM for uvicorn's own shutdown, then quit. A poll of getppid() rather than prctl's
    PR_SET_PDEATHSIG, which fires when the parent's starting thread ends, not the parent."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(ORPHAN_SHUTDOWN_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


if __name__ == "__main__":
    # python -m flows.server PARENT_PID UVICORN_ARGS...: the temporary server of start_temporary_server.
    exit_with_parent(int(sys.argv[1]))
    sys.argv = ["uvicorn", *sys.argv[2:]]
    runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)
