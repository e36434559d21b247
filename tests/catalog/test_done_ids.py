"""The ids planning skips, read column-wise into a sorted byte array (DesignIds):
the same answers as a set of str, 32 bytes an id, from delta-rs's string_view columns."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pytest

from pipeline.catalog.ids import DesignIds


def ids(n: int, seed: int = 0) -> list[str]:
    return [hashlib.sha256(f"{seed}-{i}".encode()).hexdigest()[:32] for i in range(n)]


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string(), pa.string_view()])
def test_membership_is_that_of_a_set(kind):
    present, absent = ids(5000), ids(500, seed=1)
    column = pa.chunked_array([pa.array(present[:1234], kind), pa.array(present[1234:], kind)])
    done = DesignIds.from_arrow(column)
    assert len(done) == 5000 and done.nbytes == 5000 * 32
    assert all(i in done for i in present)
    assert not any(i in done for i in absent)
    assert set(done) == set(present)
    assert 42 not in done and "" not in done and present[0] + "x" not in done


def test_sliced_chunks_are_read_from_their_own_offset():
    values = pa.array(ids(100))
    done = DesignIds.from_arrow(pa.chunked_array([values.slice(10, 30)]))
    assert set(done) == set(ids(100)[10:40])


def test_ids_of_other_lengths_and_an_empty_column():
    done = DesignIds.from_arrow(pa.chunked_array([pa.array(["d1", "d3", "design-9"])]))
    assert "d1" in done and "design-9" in done and "d2" not in done and "d" not in done
    empty = DesignIds.from_arrow(pa.chunked_array([], pa.string()))
    assert len(empty) == 0 and "d1" not in empty


def test_a_million_ids_take_32_bytes_each():
    done = DesignIds.from_arrow(pa.chunked_array([pa.array(ids(1000) * 1000)]))
    assert len(done) == 1_000_000 and done.nbytes == 32 * 1_000_000
    assert ids(1000)[7] in done and ids(1, seed=9)[0] not in done
