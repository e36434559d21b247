"""The tree shows the architecture (docs/ARCHITECTURE.md): stage packages under
pipeline/, no import cycle (lazy imports included), the engine on torch alone,
pipeline/ free of Prefect, benchmarks outside the product."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "flows", "benchmarks")
STAGES = {"engine", "catalog", "planning", "execution", "views"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """Every project module `path` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def third_party(path: Path) -> set[str]:
    tops: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            tops |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            tops.add(node.module.split(".")[0])
    return tops


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    # A package's __init__ is imported with any of its modules; these are empty.
    return {name: imports(path, known) - {name} for name, path in found.items()}


def test_no_import_cycle_lazy_imports_included():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_the_cycle_check_finds_a_cycle(tmp_path):
    """The check above would see a lazy import that closes a cycle."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("import b\n")
    b.write_text("def f():\n    from a import x\n")
    assert imports(a, {"a", "b"}) == {"b"} and imports(b, {"a", "b"}) == {"a"}


def test_pipeline_holds_config_files_and_the_stage_packages():
    top = {p.name for p in (ROOT / "pipeline").iterdir() if p.name != "__pycache__"}
    assert top == {"__init__.py", "config.py", "files.py"} | STAGES
    for stage in STAGES:
        assert (ROOT / "pipeline" / stage / "__init__.py").is_file()


def test_no_benchmark_code_in_the_product():
    for path in (ROOT / "pipeline").rglob("*.py"):
        assert "bench" not in path.name, path
        assert "benchmarks" not in imports(path, set(modules())), path


def test_pipeline_never_imports_prefect():
    for path in (ROOT / "pipeline").rglob("*.py"):
        assert not third_party(path) & {"prefect", "prefect_dask", "dask", "distributed"}, path


def test_the_engine_imports_only_torch_numpy_and_pillow():
    # h5py: Keras' HDF5 weights file, the paper's network (read lazily, nothing unpickled).
    allowed = {"torch", "numpy", "PIL", "h5py", "pipeline", "__future__"}
    stdlib = {
        "collections",
        "dataclasses",
        "functools",
        "time",
        "os",
        "re",
        "hashlib",
        "pickle",
        "pathlib",
        "typing",
        "math",
        "urllib",
        "http",
        "zipfile",
        "io",
        "contextlib",
        "shutil",
        "tempfile",
        "struct",
        "json",
        "warnings",
        "platform",
    }
    for path in (ROOT / "pipeline" / "engine").rglob("*.py"):
        extra = third_party(path) - allowed - stdlib
        assert not extra, f"{path.name} imports {extra}"
        inner = {m for m in imports(path, set(modules())) if m.startswith("pipeline.")}
        assert all(m.startswith("pipeline.engine") or m in ("pipeline.config", "pipeline.files") for m in inner), (
            path,
            inner,
        )


def test_files_is_torch_free():
    assert not third_party(ROOT / "pipeline" / "files.py") & {"torch", "numpy", "PIL", "deltalake"}


# The stages in the order data flows through them: a module may import its own stage and
# the stages before it, never one after (pipeline/config.py and pipeline/files.py are
# foundations every stage shares).
STAGE_ORDER = ("engine", "catalog", "planning", "execution", "views", "flows")


def stage_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] == "flows":
        return STAGE_ORDER.index("flows")
    if parts[0] == "pipeline" and len(parts) > 1 and parts[1] in STAGE_ORDER:
        return STAGE_ORDER.index(parts[1])
    return None


def upward_imports(edges: dict[str, set[str]]) -> set[tuple[str, str]]:
    found = set()
    for module, targets in edges.items():
        here = stage_of(module)
        for target in targets:
            there = stage_of(target)
            if here is not None and there is not None and there > here:
                found.add((module, target))
    return found


def test_no_import_runs_back_up_the_stages():
    assert upward_imports(graph()) == set()


def test_the_stage_check_finds_an_upward_import():
    edges = {"pipeline.catalog.x": {"pipeline.views.y", "pipeline.engine.z", "pipeline.config"}}
    assert upward_imports(edges) == {("pipeline.catalog.x", "pipeline.views.y")}
    assert upward_imports({"flows.cli": {"pipeline.views.query"}}) == set()


def test_the_parser_and_the_config_never_import_torch():
    code = "import flows.cli; flows.cli.build_parser(); import sys; assert 'torch' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_layer_names_are_torch_free():
    assert third_party(ROOT / "pipeline" / "engine" / "layers.py") <= {"__future__"}


def test_the_catalog_readers_never_import_torch():
    # designs query, curate, similar and the review desk read embeddings without the network
    modules = "pipeline.catalog.sql, pipeline.catalog.embeddings, pipeline.views.similar, pipeline.views.review"
    code = f"import {modules}; import sys; assert 'torch' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
