"""`designs verify OUT`: check that the design catalog and its PNGs agree.

Every `ok` row's PNG exists and matches its recorded SHA-256, design ids are
unique among `ok` rows, and every PNG under OUT/images belongs to an `ok` row
(orphans come from crashed or concurrent runs).

`--fix` removes the orphans, and retires the `ok` rows whose PNG is missing or
differs from its hash: one Delta commit turns them into `failed` rows saying
why, so the next `designs generate` remakes them (it skips only `ok` designs).
An altered PNG is removed with its row's retirement; nothing else is touched.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pipeline.catalog.datafiles import read_table
from pipeline.catalog.designs import DesignCatalog
from pipeline.files import sha256_file

_FOUND_BY = "found by designs verify --fix; the next designs generate remakes this design"


@dataclass
class VerifyReport:
    out: str
    version: int | None
    ok_rows: int = 0
    missing: list[str] = field(default_factory=list)  # "design_id: output_uri"
    mismatched: list[str] = field(default_factory=list)
    unsafe_uris: list[str] = field(default_factory=list)
    duplicate_ok_ids: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)  # paths relative to OUT
    removed: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)  # "design_id: output_uri", now failed rows
    fixed: bool = False  # run with --fix
    fixed_version: int | None = None  # the version of the retiring commit

    @property
    def problems(self) -> int:
        remaining_orphans = len(set(self.orphans) - set(self.removed))
        retired = set(self.retired)
        return (
            len(set(self.missing) - retired)
            + len(set(self.mismatched) - retired)
            + len(self.unsafe_uris)
            + len(self.duplicate_ok_ids)
            + remaining_orphans
        )

    def lines(self) -> list[str]:
        lines = [f"{self.out}: table version {self.version}, {self.ok_rows} ok row(s), {self.problems} problem(s)"]
        retired = " (row retired: the next generate remakes it)"
        lines += [f"missing PNG: {m}" + (retired if m in self.retired else "") for m in self.missing]
        lines += [
            f"PNG differs from its recorded SHA-256: {m}" + (retired if m in self.retired else "")
            for m in self.mismatched
        ]
        lines += [f"output_uri outside {self.out}/images: {m}" for m in self.unsafe_uris]
        lines += [f"design_id ok more than once: {d}" for d in self.duplicate_ok_ids]
        for orphan in self.orphans:
            lines.append(f"{'removed' if orphan in self.removed else 'orphan'} PNG without an ok row: {orphan}")
        if self.retired:
            lines.append(f"retired {len(self.retired)} row(s) as failed at table version {self.fixed_version}")
        if not self.fixed and (self.orphans or self.missing or self.mismatched):
            lines.append("run with --fix to remove the orphans and retire the rows of missing or altered PNGs")
        return lines


def verify_catalog(out: str | Path, fix: bool = False) -> VerifyReport:
    catalog = DesignCatalog(out)
    table = catalog.table()
    report = VerifyReport(out=str(out), version=table.version(), fixed=fix)
    columns = ["design_id", "status", "output_uri", "output_sha256"]
    rows = read_table(table, catalog.table_path, columns).to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    report.ok_rows = len(ok)
    counts = Counter(r["design_id"] for r in ok)
    report.duplicate_ok_ids = sorted(d for d, n in counts.items() if n > 1)

    images_root = catalog.images_dir.resolve()
    referenced: set[Path] = set()
    checked_at = datetime.now(UTC).isoformat(timespec="seconds")
    to_retire: dict[str, tuple[str, str]] = {}  # design_id -> (output_uri, error)
    altered: list[Path] = []
    for row in ok:
        uri = row["output_uri"] or ""
        path = (catalog.out / uri).resolve()
        if not uri or not path.is_relative_to(images_root):
            report.unsafe_uris.append(f"{row['design_id']}: {uri!r}")
            continue
        referenced.add(path)
        if not path.is_file():
            report.missing.append(f"{row['design_id']}: {uri}")
            to_retire[row["design_id"]] = (uri, f"its PNG {uri} was missing ({_FOUND_BY} at {checked_at})")
        elif sha256_file(path) != row["output_sha256"]:
            report.mismatched.append(f"{row['design_id']}: {uri}")
            to_retire[row["design_id"]] = (
                uri,
                f"its PNG {uri} differed from its recorded SHA-256 {row['output_sha256']} ({_FOUND_BY} at {checked_at})",
            )
            altered.append(path)

    # A design id ok twice is another fault; retiring would turn both rows, so those are left to the report.
    to_retire = {d: v for d, v in to_retire.items() if counts[d] == 1}
    if fix and to_retire:
        report.fixed_version = catalog.retire(to_retire)
        report.retired = [f"{d}: {uri}" for d, (uri, _) in to_retire.items()]
        referenced -= set(altered)  # the altered files now belong to no ok row: removed as orphans below

    if catalog.images_dir.is_dir():
        for path in sorted(catalog.images_dir.rglob("*")):
            if path.is_file() and path.resolve() not in referenced:
                report.orphans.append(str(path.relative_to(catalog.out)))
    if fix:
        for orphan in report.orphans:
            (catalog.out / orphan).unlink(missing_ok=True)
            report.removed.append(orphan)
    return report
