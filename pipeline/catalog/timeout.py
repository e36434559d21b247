"""The time limit of a DuckDB statement (`designs query --timeout`, `designs colourways
--timeout`): a timer thread interrupts the connection. Apart from sql.py so the command
line's --help shows the default without importing DuckDB."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import duckdb

# Seconds a query, or colourways' selection of designs, may run before it is stopped.
DEFAULT_TIMEOUT_S = 60.0

T = TypeVar("T")


def with_timeout(con: duckdb.DuckDBPyConnection, timeout_s: float | None, what: str, work: Callable[[], T]) -> T:
    """work() (which runs DuckDB statements on `con`), interrupted after `timeout_s` seconds (None:
    no limit): QueryError "<what> stopped after N s (--timeout)". Other DuckDB errors pass."""
    import duckdb  # here, as QueryError (pyarrow, deltalake): not for --help

    from pipeline.catalog.history import QueryError

    if timeout_s is None:
        return work()
    fired = threading.Event()

    def stop() -> None:
        fired.set()
        con.interrupt()

    timer = threading.Timer(timeout_s, stop)
    timer.daemon = True
    timer.start()
    try:
        return work()
    except duckdb.InterruptException:
        if fired.is_set():
            raise QueryError(f"{what} stopped after {timeout_s:g} s (--timeout)") from None
        raise
    finally:
        timer.cancel()
