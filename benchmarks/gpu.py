"""`make bench-gpu` (`python -m benchmarks.gpu`): every GPU measurement the docs promise,
in one command sized to a short GPU loan (8 minutes in all by default).

On a bare GPU machine (torch, numpy and Pillow; no project install) in the
repository's root, each step runs `python -m benchmarks ...` in a process of its own
under its share of the time, appending its rows (with the device's name) to
docs/BENCHMARKS.md and its JSON to --out-dir:

- engine: the engine against the naive loops at 512 px, 100 steps (designs/h,
  TFLOP/s, % of the bf16 peak; the targets: x naive-fp32 >= 10, x naive-default >= 3);
- compile: torch.compile of the feature extractor beside eager, at one batch size;
- max-size: one design's peak memory at 1024 .. 8192 px, the largest size that fits;
- pipeline: device busy with decoding and writing overlapped and in line (needs
  pyarrow and deltalake: skipped, and said so, where they are missing);
- scales: coarse-to-fine at 1024 px against one scale.

A step that fails, runs out of its time or cannot run is reported and the next one
runs; last come a summary of every step (also appended to docs/BENCHMARKS.md as the
"GPU runs" table) and the targets' verdicts. `--tiny` runs the same steps at toy
sizes (the tests run it on a CPU); `--skip` leaves steps out.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Not benchmarks.common (it imports torch): --help and argument errors work without torch.
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MARKDOWN = ROOT / "docs" / "BENCHMARKS.md"
# The targets the engine run is judged by, at 512 px (best shipped engine configuration).
TARGET_VS_NAIVE_FP32 = 10.0
TARGET_VS_NAIVE_DEFAULT = 3.0
TOTAL_SECONDS = 480


@dataclass(frozen=True)
class Step:
    name: str
    what: str
    share: float  # of the total time
    args: tuple[str, ...]  # python -m benchmarks ...
    tiny_args: tuple[str, ...]
    needs: tuple[str, ...] = ()  # modules beyond torch, numpy and Pillow


STEPS = (
    Step(
        "engine",
        "engine vs naive at 512 px: designs/h, TFLOP/s, % of peak",
        0.40,
        ("--full", "--batch-sizes", "1,8,32", "--designs", "32", "--repeats", "2"),
        ("--full", "--size", "32", "--steps", "1", "--batch-sizes", "1,2", "--designs", "2", "--repeats", "1"),
    ),
    Step(
        "compile",
        "torch.compile of the feature extractor on and off",
        0.22,
        ("--full", "--compile", "--batch-sizes", "8", "--designs", "8", "--naive-designs", "2", "--repeats", "2"),
        (
            "--full",
            "--compile",
            "--size",
            "32",
            "--steps",
            "1",
            "--batch-sizes",
            "2",
            "--designs",
            "2",
            "--repeats",
            "1",
        ),
    ),
    Step(
        "max-size",
        "largest size per memory (one design, 1024 .. 8192 px)",
        0.16,
        ("--max-size", "--sizes", "1024,2048,4096,6144,8192", "--size-steps", "2"),
        ("--max-size", "--sizes", "32,48", "--size-steps", "1", "--memory-gib", "8"),
    ),
    Step(
        "pipeline",
        "device busy with decoding and writing overlapped and in line",
        0.12,
        # 50 steps, not 200: the time it has; less compute per decoded input is the harder case.
        ("--pipeline", "--steps", "50", "--repeats", "1"),
        (
            "--pipeline",
            "--pipeline-contents",
            "2",
            "--pipeline-styles",
            "2",
            "--size",
            "32",
            "--steps",
            "1",
            "--batch-sizes",
            "2",
            "--repeats",
            "1",
        ),
        needs=("pyarrow", "deltalake"),
    ),
    Step(
        "scales",
        "coarse-to-fine against one scale at 1024 px",
        0.10,
        ("--scales",),
        ("--scales", "--scales-size", "64", "--scales-steps", "1", "--scales-designs", "1"),
    ),
)

SUMMARY_TITLE = "GPU runs (make bench-gpu)"
SUMMARY_TABLE = "| date | device | step | status | seconds | result |\n| --- | --- | --- | --- | --- | --- |\n"


def missing_modules(names: Sequence[str]) -> list[str]:
    return [name for name in names if importlib.util.find_spec(name) is None]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda when there is one)")
    parser.add_argument("--tiny", action="store_true", help="toy sizes and steps: to check the command on a CPU")
    parser.add_argument(
        "--skip", default="", help=f"steps to leave out, comma-separated: {', '.join(s.name for s in STEPS)}"
    )
    parser.add_argument("--total-s", type=float, default=TOTAL_SECONDS, help="seconds for all the steps together")
    parser.add_argument("--weights", default="random", help="passed to every step (random: no download)")
    parser.add_argument("--markdown", default=str(DEFAULT_MARKDOWN), help="the page the rows are appended to")
    parser.add_argument("--out-dir", default="bench-gpu", help="where each step's JSON and log go")
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = sorted(skip - {s.name for s in STEPS})
    if unknown:
        parser.error(f"--skip {','.join(unknown)}: no such step; accepted: {', '.join(s.name for s in STEPS)}")
    args.skip = skip
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    from benchmarks.common import append_table_rows, device_label, utc_now

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = device_label(device)
    # Absolute: the steps run in the repository's root, wherever this was started.
    args.markdown = str(Path(args.markdown).resolve())
    out_dir = Path(args.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.total_s
    print(f"bench-gpu on {name}: {len(STEPS)} steps in at most {args.total_s:.0f} s; rows to {args.markdown}")
    if device.type != "cuda" and not args.tiny:
        print("warning: no GPU: the full sizes on a CPU will run out of their time; --tiny checks the command")
    reports = []
    for step in STEPS:
        reports.append(_run_step(step, args, device, out_dir, deadline))
        r = reports[-1]
        print(
            f"[{step.name}] {r['status']}" + (f" ({r['seconds']:.0f} s)" if r["seconds"] else "") + f": {r['result']}"
        )
    verdicts = (
        _verdicts(out_dir / "engine.json")
        if any(r["name"] == "engine" and r["status"] == "ok" for r in reports)
        else []
    )
    summary = {"date": utc_now(), "device": str(device), "device_name": name, "steps": reports, "targets": verdicts}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    rows = "".join(
        f"| {summary['date'][:10]} | {name} | {r['name']} | {r['status']} | "
        f"{'-' if not r['seconds'] else format(r['seconds'], '.0f')} | {r['result']} |\n"
        for r in reports
    )
    append_table_rows(Path(args.markdown), SUMMARY_TITLE, SUMMARY_TABLE, rows)
    print(f"\nbench-gpu on {name}, summary (also in {args.markdown}, '{SUMMARY_TITLE}'):")
    for r in reports:
        print(f"  {r['name']:<9} {r['status']:<10} {r['result']}")
    for line in verdicts:
        print(f"  target: {line}")
    not_run = [r["name"] for r in reports if r["status"] != "ok"]
    print("not run or not finished: " + (", ".join(not_run) if not_run else "none"))
    return summary


def _run_step(step: Step, args: argparse.Namespace, device, out_dir: Path, deadline: float) -> dict[str, Any]:
    report: dict[str, Any] = {"name": step.name, "what": step.what, "seconds": None}
    if step.name in args.skip:
        return {**report, "status": "skipped", "result": "left out (--skip)"}
    missing = missing_modules(step.needs)
    if missing:
        return {**report, "status": "skipped", "result": f"needs {', '.join(missing)}, not installed here"}
    left = deadline - time.monotonic()
    if left < 5:
        return {**report, "status": "skipped", "result": "no time left of --total-s"}
    # Its share of the whole, or what is left when earlier steps overran.
    limit = min(left, max(args.total_s * step.share, 5.0))
    print(f"[{step.name}] {step.what}: up to {limit:.0f} s", flush=True)
    json_path = out_dir / f"{step.name}.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks",
        # One thread at toy sizes: they gain nothing from more, and a busy CPU loses much.
        *((*step.tiny_args, "--threads", "1") if args.tiny else step.args),
        "--device",
        str(device),
        "--weights",
        args.weights,
        "--json",
        str(json_path),
        "--markdown",
        str(args.markdown),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.monotonic()
    log = out_dir / f"{step.name}.log"
    with log.open("w") as handle:
        try:
            done = subprocess.run(
                command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=limit, check=False
            )
        except subprocess.TimeoutExpired:
            report["seconds"] = time.monotonic() - started
            return {**report, "status": "timed out", "result": f"stopped after its {limit:.0f} s; see {log}"}
    report["seconds"] = time.monotonic() - started
    if done.returncode != 0:
        tail = log.read_text().strip().splitlines()[-1:] or [""]
        return {**report, "status": "failed", "result": f"exit {done.returncode}: {tail[0][:200]}; see {log}"}
    return {**report, "status": "ok", "result": _headline(step.name, json_path)}


def _headline(name: str, json_path: Path) -> str:
    """One line of what a step measured, from its JSON."""
    try:
        result = json.loads(json_path.read_text())
    except (OSError, ValueError):
        return "ran; no JSON to read"
    if name in ("engine", "compile"):
        configs = [c for c in result["configs"] if c.get("designs_per_hour")]
        parts = [f"{c['name']} {c['designs_per_hour']:,.0f}/h" for c in configs]
        best = max((c for c in configs if c.get("peak_fraction") is not None), key=lambda c: c["tflops"], default=None)
        mfu = f"; best {best['tflops']:.1f} TFLOP/s = {100 * best['peak_fraction']:.1f}% of peak" if best else ""
        return ", ".join(parts) + mfu
    if name == "max-size":
        budget = result.get("budget_bytes")
        fitted = (
            f", about {result['largest_in_budget']} px in {budget / 2**30:.0f} GiB (fit)"
            if result.get("largest_in_budget") and budget
            else ""
        )
        return f"largest size run: {result.get('largest_run')} px{fitted}"
    if name == "pipeline":
        modes = result.get("modes", {})
        return ", ".join(f"{m}: device busy {100 * v['busy_fraction']:.1f}%" for m, v in modes.items())
    return "measured; see the rows"


def _verdicts(json_path: Path) -> list[str]:
    result = json.loads(json_path.read_text())
    lines = []
    for key, target, base in (
        ("engine_vs_naive_fp32", TARGET_VS_NAIVE_FP32, "naive-fp32"),
        ("engine_vs_naive_default", TARGET_VS_NAIVE_DEFAULT, "naive-default"),
    ):
        value = result.get(key)
        verdict = "not measured" if value is None else ("met" if value >= target else "NOT met")
        shown = "-" if value is None else f"{value:.2f}"
        lines.append(f"{result.get('best_engine')} x {base} {shown} (target >= {target:g}): {verdict}")
    return lines


if __name__ == "__main__":
    main()
