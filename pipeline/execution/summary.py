"""A run's summary: counts, failures with their errors, throughput.

A run of a million designs keeps no per-design data for the whole run: a
`Tally` takes each committed shard's rows as they come (counts, device seconds,
the first MAX_FAILURES failures and a count of the rest) and a bounded
`Sample` keeps up to SAMPLE_SIZE rows, drawn evenly at random, for the contact
sheet and the loss-curve plot."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.planning.plan import Plan

MAX_FAILURES = 1000  # listed in summary.json and the run's artifacts; the rest are counted
SAMPLE_SIZE = 400  # rows kept for the contact sheet and the loss-curve plot (the sheet's MAX_DESIGNS)
# What the sample keeps of a row: enough to draw it, not its whole record.
SAMPLE_FIELDS = (
    "design_id",
    "status",
    "error",
    "content_id",
    "style_id",
    "style_ids",
    "params",
    "seam_score",
    "output_uri",
    "loss_total",
    "loss_every",
)


@dataclass
class Tally:
    ok: int = 0
    failed: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)  # the first MAX_FAILURES
    busy_seconds: dict[str, float] = field(default_factory=dict)  # device -> targets + optimization

    def add(self, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            if r["status"] == "ok":
                self.ok += 1
            else:
                self.failed += 1
                if len(self.failures) < MAX_FAILURES:
                    self.failures.append(
                        {
                            "design_id": r["design_id"],
                            "content_id": r["content_id"],
                            "style_id": r["style_id"],
                            "error": r["error"] or "",
                        }
                    )
            timings = r.get("timings")
            if timings and r.get("device"):
                self.busy_seconds[r["device"]] = (
                    self.busy_seconds.get(r["device"], 0.0) + timings["targets_s"] + timings["optimize_s"]
                )

    @property
    def rows(self) -> int:
        return self.ok + self.failed


class Sample:
    """Up to `size` rows, each of those seen so far equally likely to be kept (reservoir
    sampling, seeded: the same run gives the same sample)."""

    def __init__(self, size: int = SAMPLE_SIZE, seed: int = 0):
        self.size = size
        self.seen = 0
        self.rows: list[dict[str, Any]] = []
        self._random = random.Random(seed)

    def add(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            kept = {k: row.get(k) for k in SAMPLE_FIELDS}
            self.seen += 1
            if len(self.rows) < self.size:
                self.rows.append(kept)
            elif (slot := self._random.randrange(self.seen)) < self.size:
                self.rows[slot] = kept


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
    failures: tuple[dict[str, str], ...]  # design_id, content_id, style_id, error: the first MAX_FAILURES
    designs_per_hour: float
    devices: tuple[str, ...]
    table_version: int | None
    # Per device: seconds spent computing targets and optimizing, over the run's wall time.
    device_busy_fraction: dict[str, float] = dataclasses.field(default_factory=dict)
    # Stopped on request (Ctrl-C): the designs neither ok nor failed are left for the next run.
    stopped: bool = False
    left: int = 0

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
        if self.stopped:
            lines.insert(1, f"stopped on request: {self.left} design(s) left; run the same command again to make them")
        for failure in self.failures[:50]:  # the catalog has them all
            lines.append(
                f"failed {failure['content_id']} x {failure['style_id']} ({failure['design_id']}): {failure['error']}"
            )
        if self.failed > 50:
            lines.append(f"... and {self.failed - 50} more failures; query the catalog for status = 'failed'")
        return lines


def summarize(
    run_id: str,
    flow_run_id: str,
    catalog: str,
    out: str,
    started: datetime,
    wall_seconds: float,
    plan: Plan,
    tally: Tally,
    devices: list[str],
    table_version: int | None,
    stopped: bool = False,
) -> RunSummary:
    return RunSummary(
        run_id=run_id,
        flow_run_id=flow_run_id,
        catalog=str(catalog),
        out=str(out),
        started_at=started.isoformat(),
        wall_seconds=wall_seconds,
        pairings=plan.pairings,
        already_done=plan.already_done,
        ok=tally.ok,
        failed=tally.failed,
        failures=tuple(tally.failures),
        designs_per_hour=tally.ok / wall_seconds * 3600 if wall_seconds > 0 else 0.0,
        devices=tuple(devices),
        table_version=table_version,
        device_busy_fraction=busy_fractions(tally, devices, wall_seconds),
        stopped=stopped,
        left=max(0, len(plan.todo) + len(plan.failed) - tally.rows),
    )


def busy_fractions(tally: Tally, devices: list[str], wall_seconds: float) -> dict[str, float]:
    busy = {d: tally.busy_seconds.get(d, 0.0) for d in devices}
    return {d: round(b / wall_seconds, 4) if wall_seconds > 0 else 0.0 for d, b in busy.items()}
