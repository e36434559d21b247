"""The runs of a design catalog, one row per run: what `designs query` serves as `runs`.

A run leaves `OUT/runs/<run_id>/config.json` before its first commit and
`summary.json` when it finishes; every Delta commit it makes carries its
`run_id` in the commit metadata. A run that crashed (or is still running) has
no summary: it is still listed, from its config.json, with nulls where the
summary would be. A `designs colourways` run keeps only its contact sheet in
`OUT/runs/<run_id>/` and commits once, at its end: it is listed from that
commit (its rows are its colourways, all ok). A run whose folder is gone is
listed from the commit history alone.

The commit history also gives `resolve_version`: the table version that
`--version`/`--as-of` name (`designs query`, `designs gallery`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pipeline.catalog.designs import RUNS_DIR, DesignCatalog

if TYPE_CHECKING:
    pass

FINISHED = "finished"  # summary.json written
UNFINISHED = "unfinished"  # config.json only: crashed, killed, or still running
HISTORY_ONLY = "history-only"  # no runs/<run_id> folder; known from its Delta commits
COLOURWAYS = "colourways"  # a `designs colourways` run: its folder and its one commit
COLOURWAYS_NOTE = "colourways:"  # how its commits' notes begin (pipeline.catalog.colourways)
RUN_ID_TIME = "%Y%m%dT%H%M%SZ"  # how a run id begins: the time it started

TIMESTAMP = pa.timestamp("us", tz="UTC")
RUNS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("state", pa.string(), nullable=False),
        pa.field("started_at", TIMESTAMP),
        pa.field("finished_at", TIMESTAMP),  # started_at + wall_seconds
        pa.field("pairings", pa.int64()),
        pa.field("ok", pa.int64()),
        pa.field("failed", pa.int64()),
        pa.field("already_done", pa.int64()),
        pa.field("wall_seconds", pa.float64()),
        pa.field("designs_per_hour", pa.float64()),
        pa.field("table_version", pa.int64()),  # the table's version when the run finished
        pa.field("devices", pa.list_(pa.string())),
        pa.field("commits", pa.int64()),  # Delta commits carrying this run_id
        pa.field("first_version", pa.int64()),
        pa.field("last_version", pa.int64()),
        pa.field("first_commit_at", TIMESTAMP),
        pa.field("last_commit_at", TIMESTAMP),
        pa.field("weights", pa.string()),
        pa.field("catalog", pa.string()),
        pa.field("flow_run_id", pa.string()),
    ]
)

COMMITS_SCHEMA = pa.schema(
    [
        pa.field("version", pa.int64(), nullable=False),
        pa.field("committed_at", TIMESTAMP),
        pa.field("operation", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("note", pa.string()),  # create, input-faults, shard-N
        pa.field("rows", pa.int64()),  # rows the run handed to the commit
        pa.field("inserted", pa.int64()),
        pa.field("updated", pa.int64()),
        pa.field("deleted", pa.int64()),
    ]
)


def _read_json(path: Path) -> dict[str, Any] | None:
    """A run file, or None when it is missing or unreadable (a run killed while writing it)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int_or_text(value: Any) -> int | None:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return _int(value)


def _commit_time(entry: dict[str, Any]) -> datetime | None:
    stamp = entry.get("timestamp")
    return datetime.fromtimestamp(stamp / 1000, tz=UTC) if isinstance(stamp, (int, float)) else None


def commit_history(catalog: DesignCatalog) -> list[dict[str, Any]]:
    """Every commit of the table (latest version's log), oldest first, as COMMITS_SCHEMA rows."""
    if not catalog.exists():
        return []
    rows = []
    for entry in catalog.history():
        metrics = entry.get("operationMetrics") or {}
        rows.append(
            {
                "version": entry.get("version"),
                "committed_at": _commit_time(entry),
                "operation": entry.get("operation"),
                "run_id": entry.get("run_id"),
                "note": entry.get("designs.note"),
                "rows": _int_or_text(entry.get("designs.rows")),
                "inserted": _int(metrics.get("num_target_rows_inserted")),
                "updated": _int(metrics.get("num_target_rows_updated")),
                "deleted": _int(metrics.get("num_target_rows_deleted")),
            }
        )
    return sorted(rows, key=lambda r: r["version"])


class QueryError(ValueError):
    """A refused query: bad SQL, a version or timestamp the table lacks, an unknown format."""


def parse_as_of(text: str) -> datetime:
    """An ISO 8601 timestamp; without a zone it is UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise QueryError(
            f"--as-of {text!r} is not an ISO 8601 timestamp (e.g. 2026-11-24T01:30:00Z or 2026-11-24)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def resolve_version(
    catalog: DesignCatalog,
    version: int | None = None,
    as_of: str | datetime | None = None,
    commits: list[dict[str, Any]] | None = None,
) -> int | None:
    """The table version to read: `version`, the latest committed at or before `as_of`, or None (latest).

    `commits`: the table's commit_history, when the caller has read it already.
    """
    if version is not None and as_of is not None:
        raise QueryError("give --version or --as-of, not both")
    if version is None and as_of is None:
        return None
    if not catalog.exists():
        catalog.table()  # raises FileNotFoundError naming the path
    if commits is None:
        commits = commit_history(catalog)
    versions = [c["version"] for c in commits]
    if version is not None:
        if version not in versions:
            raise QueryError(
                f"version {version} does not exist in {catalog.table_path}; it has versions {_ranges(versions)}"
            )
        return version
    moment = parse_as_of(as_of) if isinstance(as_of, str) else as_of
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    before = [c for c in commits if c["committed_at"] is not None and c["committed_at"] <= moment]
    if not before:
        first = commits[0]
        shown = as_of if isinstance(as_of, str) else moment.isoformat()
        raise QueryError(
            f"--as-of {shown!r} ({moment.isoformat()}) is before the first commit of {catalog.table_path} "
            f"(version {first['version']} at {first['committed_at'].isoformat()})"
        )
    return max(c["version"] for c in before)


def _ranges(versions: list[int]) -> str:
    if not versions:
        return "none"
    if versions == list(range(versions[0], versions[-1] + 1)):
        return f"{versions[0]}..{versions[-1]}"
    return ", ".join(map(str, versions))


def run_records(out: str | Path, commits: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One RUNS_SCHEMA row per run found in OUT/runs/ or in the table's commit history."""
    catalog = DesignCatalog(out)
    if commits is None:
        commits = commit_history(catalog)
    by_run: dict[str, list[dict[str, Any]]] = {}
    for commit in commits:
        if commit["run_id"]:
            by_run.setdefault(commit["run_id"], []).append(commit)

    runs_dir = Path(out) / RUNS_DIR
    folders = sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
    records: dict[str, dict[str, Any]] = {}
    for folder in folders:
        config = _read_json(folder / "config.json")
        summary = _read_json(folder / "summary.json")
        if config is None and summary is None:
            if _colourways_commits(by_run.get(folder.name, [])):
                records[folder.name] = _colourways_record(folder.name, by_run[folder.name])
            continue
        run_id = str((summary or config or {}).get("run_id") or folder.name)
        records[run_id] = _record(run_id, config or {}, summary)
    for run_id in by_run:
        records.setdefault(run_id, _record(run_id, {}, None, state=HISTORY_ONLY))

    for run_id, record in records.items():
        mine = by_run.get(run_id, [])
        versions = [c["version"] for c in mine]
        times = [c["committed_at"] for c in mine if c["committed_at"] is not None]
        record.update(
            commits=len(mine),
            first_version=min(versions, default=None),
            last_version=max(versions, default=None),
            first_commit_at=min(times, default=None),
            last_commit_at=max(times, default=None),
        )
    return sorted(
        records.values(),
        key=lambda r: (r["started_at"] or r["first_commit_at"] or datetime.max.replace(tzinfo=UTC), r["run_id"]),
    )


def _record(
    run_id: str, config: dict[str, Any], summary: dict[str, Any] | None, state: str | None = None
) -> dict[str, Any]:
    summary_or_empty = summary or {}
    started = _timestamp(summary_or_empty.get("started_at")) or _timestamp(config.get("started_at"))
    wall = _float(summary_or_empty.get("wall_seconds"))
    devices = summary_or_empty.get("devices") or config.get("devices")
    weights = config.get("weights")
    return {
        "run_id": run_id,
        "state": state or (FINISHED if summary is not None else UNFINISHED),
        "started_at": started,
        "finished_at": started + timedelta(seconds=wall) if started is not None and wall is not None else None,
        "pairings": _int(summary_or_empty.get("pairings")),
        "ok": _int(summary_or_empty.get("ok")),
        "failed": _int(summary_or_empty.get("failed")),
        "already_done": _int(summary_or_empty.get("already_done")),
        "wall_seconds": wall,
        "designs_per_hour": _float(summary_or_empty.get("designs_per_hour")),
        "table_version": _int(summary_or_empty.get("table_version")),
        "devices": [str(d) for d in devices] if isinstance(devices, list) else None,
        "weights": str(weights["identity"])
        if isinstance(weights, dict) and weights.get("identity") is not None
        else None,
        "catalog": str(config.get("catalog") or summary_or_empty.get("catalog") or "") or None,
        "flow_run_id": str(summary_or_empty.get("flow_run_id") or config.get("flow_run_id") or "") or None,
    }


def _colourways_commits(commits: list[dict[str, Any]]) -> bool:
    return bool(commits) and all(str(c["note"] or "").startswith(COLOURWAYS_NOTE) for c in commits)


def _colourways_record(run_id: str, commits: list[dict[str, Any]]) -> dict[str, Any]:
    """A colourways run from its commits: started at its id's time, ended at its last commit,
    its committed rows its colourways (the ones it could not make are not committed)."""
    record = _record(run_id, {}, None, state=COLOURWAYS)
    try:
        started = datetime.strptime(run_id[: len("20260101T000000Z")], RUN_ID_TIME).replace(tzinfo=UTC)
    except ValueError:
        started = None
    ended = max((c["committed_at"] for c in commits if c["committed_at"] is not None), default=None)
    rows = [c["rows"] for c in commits]
    ok = sum(rows) if all(isinstance(n, int) for n in rows) else None
    wall = (ended - started).total_seconds() if started is not None and ended is not None else None
    record.update(
        started_at=started,
        finished_at=ended if wall is not None else None,
        ok=ok,
        wall_seconds=wall,
        designs_per_hour=ok / wall * 3600 if ok is not None and wall else None,
        devices=["cpu"],  # the recolouring runs in the process, on the CPU
    )
    return record


def runs_table(out: str | Path, commits: list[dict[str, Any]] | None = None) -> pa.Table:
    return pa.Table.from_pylist(run_records(out, commits), schema=RUNS_SCHEMA)
