"""The run's progress bar (flows/progress.py) moves with the optimization steps of the designs in
flight, not only when a whole shard ends; its ETA comes from the step rate. Driven by fake
Progress samples and an injected clock: no wall-clock time is measured."""

from __future__ import annotations

import io

import pytest

from flows.progress import RunProgress, register, registered
from pipeline.config import Config
from pipeline.engine.transfer import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def batch(on_steps, clock: Clock, designs: int, steps: int, upto: int, start: int = 0, loss_every: int = 10) -> None:
    """The engine's samples of one batch, steps start, start + loss_every, ... below `upto`, one second apart."""
    for step in range(start, upto, loss_every):
        clock.now += 1.0
        on_steps(Progress(step=step, steps=steps, designs=designs, loss_total=(1.0,) * designs))


def test_steps_in_flight_move_the_count_and_the_eta_before_any_shard_ends():
    clock = Clock()
    stream = io.StringIO()  # plain lines, one per `every` seconds
    progress = RunProgress(stream=stream, every=5.0, clock=clock).start(11)
    on_steps = progress.shard(0, 11)  # one shard of all 11 designs, as in 0/11 .. 11/11
    assert progress.eta is None  # nothing done yet: no rate

    batch(on_steps, clock, designs=4, steps=100, upto=50)  # half of the first batch of 4
    assert progress.done == 0
    assert progress.completed == 4 * 41 / 100  # step 40 is the 41st of 100
    assert progress.eta is not None and 0 < progress.eta < 100

    batch(on_steps, clock, designs=4, steps=100, upto=100, start=50)
    batch(on_steps, clock, designs=4, steps=100, upto=50)  # the next batch begins: the first ended
    assert progress.completed == 4 + 4 * 41 / 100
    eta = progress.eta
    batch(on_steps, clock, designs=4, steps=100, upto=100, start=50)
    batch(on_steps, clock, designs=3, steps=100, upto=100)  # the last 3
    assert progress.completed == 8 + 3 * 91 / 100 and progress.eta < eta
    assert progress.done == 0  # still no shard has finished

    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("designs 0/11 (0%), 0 failed") and lines[0].endswith("ETA ?")
    moving = lines[1:]
    assert len(moving) >= 4  # a line every 5 s of the 30 s of steps, not one at the shard's end
    assert all(line.startswith("designs 0/11 (") and "more in flight" in line for line in moving)
    percents = [int(line.split("(")[1].split("%")[0]) for line in moving]
    assert percents == sorted(percents) and percents[0] < percents[-1]
    assert all("ETA ?" not in line for line in moving)

    # The shard ends: its rows replace the estimate.
    progress.advance_rows([{"status": "ok"}] * 10 + [{"status": "failed"}], shard=0)
    assert (progress.done, progress.in_flight, progress.eta) == (11, 0.0, 0.0)
    progress.close()
    assert stream.getvalue().splitlines()[-1].startswith("designs 11/11 (100%), 1 failed")


def test_the_eta_is_the_remaining_designs_at_the_step_rate():
    clock = Clock()
    progress = RunProgress(stream=io.StringIO(), every=3600, clock=clock).start(10)
    on_steps = progress.shard("a", 10)
    clock.now += 10.0
    on_steps(Progress(step=49, steps=100, designs=2, loss_total=(1.0, 1.0)))  # 1 design-equivalent in 10 s
    assert progress.completed == 1.0
    assert progress.rate == 0.1
    assert progress.eta == 90.0  # 9 designs left at 0.1/s
    assert "ETA 1:30" in progress.line()


def test_in_flight_estimates_are_capped_dropped_and_reset():
    clock = Clock()
    progress = RunProgress(stream=io.StringIO(), every=3600, clock=clock).start(6)
    first = progress.shard(0, 2)
    second = progress.shard(1, 4)
    # A diverged design retried (the step goes back) cannot make the shard count more than its designs.
    for _ in range(3):
        first(Progress(step=99, steps=100, designs=2, loss_total=(1.0, 1.0)))
        first(Progress(step=0, steps=100, designs=2, loss_total=(1.0, 1.0)))
    assert progress.in_flight == 2.0
    second(Progress(step=49, steps=100, designs=4, loss_total=(1.0,) * 4))
    assert progress.in_flight == 4.0  # 2 + half of 4
    # Stopped on request: its estimate goes, nothing is counted.
    progress.shard_done(1)
    assert (progress.done, progress.in_flight) == (0, 2.0)
    # A retry of shard 0 starts from nothing; the first attempt's late samples are ignored.
    again = progress.shard(0, 2)
    first(Progress(step=90, steps=100, designs=2, loss_total=(1.0, 1.0)))
    assert progress.in_flight == 0.0
    again(Progress(step=9, steps=100, designs=2, loss_total=(1.0, 1.0)))
    assert progress.in_flight == 0.2
    progress.close()


def test_plain_lines_and_bar_redraws_are_rate_limited():
    clock = Clock()
    stream = io.StringIO()
    progress = RunProgress(stream=stream, every=10.0, clock=clock).start(4)
    on_steps = progress.shard(0, 4)
    for step in range(1000):  # a fast device: 1000 samples within 5 s
        clock.now += 0.005
        on_steps(Progress(step=step, steps=1000, designs=4, loss_total=(1.0,) * 4))
    assert len(stream.getvalue().splitlines()) == 1  # only the first line
    clock.now += 10.0
    on_steps(Progress(step=999, steps=1000, designs=4, loss_total=(1.0,) * 4))
    assert len(stream.getvalue().splitlines()) == 2

    redraws: list[float] = []
    bar = RunProgress(stream=Terminal(), clock=clock, redraw_every=0.5).start(4)
    try:
        update = bar._update_bar
        bar._update_bar = lambda: (redraws.append(clock.now), update())  # type: ignore[method-assign]
        on_steps = bar.shard(0, 4)
        for step in range(1000):
            clock.now += 0.005
            on_steps(Progress(step=step, steps=1000, designs=4, loss_total=(1.0,) * 4))
        assert 9 <= len(redraws) <= 11  # 5 s at two redraws a second, not 1000
    finally:
        bar.close()


def test_the_terminal_bar_shows_the_in_flight_count_and_eta():
    clock = Clock()
    stream = Terminal()
    progress = RunProgress(stream=stream, clock=clock).start(11)
    try:
        on_steps = progress.shard(0, 11)
        clock.now += 20.0
        on_steps(Progress(step=99, steps=100, designs=4, loss_total=(1.0,) * 4))  # 4 of 11 in 20 s
        clock.now += 20.0
        on_steps(Progress(step=0, steps=100, designs=4, loss_total=(1.0,) * 4))  # forced by time
        progress._bar.refresh()  # draw now rather than on rich's refresh thread
        shown = stream.getvalue()
        assert "4/11" in shown and "0:40" in shown  # 4.04 designs-equivalents after 40 s
        assert "ETA 1:09" in shown  # 6.96 left at 0.101/s
    finally:
        progress.close()
    assert "11" in stream.getvalue()


def test_shard_tasks_find_the_bar_of_their_run_in_this_process_only():
    progress = RunProgress(stream=io.StringIO(), enabled=False).start(1)
    register("run-a", progress)
    try:
        assert registered("run-a") is progress
        assert registered("run-b") is None  # another run, or a Dask worker's process
    finally:
        register("run-a", None)
    assert registered("run-a") is None


@pytest.mark.usefixtures("prefect_server")
def test_a_thread_runner_run_moves_the_bar_with_the_steps_of_its_shards(sample_catalog, tmp_path, monkeypatch):
    import flows.generate

    seen: list[tuple[str, int, float]] = []  # (what, designs done, designs-equivalents)

    class Recording(RunProgress):
        def shard(self, key, designs):
            on_steps = super().shard(key, designs)

            def record(progress: Progress) -> None:
                on_steps(progress)
                seen.append(("step", self.done, self.completed))

            return record

        def advance_rows(self, rows, shard=None):
            super().advance_rows(rows, shard)
            seen.append(("rows", self.done, self.completed))

    monkeypatch.setattr(flows.generate, "RunProgress", lambda: Recording(stream=io.StringIO()))
    config = Config(weights="random", size=32, steps=4, loss_every=1, batch_size=1, shard_size=100)
    summary = flows.generate.generate(catalog=str(sample_catalog), out=str(tmp_path / "out"), config=config)
    assert summary.ok > 1
    first_rows = next(i for i, (what, _, _) in enumerate(seen) if what == "rows")
    steps = [completed for what, done, completed in seen[:first_rows] if what == "step" and done == 0]
    assert len(steps) >= 4 * 2 and 0 < steps[0] < 1  # one shard of all designs, sampled every step
    assert steps == sorted(steps) and steps[-1] > 1
