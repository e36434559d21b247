"""`designs`: the command line. Flags of `generate` are derived from pipeline.config.Config.

Exit status of `generate`: 0 all designs ok; 1 some designs failed (the rest
are committed); 2 the run was refused before any work (bad catalog, flags,
devices or weights); 3 the environment failed the design catalog (a damaged
log entry, a read-only or full disk); 130 stopped by Ctrl-C (finished shards
committed; the same command makes the rest).

Every command: 2 for a bad flag or value (one line, then where the help is);
141 when the reader of its output left first (`designs ... | head`), as for a
Unix tool that SIGPIPE ends, with no traceback.
"""

from __future__ import annotations

import argparse
import atexit
import math
import os
import signal
import sys
import threading
from importlib import metadata
from typing import Any, NoReturn

from flows.options import (
    EXIT_BROKEN_PIPE,
    EXIT_ENVIRONMENT,
    EXIT_FAILED_DESIGNS,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_STOPPED,
    add_config_flags,
    config_from_args,
    configure_prefect_env,
)
from pipeline.config import CURATE_SCORE_WEIGHTS, CURATE_THRESHOLD, DEFAULT_OUT, SIMILAR_K, Config, config_field


class Parser(argparse.ArgumentParser):
    """A bad flag or value: its one line and where the help is, not the whole usage before it.
    Subparsers are made of the same class (argparse's default), so every command answers so."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_REFUSED, f"{self.prog}: error: {message}\nsee {self.prog} --help\n")


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    """--format and -o/--output, as every command that prints a table takes them."""
    parser.add_argument(
        "--format",
        choices=("table", "csv", "json", "parquet"),
        default=None,
        help="output format (default: a table on the terminal, or from the --output suffix)",
    )
    parser.add_argument(
        "-o", "--output", default=None, metavar="FILE", help="write the result to FILE instead of the terminal"
    )


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: `--step 20` must not pass for `--steps 20`.
    parser = Parser(
        prog="designs",
        description="Mass style-transfer design generation into a versioned design catalog.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"designs {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser(
        "generate",
        allow_abbrev=False,
        help="make every content x style design of a catalog",
        description=(
            "Make every content x style design of CATALOG not yet in the design catalog at --out. "
            "Exit 0: all ok; 1: some designs failed (the rest are committed); 2: refused before any work; "
            "3: the disk or the catalog's log failed; 130: stopped by Ctrl-C (the same command makes the rest)."
        ),
    )
    gen.add_argument(
        "catalog",
        metavar="CATALOG",
        help="input catalog parquet (image_id, role, uri; optional collection, mask_uri, tags)",
    )
    gen.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help=f"design catalog folder (default: {DEFAULT_OUT}; with --more-like, its OUT)",
    )
    gen.add_argument(
        "--pairs",
        default=None,
        metavar="PARQUET",
        help="explicit pairings instead of the cross product: content_id (null: pattern mode), style_ids (list), "
        "optional style_mix (list of weights) and per-row overrides of any config field (default: none)",
    )
    gen.add_argument(
        "--grid",
        action="append",
        default=None,
        metavar="FIELD=V1,V2",
        help="make every pairing once per value; repeat to multiply grids, e.g. --grid style_weight=1e-2,1e-1 "
        "--grid seed=0,1 (list fields separate values with ';') (default: none)",
    )
    gen.add_argument(
        "--more-like",
        default=None,
        metavar="OUT",
        help="instead of the pairings, variations of the favourites of the design catalog at OUT (the designs "
        "whose latest verdict in OUT/reviews is favourite), --per-favourite of each, with CATALOG's images: "
        "each keeps its favourite's params but one (style weight, seed, motif scale or repeat) and is "
        "tagged with it (the `more_like` column) (default: none)",
    )
    add_config_flags(gen)

    query = sub.add_parser(
        "query",
        allow_abbrev=False,
        help="SQL over the design catalog (DuckDB: tables designs, runs, commits, embeddings, curation, reviews)",
        description=(
            "Run SQL (DuckDB) over the design catalog. Tables: `designs` (one row per design, at the chosen version), "
            "`runs` (one row per run: counts, timings, throughput, devices), `commits` (the table's versions), "
            "`embeddings` (one per design), `curation` (the latest `designs curate`: groups, scores, review order) "
            "and `reviews` (the verdicts given in `designs review`; the latest per reviewer and design counts). "
            "DuckDB opens no file: it reads the tables Python hands it and writes nothing (-o FILE is written "
            "by Python). Exit 0: done; 2: refused (bad SQL, more than one statement, no catalog, no such version, "
            "bad output, stopped by --timeout)."
        ),
    )
    # [OUT] SQL: one word is the SQL, two are OUT then SQL (argparse gives the one to SQL).
    query.add_argument(
        "out_positional", metavar="OUT", nargs="?", default=None, help=f"design catalog folder (default: {DEFAULT_OUT})"
    )
    query.add_argument("sql", metavar="SQL", help="one DuckDB statement")
    query.add_argument("--out", default=None, metavar="DIR", help="the same as OUT")
    when = query.add_mutually_exclusive_group()
    when.add_argument(
        "--version", type=int, default=None, metavar="N", help="read table version N instead of the latest"
    )
    when.add_argument(
        "--as-of",
        default=None,
        metavar="TIMESTAMP",
        help="read the latest version committed at or before this ISO 8601 time (no zone: UTC), e.g. 2026-11-24T06:00:00Z",
    )
    add_output_flags(query)
    add_timeout_flag(query, "the query")
    parse_intermixed(query)  # `designs query OUT --timeout 5 SQL`: OUT and SQL around flags

    similar = sub.add_parser(
        "similar",
        allow_abbrev=False,
        help="the designs nearest to one by their embeddings, with their distances",
        description=(
            "The K ok designs nearest to DESIGN_ID by cosine distance (1 - cos) between their embeddings "
            "(OUT/embeddings: VGG style statistics, docs/ANALYSTS.md), nearest first; exact search. Designs "
            "without an embedding (made before embeddings, colourways) get one from `designs curate`. "
            "Exit 0: done; 2: refused (no catalog, an unknown design, a design without an embedding, bad output)."
        ),
    )
    similar.add_argument("out", metavar="OUT", help="design catalog folder")
    similar.add_argument("design_id", metavar="DESIGN_ID", help="the design whose neighbours to list")
    similar.add_argument(
        "-k", type=int, default=SIMILAR_K, metavar="N", help=f"how many designs to list (default: {SIMILAR_K})"
    )
    similar.add_argument(
        "--version",
        type=int,
        default=None,
        metavar="N",
        help="among the ok designs of table version N (default: the latest)",
    )
    add_output_flags(similar)

    gallery = sub.add_parser(
        "gallery",
        allow_abbrev=False,
        help="a static HTML gallery of the design catalog (one file, no server)",
        description=(
            "Write one self-contained HTML page of every design (thumbnail, parameters, loss curve; filters by content, "
            "style and tag) and the failed designs with their errors. Images are linked by relative path into OUT/images."
        ),
    )
    gallery.add_argument(
        "out", metavar="OUT", nargs="?", default=DEFAULT_OUT, help=f"design catalog folder (default: {DEFAULT_OUT})"
    )
    gallery.add_argument(
        "--version", type=int, default=None, metavar="N", help="show table version N instead of the latest"
    )
    gallery.add_argument(
        "-o", "--output", default=None, metavar="FILE", help="the HTML file to write (default: OUT/gallery.html)"
    )

    verify = sub.add_parser(
        "verify",
        allow_abbrev=False,
        help="check that every ok row's PNG exists and matches its hash; list orphan PNGs",
        description="Exit 0 when the catalog is consistent, 1 when any problem remains.",
    )
    verify.add_argument(
        "out", metavar="OUT", nargs="?", default=DEFAULT_OUT, help=f"design catalog folder (default: {DEFAULT_OUT})"
    )
    verify.add_argument(
        "--fix",
        action="store_true",
        help="remove orphan PNGs and retire rows whose PNG is missing or altered, so the next run remakes them "
        "(not while a run is writing to OUT)",
    )
    colourways = sub.add_parser(
        "colourways",
        allow_abbrev=False,
        help="recolour finished designs into a palette, another image's colours or N flat inks",
        description=(
            "Recolour every ok design of the catalog at OUT (not colourways themselves; --where narrows them) "
            "without optimizing again: each pixel takes one of N flat colours, no dithering, found by k-means in "
            "OKLab. Each colourway is a new design row (parent_design_id, palette); a rerun adds nothing. "
            "Exit 0: done; 2: refused (no catalog, a bad palette, image or --where); 3: the disk or the catalog's "
            "log failed."
        ),
    )
    colourways.add_argument(
        "out", metavar="OUT", nargs="?", default=DEFAULT_OUT, help=f"design catalog folder (default: {DEFAULT_OUT})"
    )
    source = colourways.add_mutually_exclusive_group()
    source.add_argument(
        "--palette",
        metavar="FILE",
        default=None,
        help="a text file of 2 to 16 hex colours (#RRGGBB; '# ' starts a comment); the design's colours "
        "map onto them darkest to darkest",
    )
    source.add_argument(
        "--from-image",
        metavar="IMG",
        default=None,
        help="take the palette from this image: its --inks colours (default 6), found by k-means in OKLab",
    )
    colourways.add_argument(
        "--inks",
        type=int,
        default=None,
        metavar="N",
        help="alone: each design in N flat inks of its own colours (screen printing); with --from-image: N colours",
    )
    colourways.add_argument(
        "--version", type=int, default=None, metavar="N", help="recolour the designs of table version N"
    )
    colourways.add_argument(
        "--where",
        default=None,
        metavar="EXPR",
        help="recolour only the designs this DuckDB expression over the designs table's columns selects, e.g. "
        "\"content_id = 'dress'\": one expression, applied as a filter of its own (default: all)",
    )
    add_timeout_flag(colourways, "the selection of the designs (--where)")
    curate = sub.add_parser(
        "curate",
        allow_abbrev=False,
        help="group near-duplicate designs, rank each group, write OUT/curation",
        description=(
            "Group every ok design of the catalog at OUT with its near-duplicates (embeddings at most --threshold "
            "apart in cosine distance, computed first for designs without one; a colourway joins its parent), rank "
            "each group by score (its best design is the representative) and write the OUT/curation table as a new "
            "version (designs query 'select ... from curation'). Exit 0: done; 2: refused (no catalog, a bad "
            "--where, threshold or weights); 3: the disk or a table's log failed."
        ),
    )
    curate.add_argument(
        "out", metavar="OUT", nargs="?", default=DEFAULT_OUT, help=f"design catalog folder (default: {DEFAULT_OUT})"
    )
    curate.add_argument("--version", type=int, default=None, metavar="N", help="curate the designs of table version N")
    curate.add_argument(
        "--where",
        default=None,
        metavar="EXPR",
        help="curate only the designs this DuckDB expression over the designs table's columns selects, e.g. "
        "\"content_id = 'dress'\": one expression, applied as a filter of its own (default: all)",
    )
    curate.add_argument(
        "--threshold",
        type=float,
        default=CURATE_THRESHOLD,
        metavar="T",
        help=f"near-duplicates are at most this cosine distance (1 - cos) apart, in [0, 1) (default: {CURATE_THRESHOLD:g})",
    )
    curate.add_argument(
        "--score-weights",
        default=None,
        metavar="TERM=W,...",
        help="the weights of the score's terms, any of "
        + ",".join(f"{k}={v:g}" for k, v in CURATE_SCORE_WEIGHTS.items())
        + " (the defaults; docs/ANALYSTS.md)",
    )
    curate.add_argument(
        "--weights",
        action="append",
        default=[],
        metavar="FILE",
        help="a VGG weights file to embed designs without an embedding with (where a design's own file is "
        "elsewhere); repeatable (default: where a run finds them)",
    )
    curate.add_argument(
        "--prefer-favourites",
        action="store_true",
        help="review first the groups nearest the favourites of OUT/reviews (the cosine distance of a group's "
        "nearest member to its nearest favourite, then the score); without favourites, by score as without it",
    )
    add_timeout_flag(curate, "the selection of the designs (--where)")
    maintain = sub.add_parser(
        "maintain",
        allow_abbrev=False,
        help="compact the design catalog's small files, vacuum old ones, write a checkpoint (its side tables too)",
        description=(
            "Compact the small data files of the design catalog at OUT into large ones sorted by design_id "
            "(the whole table is re-sorted when a commit would meet more than 8 sorted layers of files, or "
            "with --resort), delete the files no version committed within the retention reads, write a "
            "checkpoint, and print the file counts and sizes before and after. --version/--as-of to a version older than the retention may then fail; "
            "versions inside it keep working. The tables beside it (OUT/embeddings, OUT/curation, OUT/reviews) are "
            "compacted when due, vacuumed with the same retention and checkpointed too, each reported. Exit 0: done; 2: refused (no catalog, a retention under the "
            "table's minimum); 3: the disk or the catalog's log failed."
        ),
    )
    maintain.add_argument(
        "out", metavar="OUT", nargs="?", default=DEFAULT_OUT, help=f"design catalog folder (default: {DEFAULT_OUT})"
    )
    retention = config_field("maintain_retention_hours").default
    maintain.add_argument(
        "--retention-hours",
        type=int,
        default=retention,
        metavar="H",
        help=f"keep every file that a version committed in the last H hours reads; at least the table's "
        f"minimum, a week unless its delta.deletedFileRetentionDuration says otherwise (default: {retention})",
    )
    maintain.add_argument(
        "--dry-run", action="store_true", help="change nothing: print the files and what the vacuum would remove"
    )
    small = config_field("maintain_small_file_bytes").default
    maintain.add_argument(
        "--small-file-bytes",
        type=int,
        default=small,
        metavar="N",
        help=f"compact the data files smaller than N bytes, as a run's --maintain-small-file-bytes (default: {small})",
    )
    maintain.add_argument(
        "--resort",
        action="store_true",
        help="rewrite every data file sorted by design_id (a z-order), not only the small ones: its time and "
        "disk grow with the table, and the files it replaces stay for the retention",
    )
    add_review_parser(sub)
    add_weights_parser(sub)
    return parser


def add_review_parser(sub: Any) -> None:
    """`designs review`: the review desk (pipeline/views/review.py)."""
    from pipeline.views.review_defaults import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_REVIEWER

    review = sub.add_parser(
        "review",
        allow_abbrev=False,
        help="a local web page to review the designs: paging, filters, favourite / reject by keyboard",
        description=(
            "Serve the review desk of the design catalog at OUT until Ctrl-C: the designs 48 a page in curation "
            "order (designs curate), filters, each design's page (image, params, loss curve, quality, group, "
            "colourways, nearest designs); keys: arrows move, f favourite, x reject, u clear. Verdicts are "
            "appended to OUT/reviews (designs query 'select * from reviews'); nothing else is written but "
            "thumbnails under OUT/thumbnails. Exit 0: stopped; 2: refused (no catalog, a bad reviewer, a port in use)."
        ),
    )
    review.add_argument(
        "out", metavar="OUT", nargs="?", default=DEFAULT_OUT, help=f"design catalog folder (default: {DEFAULT_OUT})"
    )
    review.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"the address to listen on; another than this machine's own warns: anyone who reaches it can give "
        f"verdicts (default: {DEFAULT_HOST})",
    )
    review.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"the port (default: {DEFAULT_PORT})")
    review.add_argument(
        "--reviewer",
        default=DEFAULT_REVIEWER,
        metavar="NAME",
        help=f"whose verdicts these are: letters, digits and . _ @ - (default: {DEFAULT_REVIEWER})",
    )


def add_weights_parser(sub: Any) -> None:
    """`designs weights list|fetch`. The networks and files are pipeline.engine.weights' known
    files; naming them here would import torch for --help."""
    weights = sub.add_parser(
        "weights",
        allow_abbrev=False,
        help="list the VGG weights files --weights auto finds, or fetch them ahead of a run",
        description=(
            "The VGG weights ahead of a run. `list`: every place --weights auto looks, in its order "
            "($NST_VGG19_WEIGHTS, the Keras cache, the torch hub cache), what is there, its size and checksums, "
            "and whether they are the published ones. `fetch`: download the network's published file into the "
            "cache --weights auto looks in, checked against its published checksum (nothing is left behind when "
            "it does not match). Exit 0: done; 2: refused (a network with no known file); 3: the download, its "
            "checksum or the cache folder failed."
        ),
    )
    actions = weights.add_subparsers(dest="weights_command", required=True, metavar="{list,fetch}")
    actions.add_parser(
        "list",
        allow_abbrev=False,
        help="where --weights auto looks, what is found, sizes and checksums",
        description="Every place --weights auto looks, in its order, with each file's size, SHA-256 (and MD5 "
        "where the published checksum is one) and whether it is the published file.",
    )
    fetch = actions.add_parser(
        "fetch",
        allow_abbrev=False,
        help="download the weights into the cache --weights auto looks in, checksum checked",
        description="Download the network's published weights file into the cache --weights auto looks in, "
        "unless a file with the published checksum is already there. The download goes to a temporary file "
        "beside it, is checked, then renamed: a failed or mismatching download leaves nothing behind. "
        "Progress on stderr; the file's path on stdout.",
    )
    fetch.add_argument(
        "--network",
        default="vgg19",
        metavar="NAME",
        help="the network whose weights to fetch: one with a known file (those `designs weights list` shows); "
        "default: vgg19",
    )
    fetch.add_argument(
        "--url",
        default=None,
        metavar="URL",
        help="download from this mirror (an http, https or file URL) instead of the published address; "
        "the published checksum is still checked",
    )


def seconds(text: str) -> float:
    """A --timeout value: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0, e.g. 60 or 0.5")
    return value


def run_similar(args: argparse.Namespace) -> int:
    from pipeline.views.query import format_for, write_result
    from pipeline.views.similar import nearest

    try:
        fmt = format_for(args.format, args.output)
        table = nearest(args.out, args.design_id, args.k, args.version)
        write_result(table, fmt, args.output)
    except (FileNotFoundError, ValueError) as err:  # QueryError (unknown design, no embedding) is a ValueError
        print(f"designs similar: {err}", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK


def parse_intermixed(parser: argparse.ArgumentParser) -> None:
    """Let `parser` take its positionals before, between and after its flags. argparse hands the
    positionals out per run of words between flags: `OUT --timeout 5 SQL` would give OUT to SQL,
    then find SQL left over. Its intermixed parse takes the flags first, then the positionals;
    it calls parse_known_args itself, hence the flag."""
    plain = parser.parse_known_args
    inside = threading.local()

    def parse_known_args(args: Any = None, namespace: Any = None) -> Any:
        if getattr(inside, "active", False):
            return plain(args, namespace)
        inside.active = True
        try:
            return parser.parse_known_intermixed_args(args, namespace)
        finally:
            inside.active = False

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def add_timeout_flag(parser: argparse.ArgumentParser, what: str) -> None:
    from pipeline.catalog.timeout import DEFAULT_TIMEOUT_S

    parser.add_argument(
        "--timeout",
        type=seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"stop {what} after this many seconds (exit 2) (default: {DEFAULT_TIMEOUT_S:g})",
    )


def package_version() -> str:
    try:
        return metadata.version("designs")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of one command, whose name a bad flag value's error should carry."""
    for action in parser._subparsers._group_actions:  # argparse keeps no public handle
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


def main(argv: list[str] | None = None) -> int:
    """`designs`. With argv (tests, other Python code): run the command and return its exit status.
    Without (the console script, `python -m flows.cli`): the process's own command line, and the
    process ends here, with the status settled once the output is written (exit_process)."""
    if argv is not None:
        return run_command(argv)
    try:
        try:
            code = run_command(None)
        except SystemExit as stop:  # argparse: --help, --version, a bad flag
            code = stop.code if isinstance(stop.code, int) else EXIT_OK if stop.code is None else 1
            if stop.code is not None and not isinstance(stop.code, int):  # printed and 1, as Python does
                print(stop.code, file=sys.stderr)
        sys.stdout.flush()  # a reader that left shows up here at the latest, while it can be handled
    except BrokenPipeError:
        # `designs ... | head`: the rest of the output has nowhere to go; say so by the status alone.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so no later flush raises again
        code = EXIT_BROKEN_PIPE
    exit_process(code)


def exit_process(code: int) -> NoReturn:
    """End the process with `code` after what a normal exit does before the interpreter's teardown
    (threads joined, atexit functions: Prefect's temporary server stopped, logging flushed; stdout and
    stderr flushed), but without that teardown. pyarrow's I/O threads may still be releasing Python
    buffers then (deltalake reads through a Python filesystem); a thread that asks for the GIL during
    the teardown is ended with pthread_exit, whose unwinding through their C++ frames calls
    std::terminate: `terminate called without an active exception` and exit 134 after the command
    had printed its result (`designs verify`, about 1 run in 10 on a busy machine)."""
    threading._shutdown()  # what the interpreter's exit calls first: threading's atexit, then joins
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # a reader gone, a stream closed: nothing more to write
            pass
    os._exit(code)


def run_command(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "generate":
        generate_parser = subparser(parser, "generate")
        try:
            config = config_from_args(args)
        except ValueError as err:
            generate_parser.error(str(err))
        from pipeline.planning.variants import parse_grid  # local: pyarrow and numpy are not needed for --help

        try:
            grid = parse_grid(args.grid)
        except ValueError as err:
            generate_parser.error(str(err))
        if args.more_like is not None and (given := design_flags_given(args)):
            print(
                f"designs generate: refused: --more-like keeps each favourite's own design params; "
                f"{', '.join(given)} would not apply (flags that change a design's pixels go without --more-like)",
                file=sys.stderr,
            )
            return EXIT_REFUSED
        out = args.out or args.more_like or DEFAULT_OUT
        return run_generate(args.catalog, out, config, pairs=args.pairs, grid=grid, more_like=args.more_like)
    if args.command == "query":
        from pipeline.views.query import run_query

        if args.out_positional is not None and args.out is not None:
            print(
                f"designs query: OUT given twice ({args.out_positional!r} and --out {args.out!r}); give one",
                file=sys.stderr,
            )
            return EXIT_REFUSED
        out = args.out_positional or args.out or DEFAULT_OUT
        try:
            run_query(out, args.sql, args.version, args.as_of, args.format, args.output, args.timeout)
        except (FileNotFoundError, ValueError) as err:
            print(f"designs query: {err}", file=sys.stderr)
            return EXIT_REFUSED
        return EXIT_OK
    if args.command == "similar":
        return run_similar(args)
    if args.command == "gallery":
        from pipeline.views.gallery import build_gallery

        try:
            report = build_gallery(args.out, version=args.version, output=args.output)
        except (FileNotFoundError, ValueError) as err:
            print(f"designs gallery: {err}", file=sys.stderr)
            return EXIT_REFUSED
        print(report.line())
        return EXIT_OK
    if args.command == "verify":
        from pipeline.catalog.verify import verify_catalog

        try:
            report = verify_catalog(args.out, fix=args.fix)
        except FileNotFoundError as err:
            print(f"designs verify: {err}", file=sys.stderr)
            return EXIT_REFUSED
        print("\n".join(report.lines()))
        return EXIT_FAILED_DESIGNS if report.problems else EXIT_OK
    if args.command == "colourways":
        return run_colourways(args)
    if args.command == "curate":
        return run_curate(args)
    if args.command == "maintain":
        from pipeline.catalog.designs import CatalogFault
        from pipeline.catalog.maintenance import maintain

        try:
            report = maintain(
                args.out,
                retention_hours=args.retention_hours,
                dry_run=args.dry_run,
                small_file_bytes=args.small_file_bytes,
                resort=args.resort,
            )
        except (FileNotFoundError, ValueError) as err:
            print(f"designs maintain: refused: {err}", file=sys.stderr)
            return EXIT_REFUSED
        except CatalogFault as err:
            print(f"designs maintain: {err}", file=sys.stderr)
            return EXIT_ENVIRONMENT
        print("\n".join(report.lines()))
        return EXIT_OK
    if args.command == "review":
        return run_review(args)
    if args.command == "weights":
        return run_weights(args)
    parser.error(f"unknown command {args.command!r}")
    return EXIT_REFUSED


def run_review(args: argparse.Namespace) -> int:
    """`designs review`: serve until Ctrl-C (uvicorn's own handling), refused before serving."""
    from pipeline.views.review import is_loopback, serve

    if not is_loopback(args.host):
        print(
            f"designs review: warning: listening on {args.host}, not this machine's loopback: anyone who can "
            f"reach port {args.port} there can see the designs and give verdicts",
            file=sys.stderr,
        )
    try:
        serve(args.out, args.host, args.port, args.reviewer)
    except (FileNotFoundError, ValueError) as err:
        print(f"designs review: {err}", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK


def run_weights(args: argparse.Namespace) -> int:
    """`designs weights list` and `designs weights fetch`."""
    from pipeline.engine import weights

    if args.weights_command == "list":
        print("\n".join(weights_lines(weights.find_weights_files())))
        return EXIT_OK
    from flows.progress import DownloadProgress

    try:
        known = weights.fetch_file(args.network)
    except ValueError as err:
        print(f"designs weights fetch: {err}", file=sys.stderr)
        return EXIT_REFUSED
    progress = DownloadProgress(known.name)
    try:
        path, downloaded = weights.fetch_weights(known, args.url, progress)
    except weights.DownloadError as err:
        progress.close()
        print(f"designs weights fetch: {err}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    progress.close()
    how = "downloaded" if downloaded else "already there"
    print(f"{path}: {how}, {weights.expected_checksum(known)} as published; --weights auto finds it")
    return EXIT_OK


def weights_lines(found: list[Any]) -> list[str]:
    """`designs weights list`: a line per place --weights auto looks, then what it does."""
    from pipeline.engine.weights import DOWNLOAD_URL, expected_checksum

    lines = []
    used = None
    for place in found:
        what = f"{place.place}" + (f", {place.known.name} ({place.known.network})" if place.known else "")
        if place.path is None:
            lines.append(f"{what}: not set")
            continue
        if place.size is None:
            lines.append(f"{what}: {place.path}: not found")
            continue
        sums = f"SHA-256 {place.sha256}" + (f", MD5 {place.md5}" if place.md5 else "")
        if place.matches is None:
            check = "taken as it is (an explicit file is not checked)"
        elif place.matches:
            check = f"matches the published {expected_checksum(place.known)}"
        else:
            check = f"does NOT match the published {expected_checksum(place.known)}"
        lines.append(f"{what}: {place.path}: {place.size} bytes, {sums}, {check}")
        if place.used:
            used = place
    if used is None:
        lines.append(
            f"--weights auto finds no file: a run downloads {DOWNLOAD_URL}; `designs weights fetch` does it ahead"
        )
    elif used.matches is False:
        lines.append(f"--weights auto takes {used.path} and refuses it: delete it and run `designs weights fetch`")
    else:
        lines.append(f"--weights auto takes {used.path}")
    return lines


def run_colourways(args: argparse.Namespace) -> int:
    from pipeline.catalog.designs import CatalogFault
    from pipeline.catalog.palettes import palette_from_file, palette_from_image
    from pipeline.engine.palette import DEFAULT_IMAGE_INKS, ColourwayError, inks_palette
    from pipeline.execution.colourways import make_colourways
    from pipeline.views.contact_sheet import colourways_sheet

    try:
        if args.palette is not None:
            if args.inks is not None:
                raise ColourwayError("--inks goes with --from-image or alone; a --palette file has its own colours")
            palette = palette_from_file(args.palette)
        elif args.from_image is not None:
            palette = palette_from_image(args.from_image, args.inks or DEFAULT_IMAGE_INKS)
        elif args.inks is not None:
            palette = inks_palette(args.inks)
        else:
            raise ColourwayError("no colours given; accepted: --palette FILE, --from-image IMG or --inks N")
        report = make_colourways(args.out, palette, version=args.version, where=args.where, timeout_s=args.timeout)
        colourways_sheet(report, args.out)  # each colourway beside its parent
    except (FileNotFoundError, ValueError) as err:  # ColourwayError and QueryError are ValueErrors
        print(f"designs colourways: refused: {err}", file=sys.stderr)
        return EXIT_REFUSED
    except CatalogFault as err:
        print(f"designs colourways: {err}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    print("\n".join(report.lines()))
    return EXIT_OK


def design_flags_given(args: argparse.Namespace) -> list[str]:
    """The flags given that change a design's pixels (Config's identity fields), as spelled."""
    from pipeline.config import config_fields

    return [
        "--" + f.name.replace("_", "-")
        for f in config_fields()
        if f.metadata["identity"] and getattr(args, f.name, None) is not None
    ]


def run_curate(args: argparse.Namespace) -> int:
    from pipeline.catalog.designs import CatalogFault
    from pipeline.execution.curate import curate, parse_score_weights

    try:
        weights = parse_score_weights(args.score_weights)
        report = curate(
            args.out,
            version=args.version,
            where=args.where,
            threshold=args.threshold,
            weights=weights,
            timeout_s=args.timeout,
            weights_files=args.weights,
            prefer_favourites=args.prefer_favourites,
        )
    except (FileNotFoundError, ValueError) as err:  # QueryError is a ValueError
        print(f"designs curate: refused: {err}", file=sys.stderr)
        return EXIT_REFUSED
    except CatalogFault as err:
        print(f"designs curate: {err}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    print("\n".join(report.lines()))
    return EXIT_OK


def run_generate(
    catalog: str,
    out: str,
    config: Config,
    pairs: str | None = None,
    grid: dict | None = None,
    more_like: str | None = None,
) -> int:
    """Check everything that can refuse the run, then run the flow; one line for each way it can end early."""
    from pipeline.engine.weights import WeightsError
    from pipeline.execution.preflight import CatalogFault
    from pipeline.execution.run import Run

    try:
        # Before Prefect starts: a refusal costs no server start and prints no traceback.
        # The flow takes what was checked: the catalog and the weights are loaded once.
        prepared = Run(catalog, out, config).prepare(
            pairs, grid, devices=config.runner == "thread", more_like=more_like
        )
        if config.runner != "thread":
            from flows.task_runners import make_task_runner

            make_task_runner(config.runner, config.dask_address or None, config.devices)
    except (ValueError, WeightsError) as err:  # Refused, CatalogError and DeviceError are ValueErrors
        print(f"designs generate: refused: {err}", file=sys.stderr)
        return EXIT_REFUSED
    except CatalogFault as err:
        print(f"designs generate: {err}", file=sys.stderr)
        return EXIT_ENVIRONMENT

    if prepared.more_like is not None:
        print("\n".join(prepared.more_like.lines(prepared.weights.identity)), flush=True)
    configure_prefect_env()
    import flows.generate
    from flows.generate import STOP, generate_flow, hand_over
    from flows.server import start_temporary_server
    from flows.task_runners import workers_prefect_api
    from pipeline.catalog.inputs import CatalogError
    from pipeline.execution.devices import DeviceError

    flows.generate.LOG_SUMMARY = False  # printed below, once
    previous = signal.signal(signal.SIGINT, _stop_on_interrupt)
    try:
        start_temporary_server()  # where no PREFECT_API_URL is set: one that Ctrl-C and kill -9 do not strand
        flow = generate_flow(config)
        with workers_prefect_api(config.runner, config.dask_address or None):
            summary = flow(
                catalog=catalog,
                out=out,
                config=config,
                pairs=pairs,
                grid=grid or None,
                more_like=more_like,
                prepared=hand_over(prepared),
            )
    except (CatalogError, WeightsError, DeviceError) as err:  # the inputs changed since the checks
        print(f"designs generate: refused: {err}", file=sys.stderr)
        return EXIT_REFUSED
    except CatalogFault as err:
        print(f"designs generate: {err}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    finally:
        signal.signal(signal.SIGINT, previous)
    print("\n".join(summary.report_lines()))
    if STOP.is_set():
        print(f"designs generate: stopped: {summary.left} design(s) left; run the same command again", file=sys.stderr)
        return EXIT_STOPPED
    return EXIT_FAILED_DESIGNS if summary.failed else EXIT_OK


def _stop_on_interrupt(signum: int, frame: Any) -> None:
    """First Ctrl-C: stop after committing what finished. A second one: quit at once."""
    from flows.generate import STOP

    if STOP.is_set():
        print("designs generate: stopped at once; committed designs are kept", file=sys.stderr, flush=True)
        os._exit(EXIT_STOPPED)
    STOP.set()
    print(
        "designs generate: stopping: running shards end at their next step, finished ones are committed "
        "(Ctrl-C again to quit at once)",
        file=sys.stderr,
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
