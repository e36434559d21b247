"""A run's summary: counts, failures with their errors, throughput."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline.planning.plan import Plan


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    flow_run_id: str  # the Prefect flow run: `make logs RUN=<flow_run_id>`
    catalog: str
    out: str
    started_at: str
    wall_seconds: float
    pairings: int
    already_done: int
    ok: int
    failed: int
    failures: tuple[dict[str, str], ...]  # design_id, content_id, style_id, error
    designs_per_hour: float
    devices: tuple[str, ...]
    table_version: int | None
    # Per device: seconds spent computing targets and optimizing, over the run's wall time.
    device_busy_fraction: dict[str, float] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def report_lines(self) -> list[str]:
        lines = [
            f"run {self.run_id}: {self.ok} ok, {self.failed} failed, {self.already_done} already in the catalog "
            f"(of {self.pairings} pairings) in {self.wall_seconds:.1f} s on {', '.join(self.devices)}",
            f"device busy: {', '.join(f'{d} {f:.0%}' for d, f in self.device_busy_fraction.items()) or 'n/a'}",
            f"throughput: {self.designs_per_hour:.1f} designs/hour; design catalog {self.out}/designs at version {self.table_version}",
            f"Prefect flow run {self.flow_run_id} (its log: make logs RUN={self.flow_run_id})",
        ]
        for failure in self.failures[:50]:
            lines.append(
                f"failed {failure['content_id']} x {failure['style_id']} ({failure['design_id']}): {failure['error']}"
            )
        if len(self.failures) > 50:
            lines.append(f"... and {len(self.failures) - 50} more failures; query the catalog for status = 'failed'")
        return lines


def summarize(
    run_id: str,
    flow_run_id: str,
    catalog: str,
    out: str,
    started: datetime,
    wall_seconds: float,
    plan: Plan,
    rows: list[dict[str, Any]],
    devices: list[str],
    table_version: int | None,
) -> RunSummary:
    ok = sum(1 for r in rows if r["status"] == "ok")
    failures = tuple(
        {
            "design_id": r["design_id"],
            "content_id": r["content_id"],
            "style_id": r["style_id"],
            "error": r["error"] or "",
        }
        for r in rows
        if r["status"] != "ok"
    )
    return RunSummary(
        run_id=run_id,
        flow_run_id=flow_run_id,
        catalog=str(catalog),
        out=str(out),
        started_at=started.isoformat(),
        wall_seconds=wall_seconds,
        pairings=plan.pairings,
        already_done=plan.already_done,
        ok=ok,
        failed=len(failures),
        failures=failures,
        designs_per_hour=ok / wall_seconds * 3600 if wall_seconds > 0 else 0.0,
        devices=tuple(devices),
        table_version=table_version,
        device_busy_fraction=busy_fractions(rows, devices, wall_seconds),
    )


def busy_fractions(rows: list[dict[str, Any]], devices: list[str], wall_seconds: float) -> dict[str, float]:
    busy = dict.fromkeys(devices, 0.0)
    for row in rows:
        timings = row.get("timings")
        if timings and row.get("device") in busy:
            busy[row["device"]] += timings["targets_s"] + timings["optimize_s"]
    return {d: round(b / wall_seconds, 4) if wall_seconds > 0 else 0.0 for d, b in busy.items()}
