"""`make runs` (flows/runs.py): whole flow-run ids in aligned columns, nothing cut; the real call
against a Prefect server is in test_flow.py, beside the module's flow run."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

from flows.runs import format_runs


def flow_run(name: str, state: str, start: datetime | None, expected: datetime | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        id=uuid.uuid4(), name=name, state=SimpleNamespace(name=state), start_time=start, expected_start_time=expected
    )


def test_runs_are_listed_with_whole_ids_in_columns():
    started = datetime(2026, 11, 24, 2, 0, 5, tzinfo=UTC)
    runs = [
        flow_run("a-rather-long-flow-run-name", "Completed", started),
        flow_run("chirpy-dog", "Scheduled", None, expected=started),
        flow_run("odd", "Pending", None),
    ]
    header, *lines = format_runs(runs)
    assert header.split() == ["flow", "run", "id", "name", "state", "started"]
    for run, line in zip(runs, lines):
        assert line.startswith(str(run.id) + "  ") and len(str(run.id)) == 36
        assert line.split()[1:3] == [run.name, run.state.name]
    # columns line up: every state starts where the header's does
    assert {line.index(run.state.name) for run, line in zip(runs, lines)} == {header.index("state")}
    local = started.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert local in lines[0] and f"not yet (expected {local}" in lines[1] and lines[2].endswith("not yet")
