"""What the review desk (pipeline/views/review.py) reads: a page of designs in curation order,
design rows by id, a design's group, colourways and nearest designs; never the whole table.

- A page without filters reads the curation files whose review_order statistics (the Delta
  log's min/max) meet its range, and in them the row groups whose parquet statistics do; its
  count is the log's record counts. Before any `designs curate`, pages are in design_id order
  through DuckDB (a top-N over the id column: curate for speed at millions of designs).
- Design rows by id: the design table's files whose id bounds (the log) hold one of the ids, and
  in them the row groups whose id statistics do; only the columns asked for.
- Filters (content, style, run, repeat, status, verdict, group) and a design's group and
  colourways: one statement with bound parameters on a DuckDB connection that can open no file
  (the settings of pipeline/catalog/sql.py), over the version's files as pyarrow datasets.

Every file is listed from the Delta log and read only where its real path stays inside its
table's folder (pipeline/catalog/datafiles.py). The file lists are kept per table version: a
commit, a maintenance or a new curation is seen at the next request.
"""

from __future__ import annotations

import bisect
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from deltalake import DeltaTable

from pipeline.catalog.datafiles import DataFile, _plain_type, contained_path, data_files
from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.reviews import reviews_path, verdicts_of
from pipeline.catalog.sql import _CONFIG, designs_files

PAGE_SIZE = 48
CURATION_DIR = "curation"  # contract with `designs curate` (pipeline/catalog/curation.py)
EMBEDDINGS_DIR = "embeddings"
# Nearest designs are searched live up to this many embeddings (256 float16 each: 50 MiB);
# past it the page shows the design's curation group, which `designs curate` made from them.
NEAREST_LIMIT = 100_000
NEAREST_COUNT = 8
RELATED_LIMIT = 24
# A filter's matches are kept (in order, per table versions) up to this many, for the next pages.
MATCHES_KEPT = 200_000
MATCHES_CACHED = 4  # group members and colourways shown on a design's page
_LOG_ENTRY = re.compile(r"(\d{20})\.json")
# The grid's columns; a design's page reads every column.
CARD_COLUMNS = (
    "design_id",
    "status",
    "content_id",
    "style_id",
    "run_id",
    "output_uri",
    "output_sha256",
    "width",
    "height",
    "parent_design_id",
)
FILTERS = ("content", "style", "run", "repeat", "status", "verdict", "group")
STATUSES = ("ok", "failed")
VERDICT_FILTERS = ("favourite", "reject", "unreviewed")
MAX_FILTER_CHARS = 200


class BadRequest(ValueError):
    """A request the desk refuses (4xx): a bad filter, page or id."""


def latest_log_entry(table_path: Path) -> str | None:
    """The name of the newest log entry (None: no table): a listing, no file read."""
    try:
        with os.scandir(table_path / "_delta_log") as entries:
            names = [e.name for e in entries if _LOG_ENTRY.fullmatch(e.name)]
    except (FileNotFoundError, NotADirectoryError):
        return None
    return max(names) if names else None


@dataclass
class _Files:
    """A table version's data files, their real paths and (for ordered lookups) statistics."""

    key: str
    table: DeltaTable
    files: list[DataFile]
    real: list[str]
    low: list[Any] = field(default_factory=list)  # per file: the lookup column's min (None: unknown)
    high: list[Any] = field(default_factory=list)
    rows: int = 0
    path: Path | None = None
    run_low: list[Any] = field(default_factory=list)  # per file: run_id statistics (designs)
    run_high: list[Any] = field(default_factory=list)
    _datasets: Any = None

    def datasets(self) -> Any:
        """The version's files as pipeline/catalog/sql.py's scanned and streamed datasets, made once."""
        if self._datasets is None:
            self._datasets = designs_files(self.table, self.path)
        return self._datasets


def _files(table_path: Path, key: str, stat_column: str) -> _Files:
    table = DeltaTable(str(table_path))
    files = data_files(table, stats_columns=(stat_column, "run_id"))
    real = [contained_path(table_path, f) for f in files]

    def pick(column: str, end: int) -> list[Any]:
        return [f.bounds(column)[end] for f in files]

    low, high = pick(stat_column, 0), pick(stat_column, 1)
    run_low, run_high = pick("run_id", 0), pick("run_id", 1)

    return _Files(
        key,
        table,
        files,
        real,
        low,
        high,
        sum(f.rows or 0 for f in files),
        table_path,
        run_low,
        run_high,
    )


def _plain(table: pa.Table) -> pa.Table:
    """Views as plain strings, nested ones too (delta-rs writes string_view; pyarrow has no
    filter kernel for them)."""
    columns = [column.cast(_plain_type(column.type)) for column in table.columns]
    return pa.table(columns, names=table.column_names)


_ALL_NULL = ("", "")  # bounds no value (but the empty string, never looked up) falls in


def _row_group_bounds(meta: pq.FileMetaData, column: str) -> list[tuple[Any, Any]]:
    """Per row group the column's (min, max) statistics, (None, None) where it has none."""
    index = next((i for i in range(meta.num_columns) if meta.schema.column(i).path == column), None)
    out = []
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(index).statistics if index is not None else None
        if stats is not None and stats.has_null_count and stats.null_count == meta.row_group(g).num_rows:
            out.append(_ALL_NULL)  # no value to match
        elif stats is None or not stats.has_min_max:
            out.append((None, None))
        else:
            low, high = stats.min, stats.max
            if isinstance(low, bytes):
                low, high = low.decode("utf-8", "replace"), high.decode("utf-8", "replace")
            out.append((low, high))
    return out


def _read_groups(path: str, columns: Sequence[str] | None, keep: Any) -> pa.Table | None:
    """The row groups of the file at `path` whose statistics `keep(low, high)` accepts, with
    the `columns` the file has (struct fields by their parent's name); None: none kept."""
    file = pq.ParquetFile(path)
    meta = file.metadata
    top = {name.split(".")[0] for name in file.schema_arrow.names}
    groups = [
        g
        for g, bounds in enumerate(keep(meta))
        if bounds is not _ALL_NULL and (bounds[0] is None or bounds[1] is None or keep.accepts(*bounds))
    ]
    if not groups:
        return None
    present = None if columns is None else [c for c in columns if c in top]
    return _plain(file.read_row_groups(groups, columns=present))


class _In:
    """Row groups whose `column` range holds one of the sorted values."""

    def __init__(self, column: str, values: list[Any]):
        self.column, self.values = column, values

    def __call__(self, meta: pq.FileMetaData) -> list[tuple[Any, Any]]:
        return _row_group_bounds(meta, self.column)

    def accepts(self, low: Any, high: Any) -> bool:
        i = bisect.bisect_left(self.values, low)
        return i < len(self.values) and self.values[i] <= high


class _OrderIn:
    """Row groups whose review_order range meets [start, stop)."""

    def __init__(self, start: int, stop: int):
        self.start, self.stop = start, stop

    def __call__(self, meta: pq.FileMetaData) -> list[tuple[Any, Any]]:
        return _row_group_bounds(meta, "review_order")

    def accepts(self, low: int, high: int) -> bool:
        return low < self.stop and high >= self.start


def _where_in(
    files: _Files,
    column: str,
    values: Iterable[Any],
    columns: Sequence[str] | None,
    by_file_bounds: bool,
    only: Iterable[int] | None = None,
) -> list[dict[str, Any]]:
    """The rows whose `column` is one of `values` (the `columns` asked for and `column`; None:
    all), partition values filled in: a file at a time, skipping the files whose log
    statistics (`by_file_bounds`: they are of `column`) and the row groups whose parquet
    statistics leave the values out."""
    wanted = sorted(set(values))
    if not wanted:
        return []
    keep = _In(column, wanted)
    value_set = pa.array(wanted)
    read = None if columns is None else list(dict.fromkeys([column, *columns]))
    found = []
    for i in range(len(files.real)) if only is None else only:
        real = files.real[i]
        low, high = files.low[i], files.high[i]
        if by_file_bounds and low is not None and high is not None and not keep.accepts(low, high):
            continue
        part = _read_groups(real, read, keep)
        if part is None or column not in part.column_names:
            continue
        part = part.filter(pc.is_in(part.column(column), value_set=value_set))
        partition = dict(files.files[i].partition)  # `status`: in the file's path, not in the file
        found.extend({**row, **partition} for row in part.to_pylist())
    return found


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]  # design rows (CARD_COLUMNS) in order, with "review_order" and "verdict"
    start: int  # index of the first row among the matches
    matches: int
    curated: bool


class Reader:
    """The review desk's reads of OUT (thread-safe; DuckDB connections are made per statement)."""

    def __init__(self, out: str | Path, cache_rows: int = 20_000):
        self.out = Path(out)
        self.catalog = DesignCatalog(self.out)
        self._lock = threading.Lock()
        self._designs: _Files | None = None
        self._curation: _Files | None = None
        self._cards: OrderedDict[str, dict[str, Any]] = OrderedDict()  # design_id -> card row, LRU
        self._cache_rows = cache_rows
        self._nearest: tuple[str, np.ndarray, np.ndarray] | None = None
        self._sql_lock = threading.Lock()
        self._verdicts: tuple[tuple[str | None, str], dict[str, str]] | None = None
        self._matches: OrderedDict[tuple, tuple[list[str], list[int]]] = OrderedDict()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._con_key: tuple[str, str | None] | None = None

    # --- the tables' file lists, per version ---

    def designs(self) -> _Files:
        key = latest_log_entry(self.catalog.table_path)
        if key is None:
            raise FileNotFoundError(f"no design catalog at {self.catalog.table_path}; run `designs generate` first")
        with self._lock:
            if self._designs is None or self._designs.key != key:
                self._designs = _files(self.catalog.table_path, key, "design_id")
                self._cards.clear()
            return self._designs

    def curation(self) -> _Files | None:
        path = self.out / CURATION_DIR
        key = latest_log_entry(path)
        if key is None:
            return None
        with self._lock:
            if self._curation is None or self._curation.key != key:
                self._curation = _files(path, key, "review_order")
            return self._curation

    # --- rows ---

    def rows_by_id(self, ids: Iterable[str], columns: Sequence[str] | None = CARD_COLUMNS) -> dict[str, dict[str, Any]]:
        """design_id -> row (the columns asked for; None: all) for the ids in the table; the others are absent."""
        return {row["design_id"]: row for row in _where_in(self.designs(), "design_id", ids, columns, True)}

    def cards(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Card rows, from the cache where the page or an image request read them already."""
        missing = [d for d in ids if d not in self._cards]
        if missing:
            fresh = self.rows_by_id(missing)
            with self._lock:
                for design_id, row in fresh.items():
                    self._cards[design_id] = row
                while len(self._cards) > self._cache_rows:
                    self._cards.popitem(last=False)
        with self._lock:
            for d in ids:
                if d in self._cards:
                    self._cards.move_to_end(d)
            return {d: self._cards[d] for d in ids if d in self._cards}

    def card(self, design_id: str) -> dict[str, Any] | None:
        return self.cards([design_id]).get(design_id)

    # --- pages ---

    def page(self, page: int, filters: dict[str, str], reviewer: str) -> Page:
        """Page `page` (1-based) of the designs that match `filters`, in curation order."""
        check_filters(filters)
        start = (page - 1) * PAGE_SIZE
        verdicts = self.verdicts(reviewer)
        curation = self.curation()
        if curation is not None and not filters:
            ids, orders, matches = self._curation_slice(curation, start, PAGE_SIZE)
        else:
            ids, orders, matches = self._filtered(curation, start, filters, verdicts)
        cards = self.cards(ids)
        rows = []
        for design_id, order in zip(ids, orders, strict=True):
            row = dict(cards.get(design_id) or {"design_id": design_id, "status": "missing"})
            row["review_order"] = order
            row["verdict"] = verdicts.get(design_id)
            rows.append(row)
        return Page(rows, start, matches, curation is not None)

    def _curation_slice(self, curation: _Files, start: int, count: int) -> tuple[list[str], list[int], int]:
        stop = start + count
        keep = _OrderIn(start, stop)
        parts = []
        for i, real in enumerate(curation.real):
            low, high = curation.low[i], curation.high[i]
            if low is not None and high is not None and not keep.accepts(low, high):
                continue
            part = _read_groups(real, ["design_id", "review_order"], keep)
            if part is not None:
                parts.append(
                    part.filter(
                        pc.and_(
                            pc.greater_equal(part.column("review_order"), start),
                            pc.less(part.column("review_order"), stop),
                        )
                    )
                )
        if not parts:
            return [], [], curation.rows
        rows = pa.concat_tables(parts).sort_by("review_order")
        return rows.column("design_id").to_pylist(), rows.column("review_order").to_pylist(), curation.rows

    @contextmanager
    def sql(
        self, designs_columns: Sequence[str], curation_columns: Sequence[str] = ()
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """The DuckDB connection of the tables' current versions, one statement at a time: it
        can open no file and holds `designs` and (when curated) `curation` with the columns
        named (of SQL_COLUMNS: every other column is never read); made again when a version changes."""
        designs, curation = self.designs(), self.curation()
        key = (designs.key, curation.key if curation is not None else None)
        with self._sql_lock:
            if self._con is None or self._con_key != key:
                if self._con is not None:
                    self._con.close()
                self._con, self._con_key = None, None
                con = duckdb.connect(config=_CONFIG)
                try:
                    con.execute("SET enable_external_access = false")
                    con.execute("SET lock_configuration = true")
                except BaseException:
                    con.close()
                    raise
                self._con, self._con_key = con, key
            _register(self._con, "designs", designs.datasets(), designs_columns)
            if curation is not None:
                _register(self._con, "curation", curation.datasets(), curation_columns or ["design_id"])
            yield self._con

    def _filtered(
        self, curation: _Files | None, start: int, filters: dict[str, str], verdicts: dict[str, str]
    ) -> tuple[list[str], list[int], int]:
        where: list[str] = []
        params: list[Any] = []
        design_filters = {
            "content": "d.content_id = ?",
            "style": "d.style_id = ?",
            "run": "d.run_id = ?",
            "repeat": "d.repeat = ?",
            "status": "d.status = ?",
        }
        design_columns = ["design_id"] + [design_filters[k][2:].split(" ")[0] for k in design_filters if k in filters]
        curation_columns = ["design_id", "review_order"] + (["group_id"] if "group" in filters else [])
        uses_designs = curation is None or any(k in filters for k in design_filters)
        for key, clause in design_filters.items():
            if key in filters:
                where.append(clause)
                params.append(filters[key])
        if "group" in filters:
            if curation is None:
                raise BadRequest("group: the designs are not curated yet; run `designs curate OUT` first")
            where.append("c.group_id = ?")
            params.append(filters["group"])
        picked = None
        if "verdict" in filters:
            wanted = filters["verdict"]
            ids = [d for d, v in verdicts.items() if wanted == "unreviewed" or v == wanted]
            picked = pa.table({"design_id": pa.array(ids, pa.string())})
            key = "c.design_id" if curation is not None else "d.design_id"
            negate = "not " if wanted == "unreviewed" else ""
            where.append(f"{key} {negate}in (select design_id from picked)")
        if curation is not None:
            source = "curation c" + (" join designs d on d.design_id = c.design_id" if uses_designs else "")
            order, id_column = "c.review_order", "c.design_id"
        else:
            source, order, id_column = "designs d", "d.design_id", "d.design_id"
        condition = " where " + " and ".join(where) if where else ""
        curated_order = curation is not None
        key = (
            self.designs().key,
            curation.key if curation is not None else None,
            tuple(sorted(filters.items())),
            tuple(sorted(picked.column("design_id").to_pylist())) if picked is not None else None,
        )
        with self._lock:
            cached = self._matches.get(key)
            if cached is not None:
                self._matches.move_to_end(key)
        if cached is None and where:
            # Every match in order, once: the next pages and a design's previous / next are slices.
            with self.sql(design_columns, curation_columns) as con:
                if picked is not None:
                    con.register("picked", picked)
                found = con.execute(
                    f"select {id_column}, {order} from {source}{condition} order by {order} limit {MATCHES_KEPT + 1}",
                    params,
                ).fetchall()
                if picked is not None:
                    con.unregister("picked")
            if len(found) <= MATCHES_KEPT:
                cached = ([r[0] for r in found], [r[1] for r in found])
                with self._lock:
                    self._matches[key] = cached
                    while len(self._matches) > MATCHES_CACHED:
                        self._matches.popitem(last=False)
        if cached is not None:
            ids = cached[0][start : start + PAGE_SIZE]
            orders = cached[1][start : start + PAGE_SIZE] if curated_order else list(range(start, start + len(ids)))
            return ids, orders, len(cached[0])
        with self.sql(design_columns, curation_columns) as con:
            if picked is not None:
                con.register("picked", picked)
            # One scan for the page and the count of matches (a window over every match).
            page = con.execute(
                f"select {id_column}, {order}, count(*) over () from {source}{condition} order by {order} "
                f"limit {PAGE_SIZE} offset {int(start)}",
                params,
            ).fetchall()
            if not where and curation is None:
                matches = self.designs().rows
            elif page:
                matches = page[0][2]
            else:  # past the last page
                matches = con.execute(f"select count(*) from {source}{condition}", params).fetchone()[0]
            if picked is not None:
                con.unregister("picked")
        ids = [r[0] for r in page]
        # An uncurated catalog's order is design_id's: a design's index there is its rank.
        orders = [r[1] for r in page] if curated_order else list(range(start, start + len(ids)))
        return ids, orders, matches

    def at(self, index: int, filters: dict[str, str], reviewer: str) -> tuple[str, int] | None:
        """The design at position `index` (0-based) of the filtered order and its review_order, or None."""
        if index < 0:
            return None
        page = self.page(index // PAGE_SIZE + 1, filters, reviewer)
        offset = index - page.start
        if not 0 <= offset < len(page.rows):
            return None
        return page.rows[offset]["design_id"], page.rows[offset]["review_order"]

    # --- a design's page ---

    def curation_of(
        self, design_id: str, review_order: int | None = None
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The design's curation row and its group's members (best first), or (None, []).
        `review_order`: where the grid says it is (checked; a page of rows read instead of a scan)."""
        curation = self.curation()
        if curation is None:
            return None, []
        found = None
        if review_order is not None:
            ids, _, _ = self._curation_slice(curation, review_order, 1)
            if ids == [design_id]:
                found = _where_in(curation, "review_order", [review_order], None, True)
        if not found:
            found = _where_in(curation, "design_id", [design_id], None, False)
        if not found:
            return None, []
        row = found[0]
        members = _where_in(
            curation, "group_id", [row["group_id"]], ["design_id", "rank_in_group", "score", "review_order"], False
        )
        members.sort(key=lambda m: (m["rank_in_group"], m["design_id"]))
        return row, members[:RELATED_LIMIT]

    def colourways_of(self, row: dict[str, Any]) -> list[str]:
        """The colourways made of this design, or (for a colourway) its parent's other ones."""
        parent = row.get("parent_design_id") or row["design_id"]
        # Colourways are committed by `designs colourways` runs (OUT/runs/<time>-colourways): only
        # the files whose run_id statistics can hold one of those runs are read.
        runs = sorted(p.name for p in (self.out / "runs").glob("*-colourways"))
        if not runs:
            return []
        designs = self.designs()
        keep = _In("run_id", runs)
        only = [
            i
            for i in range(len(designs.real))
            if designs.run_low[i] is None
            or designs.run_high[i] is None
            or keep.accepts(designs.run_low[i], designs.run_high[i])
        ]
        found = _where_in(designs, "parent_design_id", [parent], ["design_id"], False, only)
        ids = sorted(r["design_id"] for r in found if r.get("status") == "ok" and r["design_id"] != row["design_id"])
        return ids[:RELATED_LIMIT]

    def nearest(self, design_id: str) -> tuple[list[tuple[str, float]], str]:
        """The nearest designs by embedding (cosine), and a line saying what was searched."""
        path = self.out / EMBEDDINGS_DIR
        key = latest_log_entry(path)
        if key is None:
            return [], "no embeddings yet (`designs generate` records them; older designs need a backfill)"
        with self._lock:
            cached = self._nearest if self._nearest is not None and self._nearest[0] == key else None
        if cached is None:
            table = DeltaTable(str(path))
            total = sum(f.rows or 0 for f in data_files(table))
            if total > NEAREST_LIMIT:
                return [], (
                    f"{total:,} embeddings: more than the {NEAREST_LIMIT:,} searched live; the curation group "
                    "above holds this design's near duplicates"
                )
            from pipeline.catalog.embeddings import read_embeddings  # the embeddings table's reader

            ids, vectors = read_embeddings(self.out)
            matrix = vectors.astype(np.float32)
            if matrix.size:
                matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
            cached = (key, np.asarray(ids), matrix)
            with self._lock:
                self._nearest = cached
        _, ids, matrix = cached
        where = np.flatnonzero(ids == design_id)
        if where.size == 0:
            return [], "this design has no embedding"
        scores = matrix @ matrix[where[0]]
        scores[where[0]] = -np.inf
        best = np.argsort(-scores)[:NEAREST_COUNT]
        return [(str(ids[i]), float(scores[i])) for i in best if np.isfinite(scores[i])], (
            f"cosine over {len(ids):,} embeddings"
        )

    def reviews_key(self) -> str | None:
        return latest_log_entry(reviews_path(self.out))

    def verdicts(self, reviewer: str) -> dict[str, str]:
        """The reviewer's latest verdicts (design_id -> verdict, `clear` left out), read again
        only when the reviews table has a new version."""
        key = (self.reviews_key(), reviewer)
        with self._lock:
            if self._verdicts is not None and self._verdicts[0] == key:
                return self._verdicts[1]
        found = verdicts_of(self.out, reviewer)
        with self._lock:
            self._verdicts = (key, found)
        return found


class _Projected:
    """A dataset DuckDB reads through the Arrow stream protocol: only the named columns (struct
    fields too), a fresh scan each time it asks; DuckDB filters the rows itself (pyarrow
    filters no string_view column, which the files delta-rs writes have)."""

    def __init__(self, dataset: ds.Dataset, columns: dict[str, ds.Expression]):
        self.dataset, self.columns = dataset, columns

    def __arrow_c_stream__(self, requested_schema: object = None) -> object:
        return self.dataset.scanner(columns=self.columns).to_reader().__arrow_c_stream__(requested_schema)


# What the filters and a design's page ask of each table, by name in SQL.
SQL_COLUMNS = {
    "designs": ("design_id", "status", "content_id", "style_id", "run_id", "repeat", "parent_design_id"),
    "curation": ("design_id", "group_id", "review_order"),
}


def _expressions(schema: pa.Schema, names: Sequence[str]) -> dict[str, ds.Expression]:
    """Each name as its column, `repeat` as params.repeat; null where the table has none (an old table)."""
    out = {}
    for name in names:
        if name == "repeat":
            params = schema.field("params").type if "params" in schema.names else None
            present = params is not None and params.get_field_index("repeat") >= 0
            out[name] = ds.field("params", "repeat") if present else ds.scalar(pa.scalar(None, pa.string()))
        else:
            out[name] = ds.field(name)
    return out


def _register(con: duckdb.DuckDBPyConnection, name: str, files: Any, names: Sequence[str]) -> None:
    """`name` in `con` (replacing the last): the columns `names` (of SQL_COLUMNS) of every file,
    plain and string-view ones."""
    unknown = set(names) - set(SQL_COLUMNS[name])
    if unknown:
        raise ValueError(f"{name}: no column {sorted(unknown)}; accepted: {', '.join(SQL_COLUMNS[name])}")
    columns = _expressions(files.scanned.schema, list(dict.fromkeys(names)))
    con.register(f"{name}_scanned", _Projected(files.scanned, columns))
    con.register(f"{name}_streamed", _Projected(files.streamed, columns))
    con.execute(
        f"create or replace temporary view {name} as select * from {name}_scanned union all select * from {name}_streamed"
    )


def check_filters(filters: dict[str, str]) -> None:
    """BadRequest naming a filter that is unknown or whose value is not accepted."""
    for key, value in filters.items():
        if key not in FILTERS:
            raise BadRequest(f"unknown filter {key[:40]!r}; accepted: {', '.join(FILTERS)}")
        if not value or len(value) > MAX_FILTER_CHARS or any(ord(c) < 32 for c in value):
            raise BadRequest(f"filter {key}: a value of 1 to {MAX_FILTER_CHARS} printable characters")
        if key == "status" and value not in STATUSES:
            raise BadRequest(f"status {value[:40]!r} is invalid; accepted: {', '.join(STATUSES)}")
        if key == "verdict" and value not in VERDICT_FILTERS:
            raise BadRequest(f"verdict {value[:40]!r} is invalid; accepted: {', '.join(VERDICT_FILTERS)}")
