"""`designs similar OUT DESIGN_ID [-k N] [--version N]`: the nearest ok designs by embedding,
nearest first with their cosine distances; an unknown id or a design without an embedding is
one line and exit 2."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from flows.cli import main
from flows.options import EXIT_OK, EXIT_REFUSED
from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.embeddings import write_embeddings
from pipeline.engine.embedding import EMBEDDING_METHOD


def hex_ids(n: int, seed: int) -> list[str]:
    return sorted(hashlib.sha256(f"{seed}-{i}".encode()).hexdigest()[:32] for i in range(n))


def row(design_id: str, status: str = "ok") -> dict:
    return {
        "design_id": design_id,
        "pairing_key": f"k-{design_id}",
        "run_id": "r1",
        "created_at": datetime.now(UTC),
        "status": status,
        "error": None if status == "ok" else "a fault",
        "content_id": "c",
        "style_id": "s",
    }


IDS = hex_ids(8, seed=5)
# Design i at angle ANGLES[i] from design 0 in one plane: cosine distance 1 - cos(angle).
ANGLES = [0.0, 0.3, 0.1, 0.6, 1.0, 0.2, 1.4, 0.05]


def unit(angle: float) -> np.ndarray:
    v = np.zeros(256)
    v[0], v[1] = math.cos(angle), math.sin(angle)
    return v


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """Eight designs: 0..5 ok and embedded, 6 failed (with an embedding), 7 ok without one."""
    out = tmp_path / "out"
    catalog = DesignCatalog(out)
    catalog.commit([row(d, status="failed" if i == 6 else "ok") for i, d in enumerate(IDS)], "r1")
    embedded = list(range(7))
    write_embeddings(
        out, [IDS[i] for i in embedded], np.stack([unit(ANGLES[i]) for i in embedded]), EMBEDDING_METHOD, "vgg16"
    )
    return out


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["similar", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_nearest_designs_come_nearest_first_with_their_distances(out, capsys):
    code, text, err = run(capsys, str(out), IDS[0], "-k", "3", "--format", "json")
    assert code == EXIT_OK, err
    rows = json.loads(text)
    assert [r["design_id"] for r in rows] == [IDS[2], IDS[5], IDS[1]]  # 0.1, 0.2, 0.3 rad
    assert [r["rank"] for r in rows] == [1, 2, 3]
    for r, angle in zip(rows, (0.1, 0.2, 0.3)):
        assert r["distance"] == pytest.approx(1 - math.cos(angle), abs=2e-3)
    assert set(rows[0]) == {"rank", "design_id", "distance", "content_id", "style_id", "output_uri"}


def test_neither_itself_nor_a_failed_design_nor_one_without_embedding_is_listed(out, capsys):
    code, text, _ = run(capsys, str(out), IDS[0], "-k", "10", "--format", "csv")
    assert code == EXIT_OK
    listed = [r["design_id"] for r in csv.DictReader(io.StringIO(text))]
    assert listed == [IDS[2], IDS[5], IDS[1], IDS[3], IDS[4]]


def test_the_default_is_a_table_on_the_terminal(out, capsys):
    code, text, _ = run(capsys, str(out), IDS[3])
    assert code == EXIT_OK
    assert text.splitlines()[0].split() == ["rank", "design_id", "distance", "content_id", "style_id", "output_uri"]
    assert IDS[1] in text.splitlines()[1]  # 0.3 from 0.6


def test_version_n_lists_only_that_versions_designs(out, capsys):
    version = DesignCatalog(out).version()
    later = hex_ids(1, seed=99)[0]
    DesignCatalog(out).commit([row(later)], "r2")
    write_embeddings(out, [later], unit(0.01)[None], EMBEDDING_METHOD, "vgg16")
    _, now, _ = run(capsys, str(out), IDS[0], "-k", "1", "--format", "csv")
    _, then, _ = run(capsys, str(out), IDS[0], "-k", "1", "--format", "csv", "--version", str(version))
    assert later in now and later not in then and IDS[2] in then


def test_another_networks_embeddings_are_not_compared(out, capsys):
    other = hex_ids(1, seed=98)[0]
    DesignCatalog(out).commit([row(other)], "r2")
    write_embeddings(out, [other], unit(0.0)[None], EMBEDDING_METHOD, "vgg19")
    _, text, _ = run(capsys, str(out), IDS[0], "-k", "10", "--format", "csv")
    assert other not in text


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["nope"], "no ok design 'nope'"),
        ([IDS[6]], "its status there is failed"),
        ([IDS[7]], "has no embedding yet; run `designs curate"),
        ([IDS[0], "-k", "0"], "-k 0 is invalid"),
        ([IDS[0], "--format", "parquet"], "--format parquet needs --output FILE"),
    ],
)
def test_a_refusal_is_one_line_and_exit_2(out, capsys, args, says):
    code, text, err = run(capsys, str(out), *args)
    assert code == EXIT_REFUSED and text == ""
    assert len(err.strip().splitlines()) == 1 and says in err, err


def test_no_catalog_is_refused(tmp_path, capsys):
    code, _, err = run(capsys, str(tmp_path / "none"), "x")
    assert code == EXIT_REFUSED and "no design catalog" in err


def test_a_design_written_twice_is_listed_once(out, capsys):
    from deltalake import DeltaTable, write_deltalake

    from pipeline.catalog.embeddings import embeddings_path

    rows = DeltaTable(str(embeddings_path(out))).to_pyarrow_table()
    write_deltalake(str(embeddings_path(out)), rows, mode="append")  # two writers at once, at worst
    _, text, _ = run(capsys, str(out), IDS[0], "-k", "3", "--format", "csv")
    assert [r["design_id"] for r in csv.DictReader(io.StringIO(text))] == [IDS[2], IDS[5], IDS[1]]
