"""Which weights `make demo` uses: `python -m flows.demo_weights [PATH]` prints the --weights value.

- PATH given (`make demo WEIGHTS=PATH`): PATH itself; `designs generate` checks it.
- Otherwise `auto` where --weights auto finds a known file or can download the paper's.
- Otherwise `random`, with one line on stderr saying so and where real weights come from.

The Makefile picks the demo's flags from the answer: the paper's defaults at a CPU size
for real weights, settings tuned for random weights otherwise (their textures show only
with raised style weights).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

RANDOM_NOTE = (
    "make demo: no VGG weights found or downloadable ({reason}); using random weights, whose designs are "
    "coloured noise, not real style transfer. Real ones: `designs weights fetch` (or a known file in the cache "
    "`designs weights list` shows), or make demo WEIGHTS=PATH"
)


def demo_weights(path: str = "") -> tuple[str, str | None]:
    """The --weights value for the demo, and the line to print when it falls back to random."""
    if path:
        return path, None
    from pipeline.engine.weights import WeightsError, resolve_weights

    try:
        resolve_weights("auto", 0)  # finds, or downloads with its checksum checked, as the run would
    except WeightsError as err:
        reason = str(err).split(" (", 1)[1].split(")", 1)[0] if " (" in str(err) else str(err)
        return "random", RANDOM_NOTE.format(reason=reason)
    return "auto", None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1:
        print("usage: python -m flows.demo_weights [PATH]", file=sys.stderr)
        return 2
    weights, note = demo_weights(args[0] if args else "")
    if note:
        print(note, file=sys.stderr)
    print(weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())
