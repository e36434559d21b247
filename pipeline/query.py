"""SQL over the design catalog with DuckDB.

DuckDB's delta extension would need a download, so the table is read through
deltalake's pyarrow dataset (any version) and registered as `designs`.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from pipeline.design_catalog import DesignCatalog


def connect(out: str | Path, version: int | None = None) -> duckdb.DuckDBPyConnection:
    dataset = DesignCatalog(out).table(version).to_pyarrow_dataset()
    con = duckdb.connect()
    con.register("designs", dataset)
    return con


def query(out: str | Path, sql: str, version: int | None = None) -> pa.Table:
    con = connect(out, version)
    try:
        return con.execute(sql).to_arrow_table()
    except duckdb.Error as err:
        raise ValueError(f"query failed: {err}") from None
    finally:
        con.close()


def print_query(out: str | Path, sql: str, version: int | None = None) -> None:
    table = query(out, sql, version)
    frame = table.to_pandas()
    with pd.option_context("display.max_rows", 200, "display.max_columns", 50, "display.width", 200, "display.max_colwidth", 60):
        print(frame.to_string(index=False) if len(frame) else f"(no rows; columns: {', '.join(table.column_names)})")
