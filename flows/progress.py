"""Watching a run: designs done of total, designs/s, ETA and failures so far;
a rich progress bar on a terminal, plain lines otherwise (logs, cron mail);
and which optimization steps of a shard its log shows (StepLog)."""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.engine.transfer import Progress


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class RunProgress:
    """Designs done of total, designs/s, ETA, failures so far.

    progress = RunProgress(); progress.start(total); progress.advance(ok=3, failed=1); progress.close()

    On a terminal it is a rich progress bar; on anything else (a file, a pipe,
    Prefect's served runs, cron) a plain line per `every` seconds and a last
    one at close. `enabled=False` makes every method a no-op. On a terminal the
    bar shares the console of Prefect's log handler, so log lines scroll above it.
    """

    def __init__(
        self, stream: IO[str] | None = None, every: float = 30.0, enabled: bool = True, label: str = "designs"
    ):
        self.stream = stream if stream is not None else sys.stderr
        self.every = every
        self.enabled = enabled
        self.label = label
        self.total = 0
        self.ok = 0
        self.failed = 0
        self._started = 0.0
        self._last_line = -math.inf
        self._last_counts: tuple[int, int] | None = None  # ok, failed of the last plain line
        self._lock = threading.Lock()
        self._bar = None
        self._task = None
        self._pushed_theme = None
        self._closed = False

    # --- numbers ---

    @property
    def done(self) -> int:
        return self.ok + self.failed

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started if self._started else 0.0

    @property
    def rate(self) -> float:
        """Designs per second since start (failures included: they take their turn too)."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        if self.done >= self.total:
            return 0.0
        return (self.total - self.done) / self.rate if self.rate > 0 else None

    def line(self) -> str:
        percent = 100.0 * self.done / self.total if self.total else 100.0
        return (
            f"{self.label} {self.done}/{self.total} ({percent:.0f}%), {self.failed} failed, "
            f"{self.rate:.2f} designs/s, elapsed {_duration(self.elapsed)}, ETA {_duration(self.eta)}"
        )

    # --- the three calls of the flow ---

    def start(self, total: int) -> RunProgress:
        with self._lock:
            self.total, self.ok, self.failed = int(total), 0, 0
            self._started = time.monotonic()
            self._closed = False
            if not self.enabled:
                return self
            if self._is_terminal():
                self._start_bar()
            else:
                self._write(self.line())
        return self

    def advance(self, ok: int = 0, failed: int = 0) -> None:
        with self._lock:
            self.ok += ok
            self.failed += failed
            if not self.enabled or self._closed:
                return
            if self._bar is not None:
                self._bar.update(self._task, completed=self.done, failed=self.failed, rate=self.rate)
            elif time.monotonic() - self._last_line >= self.every:
                self._write(self.line())

    def advance_rows(self, rows: list[dict[str, Any]]) -> None:
        """advance() by the status of a finished shard's rows."""
        ok = sum(1 for r in rows if r.get("status") == "ok")
        self.advance(ok=ok, failed=len(rows) - ok)

    def close(self) -> None:
        with self._lock:
            if self._closed or not self.enabled:
                self._closed = True
                return
            self._closed = True
            if self._bar is not None:
                self._bar.update(self._task, completed=self.done, failed=self.failed, rate=self.rate)
                self._bar.stop()
                self._bar = None
                if self._pushed_theme is not None:
                    self._pushed_theme.pop_theme()
                    self._pushed_theme = None
            elif self._last_counts != (self.ok, self.failed):
                # Not when the last periodic line already showed the final counts: the end is one line.
                self._write(self.line())

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- output ---

    def _is_terminal(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        try:
            return bool(isatty and isatty())
        except ValueError:  # a closed stream
            return False

    def _write(self, text: str) -> None:
        self._last_line = time.monotonic()
        self._last_counts = (self.ok, self.failed)
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except ValueError:  # the stream was closed under us; progress is not worth a failed run
            self.enabled = False

    def _console(self):
        from rich.console import Console
        from rich.default_styles import DEFAULT_STYLES
        from rich.theme import Theme

        console = _prefect_console(self.stream)
        if console is None:
            return Console(file=self.stream)
        # Prefect's console has a theme of its own, without rich's progress styles.
        console.push_theme(Theme({k: v for k, v in DEFAULT_STYLES.items() if k.startswith(("bar.", "progress."))}))
        self._pushed_theme = console
        return console

    def _start_bar(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.2f} designs/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("[red]{task.fields[failed]} failed"),
            console=self._console(),
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._task = self._bar.add_task(self.label, total=self.total, failed=0, rate=0.0)
        self._bar.start()


class StepLog:
    """Which of a shard's progress samples (one every loss_every steps of a batch) its log shows:
    a batch's first, then at most one every `every` seconds, and always a batch's last, so the
    log says where every batch ended. Call it with each Progress, and close() when the shard is done.

    A batch's last sample is the one after which the next would pass its steps. loss_every can
    differ per pairing (a pairs file), so a sample held back is also written when the next batch
    starts (its step goes back to 0) or at close(): nothing is lost when the guess is wrong.
    """

    def __init__(
        self,
        write: Callable[[Progress], None],
        every: float,
        loss_every: int,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.write = write
        self.every = every
        self.loss_every = max(1, int(loss_every))
        self.clock = clock
        self._last_written = -math.inf
        self._held: Progress | None = None  # the latest sample not written

    def __call__(self, progress: Progress) -> None:
        if self._held is not None and progress.step <= self._held.step:
            self._emit(self._held)  # a new batch: the previous one ended there
        if (
            progress.step == 0
            or progress.step + self.loss_every >= progress.steps
            or self.clock() - self._last_written >= self.every
        ):
            self._emit(progress)
        else:
            self._held = progress

    def close(self) -> None:
        if self._held is not None:
            self._emit(self._held)

    def _emit(self, progress: Progress) -> None:
        self._held = None
        self._last_written = self.clock()
        self.write(progress)


def _prefect_console(stream: IO[str]):
    """The rich Console of Prefect's log handler on `stream`, if there is one: log lines printed
    through it while the bar is live go above the bar instead of breaking it."""
    import logging

    try:
        from prefect.logging.handlers import PrefectConsoleHandler
    except ImportError:
        return None
    for name in ("", "prefect"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, PrefectConsoleHandler) and getattr(handler, "stream", None) is stream:
                return handler.console
    return None
