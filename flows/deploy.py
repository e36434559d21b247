"""Nightly runs: a Prefect deployment of the `generate` flow on a schedule.

    python -m flows.deploy CATALOG [--out DIR] [--cron "0 2 * * *"] [--timezone Europe/Paris] [--server] [config flags]

serves a deployment named `nightly` of `generate` (parameters: the catalog, OUT
and the config flags, the same flags as `designs generate`) on a cron schedule.
The flow code knows nothing of this; the schedule lives here.

Serving needs a Prefect server that runs the scheduler: Prefect's temporary
server (the one `designs generate` starts by itself) does not. `--server` starts
a persistent local server (`prefect server start`, state in PREFECT_HOME, by
default ./.prefect), waits until /api/health answers, serves the deployment
against it and stops the server again on Ctrl-C or SIGTERM (`make serve`).
Without `--server`, PREFECT_API_URL must name a running server or Prefect
Cloud workspace. `--work-pool NAME` registers the deployment with a work pool
instead of serving it here (a `prefect worker start --pool NAME` runs it).

Every flag has an environment default: DESIGNS_CATALOG, DESIGNS_OUT,
DESIGNS_CRON, DESIGNS_TIMEZONE, DESIGNS_DEPLOYMENT (the name).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

from flows.options import EXIT_REFUSED, add_config_flags, config_from_args, configure_prefect_env, project_root
from flows.server import public_api_url, start_server, stop_server
from pipeline.config import DEFAULT_OUT, Config

DEFAULT_NAME = "nightly"
DEFAULT_CRON = "0 2 * * *"  # 02:00 every night


def local_timezone() -> str:
    try:
        from tzlocal import get_localzone_name  # a Prefect dependency

        return get_localzone_name() or "UTC"
    except Exception:
        return "UTC"


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="python -m flows.deploy",
        description=(
            "Serve a scheduled Prefect deployment of the generate flow (default: every night at 02:00). "
            "Exit 0 on Ctrl-C or SIGTERM; 2 when refused (bad flags, no server)."
        ),
    )
    parser.add_argument(
        "catalog",
        metavar="CATALOG",
        nargs="?",
        default=env.get("DESIGNS_CATALOG"),
        help="input catalog parquet (default: $DESIGNS_CATALOG)",
    )
    parser.add_argument(
        "--out",
        default=env.get("DESIGNS_OUT", DEFAULT_OUT),
        metavar="DIR",
        help=f"design catalog folder (default: $DESIGNS_OUT or {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--name", default=env.get("DESIGNS_DEPLOYMENT", DEFAULT_NAME), help=f"deployment name (default: {DEFAULT_NAME})"
    )
    parser.add_argument(
        "--pairs",
        default=None,
        metavar="PARQUET",
        help="explicit pairings instead of the cross product (as designs generate)",
    )
    parser.add_argument(
        "--more-like",
        default=None,
        metavar="OUT",
        help="each run makes variations of the favourites OUT/reviews holds then, instead of the pairings "
        "(as designs generate --more-like; flags that change a design's pixels go without it)",
    )
    parser.add_argument(
        "--grid",
        action="append",
        default=None,
        metavar="FIELD=V1,V2",
        help="make every pairing once per value; repeatable (as designs generate)",
    )
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--cron", default=None, help=f"cron schedule (default: $DESIGNS_CRON or {DEFAULT_CRON!r})")
    when.add_argument(
        "--interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="run every SECONDS instead of on a cron schedule",
    )
    when.add_argument(
        "--rrule", default=None, help="an iCalendar RRULE instead of a cron schedule, e.g. 'FREQ=DAILY;BYHOUR=2'"
    )
    parser.add_argument(
        "--anchor", default=None, metavar="ISO_TIME", help="with --interval: the first run's time (default: now)"
    )
    parser.add_argument(
        "--timezone",
        default=env.get("DESIGNS_TIMEZONE") or None,
        metavar="TZ",
        help="time zone of the cron schedule, e.g. Europe/Paris (default: $DESIGNS_TIMEZONE or this machine's)",
    )
    parser.add_argument(
        "--limit", type=int, default=1, metavar="N", help="runs of this deployment at once (default: 1)"
    )
    parser.add_argument(
        "--server",
        action="store_true",
        help="start a persistent local Prefect server (state in $PREFECT_HOME) and stop it on exit",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="with --server: address to listen on (0.0.0.0 for Dask workers elsewhere)"
    )
    parser.add_argument("--port", type=int, default=4200, help="with --server: port (default: 4200)")
    parser.add_argument(
        "--api-url",
        default=None,
        metavar="URL",
        help="with --server: the URL flows and their Dask workers reach it at (default: http://HOST:PORT/api; "
        "with --host 0.0.0.0, this machine's host name)",
    )
    parser.add_argument(
        "--work-pool",
        default=None,
        metavar="NAME",
        help="register the deployment with this work pool (run by `prefect worker start --pool NAME`) instead of serving it",
    )
    add_config_flags(parser)
    return parser


def flow_parameters(
    catalog: str,
    out: str,
    config: Config,
    pairs: str | None = None,
    grid: dict[str, list[Any]] | None = None,
    more_like: str | None = None,
) -> dict[str, Any]:
    """The deployment's parameters: absolute paths, and only the config fields that differ from the defaults
    (so the Prefect UI shows what is particular to this deployment, and a custom run can change one field)."""
    defaults = Config().to_dict()
    overrides = {k: v for k, v in config.to_dict().items() if v != defaults[k]}
    parameters: dict[str, Any] = {
        "catalog": str(Path(catalog).resolve()),
        "out": str(Path(out).resolve()),
        "config": overrides,
    }
    if pairs:
        parameters["pairs"] = str(Path(pairs).resolve())
    if grid:
        parameters["grid"] = grid
    if more_like:
        parameters["more_like"] = str(Path(more_like).resolve())
    return parameters


def make_schedule(
    cron: str | None = None,
    interval: float | timedelta | None = None,
    rrule: str | None = None,
    timezone: str | None = None,
    anchor: str | None = None,
):
    """One Prefect schedule: every `interval` seconds from `anchor` (default now), an RRULE, or cron (default 02:00)."""
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule

    timezone = timezone or local_timezone()
    if interval is not None:
        from datetime import datetime

        start = datetime.fromisoformat(anchor) if anchor else datetime.now(UTC)
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        seconds = interval if isinstance(interval, timedelta) else timedelta(seconds=float(interval))
        return IntervalSchedule(interval=seconds, anchor_date=start, timezone=timezone)
    if rrule is not None:
        return RRuleSchedule(rrule=rrule, timezone=timezone)
    return CronSchedule(cron=cron or DEFAULT_CRON, timezone=timezone)


def build_deployment(
    catalog: str,
    out: str,
    config: Config,
    name: str = DEFAULT_NAME,
    schedule: Any = None,
    pairs: str | None = None,
    grid: dict[str, list[Any]] | None = None,
    more_like: str | None = None,
):
    """A RunnerDeployment of generate (with config.runner's task runner) with its parameters and schedule (default: cron 02:00)."""
    from flows.generate import generate_flow  # local: imports prefect and the engine

    flow = generate_flow(config)
    return flow.to_deployment(
        name=name,
        schedule=schedule if schedule is not None else make_schedule(),
        parameters=flow_parameters(catalog, out, config, pairs, grid, more_like),
        description=f"generate every design of {Path(catalog).name} not yet in {out}",
        tags=["designs", name],
    )


def register_with_work_pool(
    catalog: str,
    out: str,
    config: Config,
    name: str,
    schedule: Any,
    work_pool: str,
    pairs: str | None = None,
    grid: dict[str, list[Any]] | None = None,
    more_like: str | None = None,
) -> str:
    """`flow.from_source(project).deploy(...)`: the deployment runs where a worker of the pool runs,
    from this project's folder (which the worker's machine must have at the same path)."""
    from prefect import flow as prefect_flow

    source = prefect_flow.from_source(source=str(project_root()), entrypoint="flows/generate.py:generate")
    deployment_id = source.deploy(
        name=name,
        work_pool_name=work_pool,
        schedule=schedule,
        parameters=flow_parameters(catalog, out, config, pairs, grid, more_like),
        tags=["designs", name],
        build=False,
        push=False,
        print_next_steps=False,
    )
    return str(deployment_id)


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.catalog:
        parser.error("the catalog is required (argument or $DESIGNS_CATALOG)")
    if not Path(args.catalog).is_file():
        parser.error(f"catalog {args.catalog!r} is not a file")
    if args.anchor and args.interval is None:
        parser.error("--anchor goes with --interval")
    try:
        config = config_from_args(args)
        from pipeline.planning.variants import parse_grid

        grid = parse_grid(args.grid)
    except ValueError as err:
        parser.error(str(err))
    if args.pairs and not Path(args.pairs).is_file():
        parser.error(f"pairs {args.pairs!r} is not a file")
    if args.more_like is not None:
        from flows.cli import design_flags_given

        if args.pairs or args.grid:
            parser.error("--more-like plans its own variations; --pairs and --grid go without it")
        if given := design_flags_given(args):
            parser.error(f"--more-like keeps each favourite's own design params; {', '.join(given)} would not apply")
    cron = args.cron or (
        None if args.interval is not None or args.rrule else os.environ.get("DESIGNS_CRON") or DEFAULT_CRON
    )
    configure_prefect_env()

    server = None
    previous_term = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # SIGTERM ends it like Ctrl-C: the server is stopped too
    # A shell starting us in the background (`make serve &`, nohup) hands down SIGINT
    # ignored; Ctrl-C / kill -INT must still stop the server and the deployment.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if args.server:
            try:
                server, url = start_server(args.host, args.port, os.environ.get("PREFECT_HOME"))
            except RuntimeError as err:
                print(f"designs serve: {err}", file=sys.stderr)
                return EXIT_REFUSED
            url = public_api_url(url, args.host, args.port, args.api_url)
            os.environ["PREFECT_API_URL"] = url
            print(
                f"Prefect server on {url[:-4]} (pid {server.pid}, PREFECT_HOME={os.environ.get('PREFECT_HOME')}); its log: "
                f"{Path(os.environ.get('PREFECT_HOME', '.')) / 'server.log'}",
                flush=True,
            )
        return _deploy(args, config, cron, grid)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        if server is not None:
            print("stopping the Prefect server", flush=True)
            stop_server(server)


def _deploy(args: argparse.Namespace, config: Config, cron: str | None, grid: dict[str, list[Any]]) -> int:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()
    if not url:
        print(
            "designs serve: a schedule needs a Prefect server that runs the scheduler (the temporary one does not): "
            "pass --server (make serve), or set PREFECT_API_URL to a running server or `prefect cloud login`",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    schedule = make_schedule(cron, args.interval, args.rrule, args.timezone, args.anchor)
    with temporary_settings(
        updates={PREFECT_API_URL: url}
    ):  # also where prefect was imported before the server started
        if args.work_pool:
            deployment_id = register_with_work_pool(
                args.catalog, args.out, config, args.name, schedule, args.work_pool, args.pairs, grid, args.more_like
            )
            print(
                f"deployment generate/{args.name} ({deployment_id}) registered with work pool {args.work_pool!r}; "
                f"run it with: prefect worker start --pool {args.work_pool}"
            )
            return 0
        deployment = build_deployment(
            args.catalog, args.out, config, args.name, schedule, args.pairs, grid, args.more_like
        )
        serve(deployment, limit=args.limit)
    return 0


def serve(deployment: Any, limit: int | None = 1) -> None:
    """prefect.serve(deployment), except that SIGTERM shuts down the way Ctrl-C does: the
    runner's main task is cancelled, so it pauses the schedule and returns (Prefect 3.8.8's own
    SIGTERM handler exits from inside the event loop and leaves tracebacks)."""
    import asyncio

    from prefect.runner import Runner

    running: dict[str, Any] = {}

    class CleanRunner(Runner):
        def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
            self._logger.info("SIGTERM received, shutting down...")
            if "task" in running:
                running["loop"].call_soon_threadsafe(running["task"].cancel)

    async def start() -> None:
        running.update(task=asyncio.current_task(), loop=asyncio.get_running_loop())
        await runner.start()

    runner = CleanRunner(pause_on_shutdown=True, limit=limit)
    runner.add_deployment(deployment)
    try:
        from prefect.flows import _display_serve_start_message  # the banner prefect.serve prints

        _display_serve_start_message(deployment)
    except ImportError:
        print(f"serving {deployment.flow_name}/{deployment.name}", flush=True)
    try:
        asyncio.run(start())
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    print("serving stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
