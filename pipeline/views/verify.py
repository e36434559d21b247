"""`designs verify OUT`: check that the design catalog and its PNGs agree.

Every `ok` row's PNG exists and matches its recorded SHA-256, design ids are
unique among `ok` rows, and every PNG under OUT/images belongs to an `ok` row
(orphans come from crashed or concurrent runs; `--fix` removes them).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.catalog.designs import DesignCatalog
from pipeline.files import sha256_file


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

    @property
    def problems(self) -> int:
        remaining_orphans = len(set(self.orphans) - set(self.removed))
        return (
            len(self.missing)
            + len(self.mismatched)
            + len(self.unsafe_uris)
            + len(self.duplicate_ok_ids)
            + remaining_orphans
        )

    def lines(self) -> list[str]:
        lines = [f"{self.out}: table version {self.version}, {self.ok_rows} ok row(s), {self.problems} problem(s)"]
        lines += [f"missing PNG: {m}" for m in self.missing]
        lines += [f"PNG differs from its recorded SHA-256: {m}" for m in self.mismatched]
        lines += [f"output_uri outside {self.out}/images: {m}" for m in self.unsafe_uris]
        lines += [f"design_id ok more than once: {d}" for d in self.duplicate_ok_ids]
        for orphan in self.orphans:
            lines.append(f"{'removed' if orphan in self.removed else 'orphan'} PNG without an ok row: {orphan}")
        if self.orphans and not self.removed:
            lines.append("run with --fix to remove the orphans")
        return lines


def verify_catalog(out: str | Path, fix: bool = False) -> VerifyReport:
    catalog = DesignCatalog(out)
    table = catalog.table()
    report = VerifyReport(out=str(out), version=table.version())
    rows = (
        table.to_pyarrow_dataset().to_table(columns=["design_id", "status", "output_uri", "output_sha256"]).to_pylist()
    )
    ok = [r for r in rows if r["status"] == "ok"]
    report.ok_rows = len(ok)
    counts = Counter(r["design_id"] for r in ok)
    report.duplicate_ok_ids = sorted(d for d, n in counts.items() if n > 1)

    images_root = catalog.images_dir.resolve()
    referenced: set[Path] = set()
    for row in ok:
        uri = row["output_uri"] or ""
        path = (catalog.out / uri).resolve()
        if not uri or not path.is_relative_to(images_root):
            report.unsafe_uris.append(f"{row['design_id']}: {uri!r}")
            continue
        referenced.add(path)
        if not path.is_file():
            report.missing.append(f"{row['design_id']}: {uri}")
        elif sha256_file(path) != row["output_sha256"]:
            report.mismatched.append(f"{row['design_id']}: {uri}")

    if catalog.images_dir.is_dir():
        for path in sorted(catalog.images_dir.rglob("*")):
            if path.is_file() and path.resolve() not in referenced:
                report.orphans.append(str(path.relative_to(catalog.out)))
    if fix:
        for orphan in report.orphans:
            (catalog.out / orphan).unlink(missing_ok=True)
            report.removed.append(orphan)
    return report
