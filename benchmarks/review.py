"""The review desk at scale: `python -m benchmarks.review --rows 10000000` builds a synthetic
design catalog and its curation table, then times the desk's pages in this process through
the app itself (Starlette's TestClient: routing, rendering and the reads of
pipeline/views/review_pages.py), and records them in docs/BENCHMARKS.md.

The design table has the real schema, sorted by design_id in files of about the rows per file
of the catalog benchmark's tables after maintenance (10M rows in about 3,300 files: their
loss curves make its rows large), plus tonight's shards committed through DesignCatalog.commit;
the columns the desk does not read are left null (a few GB less on disk, the same files and
row groups to find). The curation table is a random order of every id written by `designs
curate`'s own writer (pipeline/catalog/curation.py): representatives first, 65,536 rows a file.

Timed, each a fresh request: the first page right after start (the file lists read from the
logs), the first page again (the lists kept, the rows not), a deep page, a filtered page
(content), and a design's page (its group and colourways). Peak RSS is the process's.
"""

from __future__ import annotations

import argparse
import binascii
import html
import resource
import shutil
import statistics
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"
ROWS_PER_FILE = 3_000  # the catalog benchmark's 10M rows are 3,252 files after maintenance
BATCH = 500_000
TAIL_SHARDS = 8
SHARD = 128
REPEATS = 5
TABLE = (
    "| date | device | designs | first page after start s | first page s median / max | first page CPU s | a deep page s "
    "| filtered page (content) s | design page from the grid / by id alone s | peak RSS MiB | files designs / curation |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
)


def _ids(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.frombuffer(binascii.hexlify(rng.bytes(16 * n)), dtype="S32")


def _strings(values: np.ndarray):
    import pyarrow as pa

    width = values.dtype.itemsize
    offsets = np.arange(0, width * len(values) + 1, width, dtype=np.int32)
    return pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(values.tobytes()))


def lean_rows(ids: np.ndarray, rng: np.random.Generator, run_id: str):
    """Rows of the real schema with what the desk reads filled, the rest null."""
    import pyarrow as pa

    from pipeline.catalog.schema import SCHEMA, params_value
    from pipeline.config import Config

    n = len(ids)
    zeros = pa.array(np.zeros(n, dtype=np.int32))
    contents = np.char.add(b"c", np.char.zfill(rng.integers(0, 1000, n).astype("S4"), 4))
    styles = np.char.add(b"s", np.char.zfill(rng.integers(0, 1000, n).astype("S4"), 4))
    sha = np.frombuffer(binascii.hexlify(rng.bytes(32 * n)), dtype="S64")
    uri = np.char.add(np.char.add(np.char.add(b"images/", np.char.ljust(ids, 2)), b"/"), ids)
    uri = np.char.add(np.char.add(np.char.add(uri, b"-"), np.char.ljust(sha, 12)), b".png")
    params = params_value(Config(), "keras:vgg19_weights_tf_dim_ordering_tf_kernels_notop", "caffe")
    created = datetime.now(UTC)
    columns = {
        "design_id": _strings(ids),
        "run_id": pa.array([run_id], pa.string()).take(zeros),
        "created_at": pa.array([created], pa.timestamp("us", tz="UTC")).take(zeros),
        "status": pa.array(["ok"], pa.string()).take(zeros),
        "content_id": pa.array(contents.astype(str)),
        "style_id": pa.array(styles.astype(str)),
        "output_uri": pa.array(uri.astype(str)),
        "output_sha256": _strings(sha),
        "width": pa.array([512], pa.int32()).take(zeros),
        "height": pa.array([512], pa.int32()).take(zeros),
        "params": pa.array([params], SCHEMA.field("params").type).take(zeros),
        "loss_total": pa.array([[3.0, 2.0, 1.0]], pa.list_(pa.float32())).take(zeros),
    }
    return pa.table({f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in SCHEMA}, schema=SCHEMA)


def build(out: Path, rows: int, seed: int = 0, log=print) -> dict:
    """The design table (sorted files, then tonight's shards) and its curation."""
    import pyarrow as pa
    from deltalake import CommitProperties, write_deltalake

    from pipeline.catalog.curation import CURATION_SCHEMA, write_curation
    from pipeline.catalog.designs import DesignCatalog

    rng = np.random.default_rng(seed)
    catalog = DesignCatalog(out)
    table = catalog.ensure_table()
    ids = np.sort(_ids(rng, rows - TAIL_SHARDS * SHARD))
    t0 = time.perf_counter()
    sample = lean_rows(ids[:ROWS_PER_FILE], rng, "sizing")
    # Bytes a file of ROWS_PER_FILE rows takes, from one written file.
    probe = Path(tempfile.mkdtemp(prefix="review-bench-size-"))
    write_deltalake(str(probe), sample, mode="overwrite", partition_by=["status"])
    file_bytes = sum(p.stat().st_size for p in probe.rglob("*.parquet"))
    shutil.rmtree(probe)
    for start in range(0, len(ids), BATCH):
        write_deltalake(
            table,
            lean_rows(ids[start : start + BATCH], rng, f"night-{start // BATCH}"),
            mode="append",
            target_file_size=file_bytes,
            commit_properties=CommitProperties(custom_metadata={"run_id": "bench-build", "designs.note": "build"}),
        )
        table = catalog.table()
    tonight = np.sort(_ids(rng, TAIL_SHARDS * SHARD))
    for k in range(TAIL_SHARDS):
        shard = lean_rows(tonight[k * SHARD : (k + 1) * SHARD], rng, "tonight")
        catalog.commit(shard.to_pylist(), "tonight")
    build_s = time.perf_counter() - t0
    every = np.concatenate([ids, tonight])
    del ids
    t0 = time.perf_counter()
    order = rng.permutation(len(every))
    groups = np.arange(len(every)) // 4  # groups of 4 neighbours in the random order
    now = datetime.now(UTC)
    n = len(every)
    ranked = every[order]
    zeros = pa.array(np.zeros(n, dtype=np.int32))
    group_ids = np.char.add(b"g", groups.astype("S9"))
    representative = ranked[(groups * 4).clip(max=n - 1)]
    curation = pa.table(
        {
            "design_id": _strings(ranked),
            "group_id": pa.array(group_ids.astype(str)),
            "group_size": pa.array(np.full(n, 4, np.int32)),
            "representative": _strings(representative),
            "rank_in_group": pa.array((np.arange(n) % 4 + 1).astype(np.int32)),
            "score": pa.array(rng.random(n)),
            "review_order": pa.array(np.arange(n, dtype=np.int64)),
            "method": pa.array(["bench"], pa.string()).take(zeros),
            "curated_at": pa.array([now], pa.timestamp("us", tz="UTC")).take(zeros),
            "curation_run": pa.array(["bench"], pa.string()).take(zeros),
        },
        schema=CURATION_SCHEMA,
    )
    write_curation(out, curation, "bench")
    curate_s = time.perf_counter() - t0
    log(f"  {rows:,} designs built in {build_s:.0f} s, curation written in {curate_s:.0f} s")
    return {"build_s": build_s, "curation_s": curate_s}


def measure(out: Path, log=print) -> dict:
    import re

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from pipeline.views.review import create_app

    cpu: list[float] = []

    def timed(client: TestClient, url: str) -> tuple[float, str]:
        t0, c0 = time.perf_counter(), time.process_time()
        response = client.get(url)
        seconds = time.perf_counter() - t0
        cpu.append(time.process_time() - c0)  # every thread's: what other work on the machine leaves alone
        assert response.status_code == 200, (url, response.status_code, response.text[:300])
        return seconds, response.text

    t0 = time.perf_counter()
    app = create_app(out, "bench", ["testserver"])
    client = TestClient(app)
    start_s = time.perf_counter() - t0
    cold, text = timed(client, "/")
    assert len(re.findall(r'class="card"', text)) == 48
    cold += start_s
    desk = app.state.desk
    warm, warm_cpu = [], []
    for _ in range(REPEATS):
        desk.reader._cards.clear()  # the rows read again, as for a page not seen before
        warm.append(timed(client, "/")[0])
        warm_cpu.append(cpu[-1])
    deep_page = max(1, min(100_000, desk.reader.curation().rows // 48 // 2))
    deep, text = timed(client, f"/?page={deep_page}")
    assert len(re.findall(r'class="card"', text)) == 48
    filtered, _ = timed(client, "/?content=c0001")
    # A design's page as the grid links it (its place in the order), and by its id alone.
    link = html.unescape(re.search(r'<a class="card" href="([^"]+)"', timed(client, "/?page=7")[1]).group(1))
    design, _ = timed(client, link)
    bare, _ = timed(client, f"/design/{_other(client)}")
    files = (len(desk.reader.designs().files), len(desk.reader.curation().files))
    result = {
        "first_after_start_s": cold,
        "first_s": warm,
        "first_cpu_s": statistics.median(warm_cpu),
        "deep_s": deep,
        "deep_page": deep_page,
        "filtered_s": filtered,
        "design_s": design,
        "design_bare_s": bare,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "files": files,
    }
    log(
        f"  first page after start {cold:.3f} s, first page median {statistics.median(warm):.3f} s "
        f"(max {max(warm):.3f}, CPU {result['first_cpu_s']:.3f}), page {deep_page:,} {deep:.3f} s, filtered {filtered:.3f} s, design page {design:.3f} s, "
        f"peak RSS {result['peak_rss_mib']:.0f} MiB, files {files}"
    )
    return result


def _other(client) -> str:
    """A design on another page than the one the grid link came from (no row of it cached)."""
    import re

    return re.search(r'data-design="([0-9a-f]{32})"', client.get("/?page=9").text).group(1)


def row(rows: int, result: dict, device: str, when: str) -> str:
    warm = result["first_s"]
    return (
        f"| {when} | {device} | {rows:,} | {result['first_after_start_s']:.3f} | "
        f"{statistics.median(warm):.3f} / {max(warm):.3f} | {result['first_cpu_s']:.3f} | {result['deep_s']:.3f} (page {result['deep_page']:,}) | {result['filtered_s']:.2f} | "
        f"{result['design_s']:.2f} / {result['design_bare_s']:.2f} | {result['peak_rss_mib']:.0f} | {result['files'][0]:,} / {result['files'][1]:,} |\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.review", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="designs in the synthetic catalog")
    parser.add_argument("--keep", default=None, metavar="DIR", help="build (or reuse) the catalog in DIR and keep it")
    parser.add_argument("--note", default="", help="said after the device in the table (e.g. the machine was busy)")
    parser.add_argument("--no-record", action="store_true", help="print, do not add to docs/BENCHMARKS.md")
    args = parser.parse_args(argv)
    import torch

    from benchmarks.common import append_table_rows, device_label, utc_now

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="review-bench-"))
    try:
        if not (folder / "curation").exists():
            build(folder, args.rows)
        result = measure(folder)
        device = device_label(torch.device("cpu")) + (f"; {args.note}" if args.note else "")
        text = row(args.rows, result, device, utc_now())
        print(TABLE + text, end="")
        if not args.no_record:
            append_table_rows(DOCS, "The review desk at scale (`python -m benchmarks.review`)", TABLE, text)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
