"""Watching a run: designs done of total, designs/s, ETA and failures so far;
a rich progress bar on a terminal, plain lines otherwise (logs, cron mail);
and which optimization steps of a shard its log shows (StepLog).

The bar counts designs-equivalents: the designs finished plus the share of
the optimization steps done by the designs still in flight, so it and its
ETA move with the steps, not only when a whole shard ends."""

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


class _ShardSteps:
    """A running shard's designs-equivalents done, from its engine's Progress samples."""

    def __init__(self, designs: int):
        self.designs = designs
        self.finished = 0  # designs of the batches that ended
        self.batch = 0  # designs of the batch running
        self.fraction = 0.0  # of its steps done
        self.last_step = -1

    def update(self, progress: Progress) -> None:
        if progress.step <= self.last_step:
            # The step went back: the previous batch ended (or a diverged design is retried,
            # or a batch was halved; the cap in `value` absorbs those).
            self.finished += self.batch
        self.batch = progress.designs
        self.fraction = min(1.0, (progress.step + 1) / max(1, progress.steps))
        self.last_step = progress.step

    @property
    def value(self) -> float:
        return min(float(self.designs), self.finished + self.batch * self.fraction)


class RunProgress:
    """Designs done of total, designs/s, ETA, failures so far.

    progress = RunProgress(); progress.start(total); progress.advance(ok=3, failed=1); progress.close()

    Designs in flight count too: `on_steps = progress.shard(key, designs)` gives a callback for
    the engine's Progress samples of that shard, and `advance_rows(rows, shard=key)` replaces its
    estimate by the rows when it ends. Redraws are at most one per `redraw_every` seconds.

    On a terminal it is a rich progress bar; on anything else (a file, a pipe,
    Prefect's served runs, cron) a plain line per `every` seconds and a last
    one at close. `enabled=False` makes every method a no-op. On a terminal the
    bar shares the console of Prefect's log handler, so log lines scroll above it.
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        every: float = 30.0,
        enabled: bool = True,
        label: str = "designs",
        redraw_every: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.stream = stream if stream is not None else sys.stderr
        self.every = every
        self.redraw_every = redraw_every
        self.enabled = enabled
        self.label = label
        self.clock = clock
        self.total = 0
        self.ok = 0
        self.failed = 0
        self._in_flight: dict[Any, _ShardSteps] = {}
        self._started = 0.0
        self._last_line = -math.inf
        self._last_redraw = -math.inf
        self._last_counts: tuple[int, int, float] | None = None  # ok, failed, in flight of the last plain line
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
    def in_flight(self) -> float:
        """Designs-equivalents done by the running shards: their steps done over their steps."""
        return min(sum(s.value for s in self._in_flight.values()), max(0.0, float(self.total - self.done)))

    @property
    def completed(self) -> float:
        """Designs done plus the in-flight designs' share of their steps: what the bar shows."""
        return self.done + self.in_flight

    @property
    def elapsed(self) -> float:
        return self.clock() - self._started if self._started else 0.0

    @property
    def rate(self) -> float:
        """Designs(-equivalents) per second since start (failures included: they take their turn too)."""
        return self.completed / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        if self.done >= self.total:
            return 0.0
        return (self.total - self.completed) / self.rate if self.rate > 0 else None

    def line(self) -> str:
        percent = 100.0 * self.completed / self.total if self.total else 100.0
        in_flight = self.in_flight
        steps = f", {in_flight:.1f} more in flight" if in_flight >= 0.05 else ""
        return (
            f"{self.label} {self.done}/{self.total} ({percent:.0f}%){steps}, {self.failed} failed, "
            f"{self.rate:.2f} designs/s, elapsed {_duration(self.elapsed)}, ETA {_duration(self.eta)}"
        )

    # --- the three calls of the flow ---

    def start(self, total: int) -> RunProgress:
        with self._lock:
            self.total, self.ok, self.failed = int(total), 0, 0
            self._in_flight.clear()
            self._started = self.clock()
            self._closed = False
            if not self.enabled:
                return self
            if self._is_terminal():
                self._start_bar()
            else:
                self._write(self.line())
        return self

    def advance(self, ok: int = 0, failed: int = 0, shard: Any = None) -> None:
        """Count finished designs; with `shard`, they replace that shard's in-flight estimate."""
        with self._lock:
            self.ok += ok
            self.failed += failed
            self._in_flight.pop(shard, None)
            self._show(force=True)

    def advance_rows(self, rows: list[dict[str, Any]], shard: Any = None) -> None:
        """advance() by the status of a finished shard's rows."""
        ok = sum(1 for r in rows if r.get("status") == "ok")
        self.advance(ok=ok, failed=len(rows) - ok, shard=shard)

    def shard(self, key: Any, designs: int) -> Callable[[Progress], None]:
        """The callback of a shard of `designs` designs now starting (again, on a retry) for the
        engine's Progress samples: the bar moves with its steps. Thread-safe."""
        steps = _ShardSteps(int(designs))
        with self._lock:
            self._in_flight[key] = steps

        def on_steps(progress: Progress) -> None:
            with self._lock:
                if self._in_flight.get(key) is not steps:
                    return  # the shard ended or started again since
                steps.update(progress)
                self._show(force=False)

        return on_steps

    def shard_done(self, key: Any) -> None:
        """Drop a shard's in-flight estimate without counting designs (it stopped on request)."""
        with self._lock:
            self._in_flight.pop(key, None)
            self._show(force=True)

    def _show(self, force: bool) -> None:
        """Under the lock: update the bar (at most once per redraw_every unless forced) or
        write a plain line (at most once per `every`)."""
        if not self.enabled or self._closed:
            return
        now = self.clock()
        if self._bar is not None:
            if force or now - self._last_redraw >= self.redraw_every:
                self._last_redraw = now
                self._update_bar()
        elif now - self._last_line >= self.every:
            self._write(self.line())

    def _update_bar(self) -> None:
        self._bar.update(
            self._task,
            completed=self.completed,
            failed=self.failed,
            rate=self.rate,
            elapsed=_duration(self.elapsed),
            eta=_duration(self.eta),
        )

    def close(self) -> None:
        with self._lock:
            if self._closed or not self.enabled:
                self._closed = True
                return
            self._closed = True
            if self._bar is not None:
                self._update_bar()
                self._bar.stop()
                self._bar = None
                if self._pushed_theme is not None:
                    self._pushed_theme.pop_theme()
                    self._pushed_theme = None
            elif self._last_counts != self._counts():
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

    def _counts(self) -> tuple[int, int, float]:
        return (self.ok, self.failed, round(self.in_flight, 1))

    def _write(self, text: str) -> None:
        self._last_line = self.clock()
        self._last_counts = self._counts()
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
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn

        # M/N counts designs-equivalents (finished designs plus the steps done of those in flight);
        # elapsed and ETA are this object's, from its clock, so the bar and the plain lines agree.
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]:.2f} designs/s"),
            TextColumn("{task.fields[elapsed]}"),
            TextColumn("ETA {task.fields[eta]}"),
            TextColumn("[red]{task.fields[failed]} failed"),
            console=self._console(),
            refresh_per_second=2,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._task = self._bar.add_task(
            self.label, total=self.total, failed=0, rate=0.0, elapsed=_duration(0), eta=_duration(None)
        )
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


class DownloadProgress:
    """A download's bytes so far on `stream`: one line rewritten in place on a terminal (at
    most `redraw_every` seconds apart), else a line every `every` seconds; always a last one.
    Call it with (bytes done, total or None); close() when the download ends."""

    def __init__(
        self,
        name: str,
        stream: IO[str] | None = None,
        every: float = 10.0,
        redraw_every: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.name = name
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        isatty = getattr(self.stream, "isatty", None)
        self.terminal = bool(isatty and isatty())
        self.every = redraw_every if self.terminal else every
        self.done = 0
        self.total: int | None = None
        self._started = clock()
        self._last = -math.inf
        self._shown: int | None = None
        self._connected = False  # nothing to show of a download that never started

    def line(self) -> str:
        elapsed = self.clock() - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        of = f" of {self.total / 1e6:.1f} MB ({100.0 * self.done / self.total:.0f}%)" if self.total else " MB"
        return f"{self.name}: {self.done / 1e6:.1f}{of}, {rate / 1e6:.1f} MB/s"

    def __call__(self, done: int, total: int | None) -> None:
        self.done, self.total = done, total
        self._connected = True
        if self.clock() - self._last >= self.every:
            self._show()

    def close(self) -> None:
        if self._connected and self._shown != self.done:
            self._show()
        if self.terminal and self._shown is not None:
            self.stream.write("\n")
            self.stream.flush()

    def _show(self) -> None:
        self._last = self.clock()
        self._shown = self.done
        self.stream.write(f"\r{self.line()}\x1b[K" if self.terminal else self.line() + "\n")
        self.stream.flush()


# The RunProgress of each run started in this process, by run id: a shard task running in a thread
# of the flow's process finds it here and reports its steps. A Dask worker is another process,
# where the run is not registered: there the bar moves per finished shard only.
_LIVE: dict[str, RunProgress] = {}
_LIVE_LOCK = threading.Lock()


def register(run_id: str, progress: RunProgress | None) -> None:
    """Make `progress` the one shard tasks of run_id report to (None: no longer any)."""
    with _LIVE_LOCK:
        if progress is None:
            _LIVE.pop(run_id, None)
        else:
            _LIVE[run_id] = progress


def registered(run_id: str) -> RunProgress | None:
    with _LIVE_LOCK:
        return _LIVE.get(run_id)


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
