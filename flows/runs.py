"""`python -m flows.runs` (`make runs`): the last flow runs of `generate`, one line each with
the whole flow-run id that `make logs RUN=<id>` takes, the run's name, its state and when it
started. Prefect's own `prefect flow-run ls` cuts its table to the terminal, ids included.

It reads the Prefect API of PREFECT_API_URL, or without one the project's own state in
PREFECT_HOME (default: .prefect in the project, as for `designs generate`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

FLOW_NAME = "generate"
DEFAULT_LIMIT = 20
HEADER = ("flow run id", "name", "state", "started")


def read_runs(limit: int = DEFAULT_LIMIT, flow_name: str = FLOW_NAME) -> list[Any]:
    """The latest `limit` flow runs of `flow_name`, newest first (by when they started or are to start)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=limit,
        )


def _when(run: Any) -> str:
    """The start time in this machine's time zone; a run not started yet shows when it is expected."""
    if run.start_time is not None:
        return _local(run.start_time)
    if run.expected_start_time is not None:
        return f"not yet (expected {_local(run.expected_start_time)})"
    return "not yet"


def _local(when: datetime) -> str:
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def format_runs(runs: Sequence[Any]) -> list[str]:
    """One line per run under a header, in columns as wide as their longest entry: nothing is cut."""
    table = [HEADER] + [
        (str(run.id), str(run.name), run.state.name if run.state else "unknown", _when(run)) for run in runs
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER) - 1)]
    return ["  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]) for row in table]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.runs",
        description=f"The last flow runs of `{FLOW_NAME}`, with whole ids for `make logs RUN=<id>`.",
    )
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"runs to list (default: {DEFAULT_LIMIT})")
    args = parser.parse_args(argv)
    if args.limit < 1:
        parser.error(f"--limit {args.limit}: give 1 or more")

    from flows.options import configure_prefect_env

    configure_prefect_env()  # before Prefect reads its settings
    import httpx

    try:
        runs = read_runs(args.limit)
    except httpx.HTTPError as err:
        from prefect.settings import PREFECT_API_URL

        print(
            f"cannot read flow runs from the Prefect API {PREFECT_API_URL.value() or '(temporary)'}: {err}",
            file=sys.stderr,
        )
        return 1
    if not runs:
        from prefect.settings import PREFECT_API_URL, PREFECT_HOME

        where = PREFECT_API_URL.value() or f"PREFECT_HOME={PREFECT_HOME.value()}"
        print(f"no flow runs of {FLOW_NAME} in {where}")
        return 0
    print("\n".join(format_runs(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
