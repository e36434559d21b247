"""The design catalog at scale: `python -m benchmarks --catalog` builds synthetic
design catalogs of 10k to 10M rows of the real schema and measures, per size, a
shard's commit (the shipped pruned merge against the full-table merge it
replaced), the committing process's peak RSS, planning's done-id read, the
maintenance and the analysts' worked queries.

Each table is built as a catalog grows: earlier nights appended as the last
maintenance left them (sorted by id, in files of its size), then tonight's shards
committed through `DesignCatalog.commit` (128 neighbouring ids each, as planning cuts them out of
a night of `--catalog-night` designs of one size), then `maintain` (z-order,
vacuum, checkpoint), then tonight's next shards are timed. Commits, the done-id
read and the baseline run in child processes, so each RSS is that process's own.
"""

from __future__ import annotations

import binascii
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

SHARD = 128
BUILD_BATCH = 250_000  # rows per append of the earlier nights
TAIL_SHARDS = 32  # tonight's shards committed before maintenance
COMMIT_ROUNDS = 3  # timed commits per size: rounds over all sizes of SHARDS_PER_ROUND each
SHARDS_PER_ROUND = 3
TIMED_SHARDS = COMMIT_ROUNDS * SHARDS_PER_ROUND
LOSS_POINTS = 100  # 1,000 steps sampled every 10: the default config's curves
# Free disk a maintenance needs, in table sizes: the sorted copy, the sort's spill, room left.
MAINTENANCE_DISK_FACTOR = 2.5

CATALOG_TABLE = (
    "| date | device | rows | data files before / after maintenance | maintenance s "
    "| commit s median / max | commit peak RSS MiB | full-merge commit s median / max | full-merge peak RSS MiB "
    "| done ids s | done ids peak RSS MiB | night of |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
)
QUERY_TABLE = "| date | device | rows | query (docs/ANALYSTS.md) | seconds |\n| --- | --- | --- | --- | --- |\n"


def _hex_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random 32-hex-digit ids as fixed-width bytes (design ids are 128-bit hashes in hex)."""
    return np.frombuffer(binascii.hexlify(rng.bytes(16 * n)), dtype="S32")


def _strings(values: np.ndarray):
    import pyarrow as pa

    width = values.dtype.itemsize
    offsets = np.arange(0, width * len(values) + 1, width, dtype=np.int32)
    return pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(values.tobytes()))


def synthetic_rows(ids: np.ndarray, rng: np.random.Generator, run_id: str, failed_every: int = 500):
    """Rows of the real schema for `ids` (S32 array): full loss curves, params, timings,
    hashes; one row in `failed_every` failed (no image, no curves), as bad inputs leave them."""
    import pyarrow as pa

    from pipeline.catalog.schema import SCHEMA, params_value
    from pipeline.config import Config

    n = len(ids)
    zeros = pa.array(np.zeros(n, dtype=np.int32))
    failed = np.zeros(n, dtype=bool)
    failed[rng.integers(0, n, size=n // failed_every)] = True
    contents = np.char.add(b"c", np.char.zfill(rng.integers(0, 1000, n).astype("S4"), 4))
    styles = np.char.add(b"s", np.char.zfill(rng.integers(0, 1000, n).astype("S4"), 4))

    def constant(value: Any, kind: pa.DataType) -> pa.Array:
        return pa.array([value], kind).take(zeros)

    def curves(scale: float) -> pa.Array:
        steps = np.arange(LOSS_POINTS, dtype=np.float32)
        start = rng.uniform(0.5, 2.0, (n, 1)).astype(np.float32) * scale
        values = start * np.exp(-steps / 30.0) * (1 + 0.01 * rng.standard_normal((n, LOSS_POINTS), dtype=np.float32))
        offsets = np.arange(0, n * LOSS_POINTS + 1, LOSS_POINTS, dtype=np.int32)
        lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.ravel()), mask=pa.array(failed))
        return lists

    now = datetime.now(UTC)
    created = pa.array(
        np.datetime64(now.replace(tzinfo=None), "us") - rng.integers(0, 86_400_000_000, n).astype("timedelta64[us]"),
        pa.timestamp("us", tz="UTC"),
    )
    sha = lambda: _strings(np.frombuffer(binascii.hexlify(rng.bytes(32 * n)), dtype="S64"))  # noqa: E731
    status = np.where(failed, b"failed", b"ok").astype("S6")
    params = params_value(Config(), "keras:vgg19_weights_tf_dim_ordering_tf_kernels_notop", "caffe")
    loss = {name: curves(scale) for name, scale in (("total", 3e6), ("content", 1e6), ("style", 2e6), ("tv", 1e4))}
    final = pa.StructArray.from_arrays(
        [pa.array(rng.uniform(1e3, 1e6, n)) for _ in range(4)], names=["total", "content", "style", "tv"]
    )
    timings = pa.StructArray.from_arrays(
        [pa.array(rng.uniform(0.01, 60.0, n)) for _ in range(6)],
        names=["load_s", "targets_s", "optimize_s", "write_s", "total_s", "steps_per_second"],
    )
    id_strings = _strings(ids)
    columns = {
        "design_id": id_strings,
        "run_id": constant(run_id, pa.string()),
        "created_at": created,
        "status": pa.array(status.astype(str)),
        "error": pa.array(np.where(failed, "content image: not an image", None).tolist(), pa.string()),
        "content_id": pa.array(contents.astype(str)),
        "style_id": pa.array(styles.astype(str)),
        "style_ids": pa.array([[s] for s in styles.astype(str)], pa.list_(pa.string())),
        "content_uri": pa.array(np.char.add(np.char.add(b"content/", contents), b".png").astype(str)),
        "style_uri": pa.array(np.char.add(np.char.add(b"styles/", styles), b".png").astype(str)),
        "content_sha256": sha(),
        "style_sha256": sha(),
        "collection": constant("spring", pa.string()),
        "pairing_key": _strings(_hex_ids(rng, n)),
        "output_uri": pa.array(
            np.char.add(np.char.add(b"images/", ids), b"-0123456789ab.png").astype(str), pa.string()
        ),
        "output_sha256": sha(),
        "width": constant(512, pa.int32()),
        "height": constant(512, pa.int32()),
        "params": constant(params, SCHEMA.field("params").type),
        "weights_source": constant("keras vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5", pa.string()),
        "loss_every": constant(10, pa.int32()),
        **{f"loss_{name}": array for name, array in loss.items()},
        "final_loss": final,
        "timings": timings,
        "device": constant("cuda:0", pa.string()),
        "device_name": constant("NVIDIA H100 80GB HBM3", pa.string()),
        "batch_size": constant(16, pa.int32()),
        "tags": constant(["floral"], pa.list_(pa.string())),
        "versions": constant({"package": "0.1.0", "torch": "2.13.0", "python": "3.11"}, SCHEMA.field("versions").type),
    }
    return pa.table({f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in SCHEMA}, schema=SCHEMA)


def _rows_as_dicts(table) -> list[dict[str, Any]]:
    """A shard's rows as the flow hands them to DesignCatalog.commit."""
    return table.to_pylist()


class Night:
    """Tonight's designs of one batch group, in planning's order (sorted by id), cut into shards."""

    def __init__(self, designs: int, rng: np.random.Generator):
        self.ids = np.sort(_hex_ids(rng, designs))
        self.rng = rng
        self.next = 0

    def shard(self) -> np.ndarray:
        """The next shard of neighbouring ids, taken from all over the night (devices finish out of order)."""
        start = int(self.rng.integers(0, len(self.ids) // SHARD)) * SHARD
        return self.ids[start : start + SHARD]


def build_catalog(out: Path, rows: int, night: Night, rng: np.random.Generator, log: Callable[[str], None]) -> dict:
    """The table of `rows` designs: earlier nights appended, tonight's first shards committed."""
    from deltalake import CommitProperties, write_deltalake

    from pipeline.catalog.designs import DesignCatalog
    from pipeline.catalog.maintenance import CLUSTERED_FILE_BYTES

    catalog = DesignCatalog(out)
    table = catalog.ensure_table()
    earlier_ids = np.sort(_hex_ids(rng, rows - TAIL_SHARDS * SHARD))
    t0 = time.perf_counter()
    # Written in id order, in files of the size maintenance writes: the table as the last
    # maintenance left it (written through maintain() instead, each size would be rewritten twice).
    for start in range(0, len(earlier_ids), BUILD_BATCH):
        batch = synthetic_rows(earlier_ids[start : start + BUILD_BATCH], rng, f"night-{start // BUILD_BATCH}")
        write_deltalake(
            table,
            batch,
            mode="append",
            target_file_size=CLUSTERED_FILE_BYTES,
            commit_properties=CommitProperties(custom_metadata={"run_id": "bench-build", "designs.note": "build"}),
        )
        table = catalog.table()
    del earlier_ids
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(TAIL_SHARDS):
        catalog.commit(_rows_as_dicts(synthetic_rows(night.shard(), rng, "tonight", failed_every=10**9)), "tonight")
    tail_s = time.perf_counter() - t0
    log(
        f"  {rows:,} rows: earlier nights appended in {build_s:.0f} s, {TAIL_SHARDS} shards committed in {tail_s:.1f} s"
    )
    return {"build_s": build_s, "tail_commits_s": tail_s}


def catalog_files(out: Path) -> list[str]:
    from pipeline.catalog.designs import DesignCatalog

    return DesignCatalog(out).table().file_uris()


def _child(kind: str, out: Path, shards: int = 0, seed: int = 0, night: int = 0, baseline: bool = False) -> dict:
    """Run one measurement in a fresh process: its peak RSS is the measurement's own."""
    command = [sys.executable, "-m", "benchmarks.catalog", kind, str(out), str(shards), str(seed), str(night)]
    if baseline:
        command.append("--full-merge")
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=Path(__file__).parent.parent)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} child failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _full_merges():
    from pipeline.catalog.designs import DesignCatalog

    class FullMerges(DesignCatalog):
        """The baseline: merges that name no id ranges, so each reads the whole table."""

        def merge_ranges(self, design_ids: list[str]) -> None:
            return None

    return FullMerges


def _child_main(argv: list[str]) -> None:
    kind, out, shards, seed, night = argv[0], Path(argv[1]), int(argv[2]), int(argv[3]), int(argv[4])
    from pipeline.catalog.designs import DesignCatalog

    catalog = _full_merges()(out) if "--full-merge" in argv else DesignCatalog(out)
    result: dict[str, Any] = {}
    if kind == "commit":
        rng = np.random.default_rng(seed)
        tonight = Night(night, rng)
        shard_rows = [_rows_as_dicts(synthetic_rows(tonight.shard(), rng, "timed", 10**9)) for _ in range(shards)]
        times = []
        for rows in shard_rows:
            t0 = time.perf_counter()
            catalog.commit(rows, "timed", "bench")
            times.append(time.perf_counter() - t0)
        result["commit_s"] = times
    else:
        t0 = time.perf_counter()
        done = catalog.done_ids()
        result.update(done_ids_s=time.perf_counter() - t0, done_ids=len(done), done_ids_bytes=done.nbytes)
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))


def peak_rss_mib() -> float:
    """This process's peak resident set. Not ru_maxrss: Linux carries it over from the parent
    through fork and exec, so a child would report the bench's own peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)


def query_blocks() -> list[tuple[str, str]]:
    """(a name, the SQL) of each worked query in docs/ANALYSTS.md."""
    import re

    text = (Path(__file__).parent.parent / "docs" / "ANALYSTS.md").read_text()
    blocks = re.findall(r"^```sql\n(.*?)^```", text, flags=re.S | re.M)
    named = []
    for sql in blocks:
        comment = next((line[3:].strip() for line in sql.splitlines() if line.startswith("-- ")), None)
        first = " ".join(sql.split())[:60]
        named.append((comment or first, sql))
    return named


def run_catalog_bench(
    sizes: tuple[int, ...],
    night: int,
    full_merge_up_to: int,
    workdir: str | None,
    keep: bool = False,
    log: Callable[[str], None] = print,
    queries: bool = True,
) -> dict[str, Any]:
    """keep: build each table under `workdir` and keep it; a later run reuses it (built and
    maintained once) and repeats only the measurements."""
    from pipeline.views.query import query

    tables: list[tuple[Path, dict[str, Any]]] = []
    with contextlib.ExitStack() as stack:
        for rows in sizes:
            rng = np.random.default_rng(rows)
            if keep:
                folder = Path(workdir or tempfile.gettempdir()) / f"catalog-bench-{rows}"
            else:
                folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="catalog-bench-", dir=workdir)))
            out, built = folder / "out", folder / "built.json"
            result: dict[str, Any] = {"rows": rows, "night": night}
            if keep and built.exists():
                # Built (and maintained, where the disk allowed) by an earlier run: only the
                # measurements are repeated, and a maintenance that was skipped is tried again.
                result.update(json.loads(built.read_text()))
                log(f"  {rows:,} rows: reusing the table built at {out}")
                if "maintenance_skipped" in result:
                    result.pop("maintenance_skipped")
                    _maintenance(out, result, log)
                    built.write_text(json.dumps(result) + "\n")
            else:
                if folder.exists() and keep:
                    shutil.rmtree(folder)  # an unfinished build
                result.update(build_catalog(out, rows, Night(night, rng), rng, log))
                result["table_bytes"] = sum(f.stat().st_size for f in (out / "designs").rglob("*.parquet"))
                _maintenance(out, result, log)
                if keep:
                    built.write_text(json.dumps(result) + "\n")
            tables.append((out, result))
        # Commits round-robin over the sizes: a load that comes and goes on a shared machine
        # weighs on every size alike.
        for round_ in range(COMMIT_ROUNDS):
            for out, result in tables:
                shipped = _child("commit", out, SHARDS_PER_ROUND, seed=result["rows"] * 10 + round_, night=night)
                result.setdefault("commit_s", []).extend(shipped["commit_s"])
                result["commit_rss_mib"] = max(result.get("commit_rss_mib", 0.0), shipped["peak_rss_mib"])
        for out, result in tables:
            rows = result["rows"]
            log(
                f"  {rows:,} rows: commit of a {SHARD}-row shard: median {statistics.median(result['commit_s']):.3f} s, "
                f"max {max(result['commit_s']):.3f} s, peak RSS {result['commit_rss_mib']:,.0f} MiB"
            )
            if rows <= full_merge_up_to:
                full = _child("commit", out, 3, seed=rows + 2, night=night, baseline=True)
                result.update(full_merge_s=full["commit_s"], full_merge_rss_mib=full["peak_rss_mib"])
                log(
                    f"  full-table merge (the earlier commit): median {statistics.median(full['commit_s']):.3f} s, "
                    f"peak RSS {full['peak_rss_mib']:,.0f} MiB"
                )
            done = _child("done", out)
            result.update(done_ids_s=done["done_ids_s"], done_ids_rss_mib=done["peak_rss_mib"])
            log(
                f"  done ids: {done['done_ids']:,} in {done['done_ids_s']:.2f} s, peak RSS {done['peak_rss_mib']:,.0f} MiB"
            )
            timings = []
            for name, sql in query_blocks() if queries else ():
                t0 = time.perf_counter()
                answer = query(out, sql)
                timings.append({"query": name, "seconds": time.perf_counter() - t0, "rows": answer.num_rows})
                log(f"  query {name!r}: {timings[-1]['seconds']:.2f} s")
            result["queries"] = timings
    results = [result for _, result in tables]
    return {"device": _cpu_label(), "date": _utc_now(), "sizes": results}


def _maintenance(out: Path, result: dict[str, Any], log: Callable[[str], None]) -> None:
    """`maintain` on the built table, timed, when the disk holds what it writes: the small
    files' sorted copy, or for a re-sort of the whole table its second copy and its sort's
    spill. Otherwise only a checkpoint, and the reason in result["maintenance_skipped"]."""
    from pipeline.catalog.compaction import data_files
    from pipeline.catalog.designs import DesignCatalog
    from pipeline.catalog.maintenance import RESORT, maintain
    from pipeline.config import config_field

    plan = maintain(out, dry_run=True)
    below = config_field("maintain_small_file_bytes").default
    small = sum(f.size for f in data_files(DesignCatalog(out).table()) if f.size < below)
    needed = MAINTENANCE_DISK_FACTOR * (result["table_bytes"] if plan.strategy == RESORT else small)
    free = shutil.disk_usage(out).free
    if free < needed:
        result["maintenance_skipped"] = (
            f"a {plan.strategy} needs about {needed / 2**30:.0f} GiB free for a "
            f"{result['table_bytes'] / 2**30:.1f} GiB table, {free / 2**30:.0f} GiB here"
        )
        result["files_before"] = len(catalog_files(out))
        # Its cheap part still: readers and commits start from a checkpoint, as
        # delta-rs' own one every 100 commits would give them.
        DesignCatalog(out).table().create_checkpoint()
        log(f"  maintenance not run: {result['maintenance_skipped']}; a checkpoint written")
        return
    t0 = time.perf_counter()
    # Retention 0: the bench's own table, read by no one else; the files the compaction
    # replaced go, as they would a week later.
    report = maintain(out, retention_hours=0, enforce_retention=False)
    result.update(
        maintenance_s=time.perf_counter() - t0,
        maintenance_strategy=report.strategy,
        layers=report.layers,
        files_before=report.files_before,
        files_after=report.files_after,
        bytes_after=report.bytes_after,
    )
    log(
        f"  maintenance ({report.strategy}, {report.layers} sorted layer(s) after): {report.files_before:,} -> "
        f"{report.files_after:,} data files in {result['maintenance_s']:.0f} s"
    )


def _cpu_label() -> str:
    # benchmarks.common imports torch: the children that measure RSS must not.
    import torch

    from benchmarks.common import device_label

    return device_label(torch.device("cpu"))


def _utc_now() -> str:
    from benchmarks.common import utc_now

    return utc_now()


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _maintenance_cell(r: dict[str, Any]) -> str:
    if "maintenance_skipped" in r:
        return "not run: " + r["maintenance_skipped"]
    if "maintenance_strategy" not in r:  # a table kept from before the strategies were recorded
        return fmt(r.get("maintenance_s"), ".0f")
    return f"{r['maintenance_s']:.0f} ({r['maintenance_strategy']}; {r['layers']} sorted layer(s) after)"


def catalog_rows(result: dict[str, Any]) -> str:
    lines = []
    for r in result["sizes"]:
        commit, full = r["commit_s"], r.get("full_merge_s")
        lines.append(
            f"| {result['date']} | {result['device']} | {r['rows']:,} "
            f"| {r['files_before']:,} / {fmt(r.get('files_after'), ',')} "
            f"| {_maintenance_cell(r)} "
            f"| {statistics.median(commit):.3f} / {max(commit):.3f} "
            f"| {r['commit_rss_mib']:,.0f} "
            f"| {fmt(statistics.median(full) if full else None, '.3f')} / {fmt(max(full) if full else None, '.3f')} "
            f"| {fmt(r.get('full_merge_rss_mib'), ',.0f')} | {r['done_ids_s']:.2f} | {r['done_ids_rss_mib']:,.0f} "
            f"| {r['night']:,} |\n"
        )
    return "".join(lines)


def query_rows(result: dict[str, Any]) -> str:
    """One row per query and size; none when the queries were not timed."""
    return "".join(
        f"| {result['date']} | {result['device']} | {r['rows']:,} | {q['query']} | {q['seconds']:.2f} |\n"
        for r in result["sizes"]
        for q in r["queries"]
    )


if __name__ == "__main__":
    _child_main(sys.argv[1:])
    os._exit(0)  # delta-rs' runtime threads need not be joined
