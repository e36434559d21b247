"""Design ids in bulk: `DesignIds` (the ok ids planning skips, without a Python object per
id) and `id_ranges` (the few id ranges a merge names so delta-rs reads only the files they meet)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class DesignIds:
    """A sorted array of design ids as fixed-width bytes, tested with a binary search.
    Design ids are 32 hex digits; other lengths (hand-made rows) widen the array."""

    def __init__(self, ids: np.ndarray):
        self._ids = np.sort(ids)

    @classmethod
    def from_owned(cls, ids: np.ndarray) -> DesignIds:
        """From an array no one else holds: sorted in place, without a copy."""
        self = cls.__new__(cls)
        ids.sort()
        self._ids = ids
        return self

    @property
    def ids(self) -> np.ndarray:
        return self._ids

    @classmethod
    def from_arrow(cls, column: pa.ChunkedArray, sort: bool = True) -> DesignIds:
        column = column.cast(pa.string())  # delta-rs reads string_view
        if len(column) == 0:
            return cls(np.array([], dtype="S32"))
        width = max(1, pc.max(pc.binary_length(column)).as_py())
        parts = []
        for chunk in column.chunks:
            if len(chunk) == 0:
                continue
            if chunk.null_count == 0 and width == 32 and pc.min(pc.binary_length(chunk)).as_py() == 32:
                # Equal lengths: the data buffer is the ids back to back, read without a copy per id.
                offsets = np.frombuffer(
                    chunk.buffers()[1], dtype=np.int32, count=len(chunk) + 1, offset=chunk.offset * 4
                )
                data = np.frombuffer(chunk.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
                parts.append(data.view("S32"))
            else:
                parts.append(np.array([v or "" for v in chunk.to_pylist()], dtype=f"S{width}"))
        ids = np.concatenate(parts).astype(f"S{width}") if parts else np.array([], dtype="S32")
        return cls.from_owned(ids) if sort else cls.__unsorted(ids)

    @classmethod
    def __unsorted(cls, ids: np.ndarray) -> DesignIds:
        self = cls.__new__(cls)
        self._ids = ids
        return self

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, design_id: object) -> bool:
        if not isinstance(design_id, str) or not len(self._ids):
            return False
        key = design_id.encode()
        if len(key) > self._ids.dtype.itemsize:
            return False
        i = int(np.searchsorted(self._ids, key))
        return i < len(self._ids) and self._ids[i] == key

    def __iter__(self):
        return (v.decode() for v in self._ids)

    @property
    def nbytes(self) -> int:
        return int(self._ids.nbytes)


def id_ranges(ids: list[str], limit: int) -> list[tuple[str, str]]:
    """The ids as at most `limit` inclusive (first, last) ranges that cover them all, split
    at the widest gaps between neighbours. Gaps are measured on hex ids as numbers; other
    ids (hand-made rows) make one range."""
    ordered = sorted(set(ids))
    if not ordered:
        return []
    try:
        values = [int(i, 16) for i in ordered] if len({len(i) for i in ordered}) == 1 else None
    except ValueError:
        values = None
    if values is None or limit < 2 or len(ordered) == 1:
        return [(ordered[0], ordered[-1])]
    gaps = sorted(range(1, len(values)), key=lambda i: values[i] - values[i - 1], reverse=True)[: limit - 1]
    starts = [0, *sorted(gaps)]
    ends = [*(i - 1 for i in sorted(gaps)), len(ordered) - 1]
    return [(ordered[a], ordered[b]) for a, b in zip(starts, ends, strict=True)]
