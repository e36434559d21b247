"""The tree shows the architecture (docs/ARCHITECTURE.md): stage packages under
pipeline/, no import cycle (lazy imports included), the engine on torch alone,
pipeline/ free of Prefect, benchmarks outside the product."""

from __future__ import annotations

import ast
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
