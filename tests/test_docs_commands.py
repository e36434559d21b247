"""Every command and flag the README and docs/ spell: `designs ...` lines parse
with the real parser, `make X` names a Makefile target (with its ARGS parsing as
`designs generate` flags), every flag of the options table exists, the cheap
commands run for real, and every Python snippet runs against a small real catalog."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A usage pattern, not a command: <id>, [optional], ..., or an all-caps word standing for a value.
PLACEHOLDERS = re.compile(r"<[^>]+>|\.\.\.|\[|(?<![\w=/-])[A-Z][A-Z_]*(?![\w=])")
SUBCOMMANDS = (
    "generate",
    "query",
    "gallery",
    "verify",
    "maintain",
    "colourways",
    "weights",
    "similar",
    "--version",
    "--help",
)


def code_lines(text: str) -> list[tuple[str, bool]]:
    """(line, fenced) for the lines of fenced code blocks and for inline code spans, in order."""
    lines: list[tuple[str, bool]] = []
    fenced = False
    pending = ""
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            if line.rstrip().endswith("\\"):  # a continued shell line
                pending += line.rstrip()[:-1] + " "
                continue
            lines.append(((pending + line).strip(), True))
            pending = ""
        else:
            lines += [(span, False) for span in re.findall(r"`([^`]+)`", line)]
    return lines


def commands(prefix: str) -> list[tuple[str, str, bool]]:
    """(doc, command, fenced) for every spelled command starting with `prefix`, cleaned of shell around it.
    A fenced line is a whole command; an inline span may name a command and a flag or two."""
    found = []
    for doc in DOCS:
        for line, fenced in code_lines(doc.read_text()):
            line = line.split(" #")[0].strip()
            line = re.split(r"\s(?:>>|>|2>&1|\|)\s?", line)[0]
            for part in line.split("&&"):
                part = part.strip()
                words = part.split()
                while words and ("=" in words[0] and not words[0].startswith("-") or words[0] in ("flock", "-n")):
                    words.pop(0)  # VAR=value, flock -n LOCK
                    if words and words[0].endswith(".lock"):
                        words.pop(0)
                part = " ".join(words).removeprefix(".venv/bin/")
                if not part.startswith(prefix) or PLACEHOLDERS.search(part):
                    continue
                if prefix == "designs " and part.split()[1] not in SUBCOMMANDS:
                    continue  # output quoted in the docs ("designs query: ..." messages, progress lines)
                found.append((doc.name, part, fenced))
    return found


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z-]*):", text, re.M))


DESIGNS = commands("designs ")
MAKES = commands("make ")


def test_the_docs_spell_commands():
    assert len(DESIGNS) >= 10 and len(MAKES) >= 20


def options_of(*command: str) -> set[str]:
    """The options of a command, down through its subcommands (`weights fetch`)."""
    parser = build_parser()
    for word in command:
        groups = [a for a in parser._subparsers._group_actions if a.choices] if parser._subparsers else []
        if not groups or word not in groups[0].choices:
            break
        parser = groups[0].choices[word]
    return {s for action in parser._actions for s in action.option_strings}


@pytest.mark.parametrize(("doc", "command", "fenced"), DESIGNS, ids=[f"{d}:{c[:60]}" for d, c, _ in DESIGNS])
def test_every_designs_command_parses(doc, command, fenced):
    words = shlex.split(command)[1:]
    if "--help" in words or "--version" in words:
        return
    if fenced:
        build_parser().parse_args(words)
    else:  # a mention: the command and the flags it names exist
        flags = {w.split("=")[0] for w in words[1:] if w.startswith("--")}
        names = [w for w in words if not w.startswith("-")][:2]
        assert flags <= options_of(*names), f"{doc}: `{command}`: {sorted(flags - options_of(*names))}"


@pytest.mark.parametrize(("doc", "command", "fenced"), MAKES, ids=[f"{d}:{c[:60]}" for d, c, _ in MAKES])
def test_every_make_command_names_a_target_and_its_args_parse(doc, command, fenced):
    words = shlex.split(command)
    targets = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
    for target in targets:
        if target.endswith("*"):  # `make bench*`: a family of targets
            assert any(t.startswith(target[:-1]) for t in make_targets()), command
            continue
        assert target in make_targets(), f"{doc}: `{command}`: no target {target!r} in the Makefile"
    args = [w.split("=", 1)[1] for w in words if w.startswith("ARGS=")]
    if args and "serve" in targets:  # python -m flows.deploy: generate's flags and the server's
        from flows.deploy import build_parser as deploy_parser

        deploy_parser().parse_args(["c.parquet", *shlex.split(args[0])])
    elif args and set(targets) & {"generate", "demo"}:
        build_parser().parse_args(["generate", "c.parquet", *shlex.split(args[0])])


def test_every_flag_of_the_options_table_exists():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Options") : readme.index("## The design catalog")]
    flags = set(re.findall(r"`(--[a-z][a-z0-9-]*)", table))
    known = options_of("generate")
    assert flags and flags <= known, sorted(flags - known)


def test_the_demo_is_described_as_the_makefile_runs_it():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    flags = re.search(r"^DEMO_FLAGS := (.*)$", makefile, re.M).group(1)
    pairs = re.search(r"^DEMO_PAIRS := (.*)$", makefile, re.M).group(1)
    assert flags in readme and pairs in readme


@pytest.mark.parametrize(
    "command",
    [
        ["--version"],
        ["--help"],
        *[[c, "--help"] for c in ("generate", "query", "gallery", "verify", "maintain", "colourways", "similar")],
    ],
)
def test_the_cheap_commands_run(command):
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", *command], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


# --- Python snippets: every ```python block of the README and docs/ runs ---


def python_blocks() -> list[tuple[str, str]]:
    return [
        (doc.name, code)
        for doc in DOCS
        for code in re.findall(r"^```python\n(.*?)^```", doc.read_text(), flags=re.S | re.M)
    ]


PYTHON = python_blocks()


def test_the_docs_have_python_snippets():
    assert {doc for doc, _ in PYTHON} >= {"README.md", "ANALYSTS.md"}


@pytest.fixture(scope="module")
def catalog_out(tmp_path_factory) -> Path:
    from analyst_catalog import analyst_catalog_out

    return analyst_catalog_out(tmp_path_factory)


def snippet_id(doc: str, code: str) -> str:
    return doc + ":" + re.sub(r"\W+", "-", code.splitlines()[0])[:40]


@pytest.mark.parametrize(("doc", "code"), PYTHON, ids=[snippet_id(d, c) for d, c in PYTHON])
def test_every_python_snippet_runs(catalog_out: Path, doc: str, code: str, monkeypatch, capsys):
    """Run from the folder holding data/catalog, as a reader in the project's root would."""
    if "import polars" in code:
        pytest.importorskip("polars")
    monkeypatch.chdir(catalog_out.parent.parent)
    exec(compile(code, doc, "exec"), {"__name__": "__snippet__"})
    if "print(" in code or ".show()" in code:
        assert capsys.readouterr().out.strip(), "the snippet prints something"
