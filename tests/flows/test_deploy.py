"""Nightly runs (flows/deploy.py): a served deployment of `generate` on a
schedule makes a flow run that a persistent Prefect server schedules and the
serve process executes, and `--server` starts and stops its own server.

Each test starts real processes (`prefect server start`, `python -m flows.deploy`)
with a private PREFECT_HOME, on free loopback ports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from helpers import SAMPLE_PAIRINGS

from flows.deploy import DEFAULT_NAME, flow_parameters, make_schedule
from flows.server import free_port, healthy, start_server, stop_server
from pipeline.catalog.designs import DesignCatalog
from pipeline.config import Config

ROOT = Path(__file__).resolve().parents[2]
TINY_FLAGS = ["--weights", "random", "--size", "32", "--steps", "2", "--loss-every", "1", "--shard-size", "4"]
# The scheduler looks at new deployments every second, the serve process polls every second.
FAST = {
    "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
    "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1",
    "PREFECT_SERVER_UI_ENABLED": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    "DO_NOT_TRACK": "1",
}
DEADLINE_SECONDS = 180


def child_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(FAST, PREFECT_HOME=str(home), **extra)
    return env


def tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def end(process: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 90) -> int | None:
    if process is None or process.poll() is not None:
        return None if process is None else process.returncode
    process.send_signal(sig)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


def test_a_served_deployment_runs_on_its_schedule(sample_catalog: Path, tmp_path: Path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home, out = tmp_path / "prefect-home", tmp_path / "out"
    server = serve = None
    serve_log = tmp_path / "serve.log"
    try:
        server, url = start_server("127.0.0.1", free_port(), home, log=tmp_path / "server.log", env=child_env(home))
        # One run 40 s from now, then hourly (never reached here). The scheduler only makes
        # runs after the moment it sees the deployment: the serve process must have
        # registered it by the anchor, which takes 10-30 s on a loaded 2-core machine.
        anchor = (datetime.now(UTC) + timedelta(seconds=40)).isoformat()
        with open(serve_log, "wb") as log:
            serve = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "flows.deploy",
                    str(sample_catalog),
                    "--out",
                    str(out),
                    "--interval",
                    "3600",
                    "--anchor",
                    anchor,
                    "--timezone",
                    "UTC",
                    *TINY_FLAGS,
                ],
                cwd=ROOT,
                env=child_env(home, PREFECT_API_URL=url),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

        deadline = time.monotonic() + DEADLINE_SECONDS
        final = None
        with temporary_settings(updates={PREFECT_API_URL: url}), get_client(sync_client=True) as client:
            while time.monotonic() < deadline and final is None:
                assert serve.poll() is None, f"the serve process exited with {serve.returncode}:\n{tail(serve_log)}"
                time.sleep(1)
                try:
                    deployment = client.read_deployment_by_name(f"generate/{DEFAULT_NAME}")
                except Exception:  # not registered yet
                    continue
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
                )
                for run in runs:
                    if run.state and run.state.is_final():
                        final = run
            assert final is not None, (
                f"no run of the deployment finished in {DEADLINE_SECONDS} s:\n{tail(serve_log)}\n{tail(tmp_path / 'server.log', 20)}"
            )
            assert final.state.is_completed(), f"{final.state}:\n{tail(serve_log)}"
            assert final.auto_scheduled  # made by the server's scheduler, not by hand
            assert final.parameters["catalog"] == str(sample_catalog.resolve()) and final.parameters["out"] == str(
                out.resolve()
            )
            assert final.parameters["config"]["steps"] == 2 and "size" in final.parameters["config"]
            assert deployment.schedules and deployment.schedules[0].active

        frame = DesignCatalog(out).to_pandas()
        assert len(frame) == SAMPLE_PAIRINGS and set(frame.status) == {"ok"}
        assert {row["steps"] for row in frame.params} == {2}
        assert (out / "runs" / frame.run_id.iloc[0] / "summary.json").is_file()

        # SIGTERM stops serving cleanly.
        assert end(serve) == 0, tail(serve_log)
    finally:
        end(serve, signal.SIGKILL)
        if server is not None:
            stop_server(server)


def test_serve_with_server_starts_and_stops_its_own_prefect_server(sample_catalog: Path, tmp_path: Path):
    """`make serve`: the launcher starts `prefect server start`, serves, and on Ctrl-C (SIGINT) stops both."""
    home = tmp_path / "prefect-home"
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    log_path = tmp_path / "launcher.log"
    with open(log_path, "wb") as log:
        launcher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flows.deploy",
                str(sample_catalog),
                "--out",
                str(tmp_path / "out"),
                "--server",
                "--port",
                str(port),
                "--cron",
                "0 2 * * *",
                *TINY_FLAGS,
            ],
            cwd=ROOT,
            env=child_env(home),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 60
        registered = False
        while time.monotonic() < deadline and not registered:
            assert launcher.poll() is None, tail(log_path)
            time.sleep(0.5)
            registered = (
                healthy(url) and "generate/nightly" in log_path.read_text(errors="replace") or _deployment_exists(url)
            )
        assert registered, tail(log_path)
        assert (home / "prefect.db").is_file()  # the server keeps its state in PREFECT_HOME

        assert end(launcher, signal.SIGINT) == 0, tail(log_path)
        assert not healthy(url, timeout=1), "the Prefect server outlived its launcher"
        assert "stopping the Prefect server" in log_path.read_text(errors="replace")
    finally:
        end(launcher, signal.SIGKILL)
        # A server left behind by a failed run above: the launcher logged its pid.
        found = re.search(r"Prefect server on \S+ \(pid (\d+)", log_path.read_text(errors="replace"))
        if found:
            try:
                os.kill(int(found.group(1)), signal.SIGTERM)
            except ProcessLookupError:
                pass


def _deployment_exists(url: str) -> bool:
    import json
    import urllib.request

    request = urllib.request.Request(f"{url}/deployments/name/generate/{DEFAULT_NAME}")
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(json.loads(response.read()).get("id"))
    except OSError:
        return False


def test_schedules_and_parameters():
    cron = make_schedule(cron="0 2 * * *", timezone="Europe/Paris")
    assert cron.cron == "0 2 * * *" and cron.timezone == "Europe/Paris"
    interval = make_schedule(interval=30, anchor="2026-11-24T02:00:00", timezone="UTC")
    assert interval.interval == timedelta(seconds=30) and interval.anchor_date.tzinfo is not None
    assert make_schedule(rrule="FREQ=DAILY;BYHOUR=2", timezone="UTC").rrule == "FREQ=DAILY;BYHOUR=2"
    assert make_schedule().cron == "0 2 * * *"

    params = flow_parameters("data/sample/catalog.parquet", "data/catalog", Config(steps=5, weights="random"))
    assert params["config"] == {"steps": 5, "weights": "random"}  # only what differs from the defaults
    assert Path(params["catalog"]).is_absolute() and Path(params["out"]).is_absolute()
    assert Config.from_dict(params["config"]).steps == 5
    assert "pairs" not in params and "grid" not in params  # the flow's defaults
    sweep = flow_parameters(
        "data/sample/catalog.parquet", "out", Config(), "data/sample/pairs.parquet", {"seed": [0, 1]}
    )
    assert Path(sweep["pairs"]).is_absolute() and sweep["grid"] == {"seed": [0, 1]} and sweep["config"] == {}


def test_a_nightly_deployment_can_vary_the_favourites(tmp_path: Path, capsys):
    """--more-like: each run reads the favourites OUT/reviews holds then (the flow's more_like)."""
    import inspect

    import pytest

    from flows.deploy import build_deployment
    from flows.deploy import main as deploy_main
    from flows.generate import generate

    params = flow_parameters("data/sample/catalog.parquet", "out", Config(), more_like="out")
    assert Path(params["more_like"]).is_absolute() and Path(params["more_like"]) == Path(params["out"])
    assert "more_like" not in flow_parameters("data/sample/catalog.parquet", "out", Config())
    deployment = build_deployment("data/sample/catalog.parquet", "out", Config(), more_like="out")
    assert deployment.parameters["more_like"] == params["more_like"]
    assert "more_like" in inspect.signature(generate.fn).parameters  # a parameter the flow takes

    catalog = str(ROOT / "data" / "sample" / "catalog.parquet")
    for flags, says in (
        (["--size", "64"], "--size would not apply"),
        (["--grid", "seed=0,1"], "--pairs and --grid go without it"),
    ):
        with pytest.raises(SystemExit) as stop:
            deploy_main([catalog, "--more-like", str(tmp_path), *flags])
        assert stop.value.code == 2 and says in capsys.readouterr().err
