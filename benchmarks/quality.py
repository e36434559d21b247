"""Speed at equal quality on real weights: `make bench-quality` (python -m benchmarks --quality).

At 256 px, on the sample content and style (data/sample: tshirt x waves), with the
real ImageNet VGG16 (../shared/weights/vgg16_weights_notop_keras_layout.h5, refused
in one line where it is absent), four ways of making the design:

- paper: the paper's single-scale Adam as written (lr 0.02, 1000 steps, TV 30, one scale);
- coarse-to-fine: the paper's numbers on the pipeline's scales (size/4, size/2, size;
  the default ladder: the steps at the first, halved at each next);
- lbfgs: L-BFGS (strong Wolfe line search) with the paper's loss weights;
- default: `designs generate --size 256` as shipped (Config(size=256): its "auto"
  scales, learning rate and TV weight, pipeline/config.py).

The target is the style loss the paper's 1000-step run ends at; a method reaches it
at the first step of its final scale whose style loss is within 5% of it. Loss
against step is deterministic, so each method runs once (stopping where it reaches
the target) with its loss read every step and its loss evaluations counted (an
L-BFGS step may evaluate several times). Time is not taken from those runs: the
machine may be shared, so the seconds per loss evaluation of each kind of step
(Adam at each scale, L-BFGS) are measured afterwards interleaved, round-robin in one
process, the median of the rounds kept. A method's time to the target is its
evaluations at each scale times those seconds (targets' computation left out: it is
the same once per input for every method); designs/h is 3600 over it.

Imports only torch, numpy, Pillow and the pipeline's engine modules, as benchmarks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks.common import device_label, fmt, utc_now
from pipeline.config import Config
from pipeline.engine.transfer import Pairing, Progress, StyleTransfer, _scale_ladder
from pipeline.engine.weights import WeightsSource

ROOT = Path(__file__).resolve().parents[1]
REAL_WEIGHTS = ROOT.parent / "shared" / "weights" / "vgg16_weights_notop_keras_layout.h5"
CONTENT = ROOT / "data" / "sample" / "content" / "tshirt.png"
STYLE = ROOT / "data" / "sample" / "styles" / "waves.png"
TOLERANCE = 1.05  # "within 5%" of the paper's final style loss
METHODS = ("paper", "coarse-to-fine", "lbfgs", "default")


class _Reached(Exception):
    """Raised from the progress callback to end a run at the target."""


class _Evaluations:
    """Counts the engine's loss evaluations (one per Adam step; an L-BFGS step's line search may make more)."""

    def __init__(self, engine: StyleTransfer):
        self.engine, self.count = engine, 0

    def __enter__(self) -> _Evaluations:
        original = self.engine.losses

        def counting(*args: Any, **kwargs: Any) -> torch.Tensor:
            self.count += 1
            return original(*args, **kwargs)

        self.engine.losses = counting  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        del self.engine.losses  # the class's method again


@dataclass
class Curve:
    """One method's run: per step, its scale's longest side, the loss evaluations so far and the losses."""

    sides: list[int]
    evals: list[int]
    style: list[float]
    content: list[float]
    final_style: float | None  # the finished design's (None: stopped at the target)
    reached_step: int | None


def method_configs(size: int, paper_steps: int, lbfgs_steps: int, default: Config | None = None) -> dict[str, Config]:
    """The four methods' configs at `size`; `default` is the shipped Config (a test passes a cheaper one)."""
    paper = Config(size=size, steps=paper_steps, learning_rate=0.02, tv_weight=30.0, scales=(), loss_every=1)
    shipped = (default or Config()).replace(size=size, loss_every=1)
    return {
        "paper": paper,
        "coarse-to-fine": paper.replace(scales=(size // 4, size // 2, size)),
        "lbfgs": paper.replace(optimizer="lbfgs", steps=lbfgs_steps),
        "default": shipped,
    }


def curve_key(cfg: Config, weights: WeightsSource, precision: str, device: torch.device) -> str:
    """What a loss-against-step curve depends on: the design's settings, the weights, the arithmetic,
    the kind of device and the two input files."""
    inputs = hashlib.sha256(CONTENT.read_bytes() + STYLE.read_bytes()).hexdigest()[:16]
    return f"{cfg.identity_json()}|{weights.identity}|{precision}|{device.type}|{inputs}"


def load_image(path: Path, size: int) -> torch.Tensor:
    """(3, H, W) in [0, 1], longest side `size`."""
    image = Image.open(path).convert("RGB")
    scale = size / max(image.size)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div(255.0)


def _ladder_sides(cfg: Config) -> list[tuple[int, int]]:
    """[(longest side, steps)] of a config's scales: the engine's own ladder, read at a square."""
    return [(max(side), steps) for side, steps in _scale_ladder(cfg.resolved(), cfg.size, cfg.size)]


def run_curve(
    engine: StyleTransfer,
    pairing: Pairing,
    cfg: Config,
    target: float | None,
    per_eval: dict[tuple[str, int], float] | None = None,
    budget: float | None = None,
) -> Curve:
    """Run one design with the loss read every step; stop at the first final-scale step whose
    style loss is within TOLERANCE of `target` (None: run to the end), or once its evaluations
    have cost more than `budget` seconds at `per_eval`'s rates (it cannot beat that time any more)."""
    ladder = _ladder_sides(cfg)
    fine_start = sum(steps for _, steps in ladder[:-1])
    sides = [side for side, steps in ladder for _ in range(steps)]
    curve = Curve([], [], [], [], None, None)
    spent = [0.0, 0]  # seconds, evaluations so far

    def on_progress(progress: Progress) -> None:
        side = sides[progress.step]
        curve.sides.append(side)
        curve.evals.append(counter.count)
        curve.style.append(progress.loss_style[0])
        curve.content.append(progress.loss_total[0] - progress.loss_style[0])  # content + tv
        if target is not None and progress.step >= fine_start and progress.loss_style[0] <= target * TOLERANCE:
            curve.reached_step = progress.step
            raise _Reached
        if budget is not None and per_eval is not None:
            spent[0] += (counter.count - spent[1]) * per_eval[(cfg.optimizer, side)]
            spent[1] = counter.count
            if spent[0] > budget:
                raise _Reached  # over budget: reached_step stays None

    with _Evaluations(engine) as counter:
        try:
            (result,) = engine.run([pairing], on_progress=on_progress, config=cfg)
            curve.final_style = result.final_loss["style"]
        except _Reached:
            pass
    return curve


def seconds_per_eval(
    engine: StyleTransfer, pairings: dict[int, Pairing], kinds: list[tuple[str, int]], steps: int, rounds: int
) -> dict[tuple[str, int], float]:
    """Seconds per loss evaluation of each (optimizer, side), measured round-robin: each round runs
    `steps` steps of every kind in turn (the order rotated each round); the median over rounds."""
    samples: dict[tuple[str, int], list[float]] = {kind: [] for kind in kinds}
    for r in range(rounds + 1):  # round 0 warms up (targets, allocations) and is not kept
        order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
        for optimizer, side in order:
            cfg = Config(size=side, steps=steps, optimizer=optimizer, learning_rate=0.02, tv_weight=30.0, loss_every=1)
            marks: list[tuple[float, int]] = []
            with _Evaluations(engine) as counter:
                engine.run(
                    [pairings[side]],
                    on_progress=lambda _, marks=marks, counter=counter: marks.append(
                        (time.perf_counter(), counter.count)
                    ),
                    config=cfg,
                )
            # Between the first step's callback and the last's: steps - 1 whole steps, no setup.
            (t0, e0), (t1, e1) = marks[0], marks[-1]
            if r and e1 > e0:
                samples[(optimizer, side)].append((t1 - t0) / (e1 - e0))
    return {kind: statistics.median(values) for kind, values in samples.items()}


def time_to(curve: Curve, step: int | None, optimizer: str, per_eval: dict[tuple[str, int], float]) -> float | None:
    """Seconds a method takes through its `step`: its evaluations at each side times their cost
    (the progress callback follows the step, so evals[i] counts step i's own evaluations)."""
    if step is None:
        return None
    done = [0, *curve.evals[: step + 1]]
    return sum((done[i + 1] - done[i]) * per_eval[(optimizer, curve.sides[i])] for i in range(step + 1))


def run_quality_bench(
    device: torch.device,
    weights: WeightsSource,
    size: int = 256,
    paper_steps: int = 1000,
    lbfgs_steps: int = 300,
    timing_steps: int = 6,
    timing_rounds: int = 3,
    default: Config | None = None,
    reuse: dict[str, Any] | None = None,
    budget: float = 1.0,
    log=print,
) -> dict[str, Any]:
    """`reuse`: a previous result (its "paper_curve") whose paper run had the same key (config, weights,
    precision, device kind, inputs): its curve is taken instead of running the 1000 steps again.
    `budget`: each other method stops once it has cost this fraction of the paper's time to the
    target without reaching it (1: it can no longer beat the paper's loop; 1/3: the 3x target)."""
    configs = method_configs(size, paper_steps, lbfgs_steps, default)
    engine = StyleTransfer(configs["paper"], weights, device)
    content, style = load_image(CONTENT, size), load_image(STYLE, size)
    sides = sorted({side for cfg in configs.values() for side, _ in _ladder_sides(cfg)})
    pairings = {
        side: Pairing(f"q{side}", "content", load_image(CONTENT, side), "style", load_image(STYLE, side))
        for side in sides
    }
    pairing = Pairing("quality", "content", content, "style", style)

    log(f"quality bench on {device_label(device)}: {size} px, {weights.network}, precision {engine.precision}")
    # Seconds per loss evaluation first (interleaved), so the runs below can stop at their budget.
    kinds = sorted({(cfg.optimizer, side) for cfg in configs.values() for side, _ in _ladder_sides(cfg)})
    per_eval = seconds_per_eval(engine, pairings, kinds, timing_steps, timing_rounds)
    log("seconds per loss evaluation: " + ", ".join(f"{o}@{s} {t:.3f}" for (o, s), t in per_eval.items()))
    key = curve_key(configs["paper"], weights, engine.precision, device)
    if reuse and reuse.get("paper_curve", {}).get("key") == key:
        curves = {"paper": Curve(**{k: v for k, v in reuse["paper_curve"].items() if k != "key"})}
        log("paper: its curve reused from an earlier run of the same configuration")
    else:
        curves = {"paper": run_curve(engine, pairing, configs["paper"], None)}
    target = curves["paper"].final_style
    assert target is not None
    reached_paper = next(
        (i for i, value in enumerate(curves["paper"].style) if value <= target * TOLERANCE), len(curves["paper"].style)
    )
    curves["paper"].reached_step = min(reached_paper, paper_steps - 1)
    log(f"paper: style loss {target:.4g} after {paper_steps} steps; within 5% at step {curves['paper'].reached_step}")
    paper_seconds = time_to(curves["paper"], curves["paper"].reached_step, "adam", per_eval)
    assert paper_seconds is not None
    for name in ("lbfgs", "coarse-to-fine", "default"):
        curves[name] = run_curve(engine, pairing, configs[name], target, per_eval, budget * paper_seconds)
        curve = curves[name]
        log(
            f"{name}: "
            + (
                f"reached at step {curve.reached_step}"
                if curve.reached_step is not None
                else f"not reached after {len(curve.style)} steps (style loss {curve.style[-1]:.4g}, "
                f"{curve.style[-1] / target:.2f}x the target)"
            )
        )
    rows = []
    paper_full = time_to(curves["paper"], paper_steps - 1, "adam", per_eval)
    for name in METHODS:
        cfg, curve = configs[name], curves[name]
        seconds = time_to(curve, curve.reached_step, cfg.optimizer, per_eval)
        at = curve.reached_step
        resolved = cfg.resolved()
        rows.append(
            {
                "method": name,
                "settings": _settings(resolved),
                "reached_step": at,
                "evaluations": None if at is None else _evals_through(curve, at),
                "seconds": seconds,
                "designs_per_hour": 3600 / seconds if seconds else None,
                "speedup_vs_paper": paper_seconds / seconds if seconds and paper_seconds else None,
                "style_at_target": None if at is None else curve.style[at],
                "content_tv_at_target": None if at is None else curve.content[at],
                "final_style": curve.final_style,
                "steps_run": len(curve.style),
                "last_style_vs_target": curve.style[-1] / target if curve.style else None,
            }
        )
    result = {
        "date": utc_now(),
        "device_name": device_label(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "precision": engine.precision,
        "network": weights.network,
        "size": size,
        "content": CONTENT.name,
        "style": STYLE.name,
        "target_style_loss": target,
        "tolerance": TOLERANCE,
        "budget": budget,
        "paper_full_seconds": paper_full,
        "seconds_per_eval": {f"{opt}@{side}": s for (opt, side), s in per_eval.items()},
        "rows": rows,
        "paper_curve": {"key": key, **dataclasses.asdict(curves["paper"])},
        "curves": {
            name: {
                "seconds": [time_to(c, i, configs[name].optimizer, per_eval) for i in range(len(c.style))],
                "style": c.style,
                "sides": c.sides,
            }
            for name, c in curves.items()
        },
    }
    for row in rows:
        log(
            f"{row['method']:>15}: "
            + (
                f"{row['seconds']:.1f} s to the paper's style loss, {row['designs_per_hour']:.0f} designs/h, "
                f"x{row['speedup_vs_paper']:.2f} the paper's loop"
                if row["seconds"]
                else "did not reach the paper's style loss"
            )
        )
    return result


def _evals_through(curve: Curve, step: int) -> int:
    return curve.evals[step]


def _settings(cfg: Config) -> str:
    parts = [f"{cfg.optimizer}", f"{cfg.steps} steps"]
    if cfg.optimizer == "adam":
        parts.append(f"lr {cfg.learning_rate:.3g}")
    parts.append(f"TV {cfg.tv_weight:.3g}")
    if cfg.scales:
        parts.append("scales " + ",".join(f"{side}x{n}" for side, n in _ladder_sides(cfg)))
    return ", ".join(parts)


QUALITY_TABLE = (
    "| date | device | torch | precision | network | size | method | settings | steps (loss evaluations) to the "
    "paper's style loss | s to it | designs/h | x paper's loop | content+TV loss there |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
)


def quality_rows(r: dict[str, Any]) -> str:
    lines = []
    for row in r["rows"]:
        steps = (
            f"{row['reached_step'] + 1} ({row['evaluations']})"
            if row["reached_step"] is not None
            else f"not reached: stopped after {row['steps_run']} steps at {row['last_style_vs_target']:.2f}x the "
            f"target (budget {r['budget']:.2g}x the paper's time)"
        )
        cells = [
            r["date"][:10],
            f"{r['device_name']}, {r['threads']} threads",
            r["torch"],
            r["precision"],
            r["network"],
            str(r["size"]),
            row["method"],
            row["settings"],
            steps,
            fmt(row["seconds"], ".1f"),
            fmt(row["designs_per_hour"], ".0f"),
            fmt(row["speedup_vs_paper"], ".2f"),
            fmt(row["content_tv_at_target"], ".4g"),
        ]
        lines.append("| " + " | ".join(cells) + " |\n")
    return "".join(lines)
