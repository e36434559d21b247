"""The vacuum of the design catalog and the tables beside it (embeddings, curation, reviews): it
deletes only files the table's log once named (or a killed compaction recorded), inside the
table's own folder, never through a link.

delta-rs' vacuum (its full mode, which `maintain` used) lists the table's folder following
symbolic links and deletes every old file the latest version does not read: a link inside
OUT/designs/ to another folder made it delete that folder's files. This vacuum never lists
a folder to decide what to delete. It replays the log (every JSON entry, and a checkpoint
where entries are missing) for the paths that add and remove actions name, and deletes a
path only when
  - the last action naming it is a remove at or before `now - retention` (no version
    readable within the retention reads it) and the latest version does not read it; or
  - no log entry names it and a compaction killed before its log entry recorded it
    (pipeline/catalog/compaction.py, INTENT_DIR) at or before that time;
and only when every folder from the table's folder down to it is a real folder and the file
a regular file: each folder is opened with O_NOFOLLOW relative to the one above, and the
file unlinked by name in the last, so a link put in place meanwhile is not followed either.
Everything else is left alone and counted for the report: links (nothing behind them is
read or deleted) and files no log entry or record names (a merge or re-sort killed before
its commit, anything put there by hand).

Files removed longer ago than the log keeps its entries (delta.logRetentionDuration, 30
days) and dropped from the checkpoints are no longer named anywhere: a catalog maintained
at least once within that time (a run's end does it) loses none of them to this.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pyarrow.parquet as pq
from deltalake.exceptions import CommitFailedError

from pipeline.catalog.compaction import INTENT_DIR, INTENT_SUFFIX, WRITTEN_NAME, CommitInfo, write_log_entry
from pipeline.catalog.designs import LOG_DIR, CatalogFault

_COMMIT = re.compile(r"(\d{20})\.json")
# Classic, multi-part (part.parts) and v2 (uuid) checkpoints.
_CHECKPOINT = re.compile(r"(\d{20})\.checkpoint(?:\.\d{10}\.\d{10}|\.[0-9a-fA-F-]{36})?\.(?:parquet|json)")
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_LOG_ATTEMPTS = 100  # versions a VACUUM log entry tries (it conflicts with nothing; others may take a version first)
_INTENT_BYTES = 64 * 2**20  # a record names a compaction's files: far less than this


class LinkRefused(ValueError):
    """A link where the table's own folders or files are; maintenance follows none."""


@dataclass(frozen=True)
class VacuumResult:
    files: int  # files removed (or, for a dry run, that would be)
    bytes: int
    links: int  # symbolic links in the table's folder, left alone with everything behind them
    unnamed: int  # files that no log entry and no compaction record names, left alone


def refuse_links(table_path: Path, partition_columns: Iterable[str] = (), data_paths: Iterable[str] = ()) -> None:
    """LinkRefused when the table's folder, its log, the compaction records' folder, a
    partition folder, or a folder or file on the way to a data file the latest version reads
    is a symbolic link: compaction would read and write, and the vacuum judge, through it."""
    if table_path.is_symlink():
        raise _refused(
            table_path,
            table_path,
            f"; to keep the catalog on another disk, make OUT itself the link (links above OUT/{table_path.name} "
            "are followed)",
        )
    for name in (LOG_DIR, INTENT_DIR):
        if (table_path / name).is_symlink():
            raise _refused(table_path / name, table_path)
    prefixes = tuple(f"{column}=" for column in partition_columns)
    if prefixes:
        with os.scandir(table_path) as entries:
            for entry in entries:
                if entry.name.startswith(prefixes) and entry.is_symlink():
                    raise _refused(Path(entry.path), table_path)
    checked: set[str] = set()
    for path in data_paths:
        for variant in dict.fromkeys((path, unquote(path))):
            parts = _parts(variant)
            for end in range(1, len(parts or ()) + 1):
                prefix = "/".join(parts[:end])
                if prefix not in checked:
                    checked.add(prefix)
                    if (table_path / prefix).is_symlink():
                        raise _refused(table_path / prefix, table_path)


def _refused(link: Path, table_path: Path, fix: str = "") -> LinkRefused:
    try:
        target = os.readlink(link)
    except OSError:
        target = "?"
    return LinkRefused(
        f"{str(link)!r} is a symbolic link (to {target!r}): maintenance rewrites and deletes files only inside the "
        f"table's own folder {str(table_path)!r} and follows no link in it; put the folder or file itself "
        f"in its place, or remove the link{fix}"
    )


def vacuum(
    table_path: Path,
    active: Iterable[str],
    retention_hours: int,
    dry_run: bool,
    note: dict[str, str],
    minimum_hours: float,
    enforce_retention: bool = True,
    now_ms: int | None = None,
) -> VacuumResult:
    """Delete the files no version of the last `retention_hours` reads that the log named, and
    a killed compaction's files (see the module's doc); `active`: the paths the latest version
    reads, as delta-rs lists them, never deleted whatever the replay says. A run that deletes
    anything brackets it with VACUUM START and VACUUM END log entries, as delta-rs does."""
    log_dir = table_path / LOG_DIR
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    cutoff = now_ms - retention_hours * 3_600_000
    commits, checkpoints = _listing(log_dir)
    named = _replay(commits, checkpoints)
    keep = {variant for path in active for variant in (path, unquote(path))}
    expired = [path for path, removed in named.items() if removed is not None and removed <= cutoff]
    targets = [variant for path in expired for variant in dict.fromkeys((path, unquote(path))) if variant not in keep]
    intents = _intents(table_path)
    known = set(named) | {unquote(path) for path in named}
    for _, written_ms, paths in intents:
        if written_ms <= cutoff:
            targets += [path for path in paths if path not in known and path not in keep]
    links, unnamed = _scan(table_path, known | {path for _, _, paths in intents for path in paths})

    with _Root(table_path) as root:
        sized = ((parts, root.size(parts)) for parts in map(_parts, dict.fromkeys(targets)) if parts)
        plan = [(parts, size) for parts, size in sized if size is not None]
        freed = sum(size for _, size in plan)
        removed = 0
        if plan and not dry_run:
            parameters = {
                "retentionCheckEnabled": str(enforce_retention).lower(),
                "specifiedRetentionMillis": str(retention_hours * 3_600_000),
                "defaultRetentionMillis": str(int(minimum_hours * 3_600_000)),
            }
            metrics = {"numFilesToDelete": len(plan), "sizeOfDataToDelete": freed}
            _log_entry(table_path, max(commits, default=-1), "VACUUM START", parameters, metrics, note)
            freed = 0
            for parts, size in plan:
                if root.unlink(parts):
                    removed, freed = removed + 1, freed + size
            metrics = {"numDeletedFiles": removed, "numVacuumedDirectories": 0}
            _log_entry(table_path, max(commits, default=-1), "VACUUM END", {"status": "COMPLETED"}, metrics, note)
            # An expired record whose files are all gone or in the log has done its work.
            for record, written_ms, paths in intents:
                if written_ms > cutoff:
                    continue
                if all(path in known or root.size(_parts(path) or []) is None for path in paths):
                    root.unlink([INTENT_DIR, record])
    return VacuumResult(files=removed if not dry_run else len(plan), bytes=freed, links=links, unnamed=unnamed)


def _listing(log_dir: Path) -> tuple[dict[int, Path], dict[int, list[Path]]]:
    """The log's JSON entries and checkpoint files, by version."""
    commits: dict[int, Path] = {}
    checkpoints: dict[int, list[Path]] = {}
    with os.scandir(log_dir) as entries:
        for entry in entries:
            if match := _COMMIT.fullmatch(entry.name):
                commits[int(match.group(1))] = Path(entry.path)
            elif match := _CHECKPOINT.fullmatch(entry.name):
                checkpoints.setdefault(int(match.group(1)), []).append(Path(entry.path))
    return commits, checkpoints


def _replay(commits: dict[int, Path], checkpoints: dict[int, list[Path]]) -> dict[str, int | None]:
    """Every path an add or remove action names: None where the last version replayed reads
    it, else when it stopped being read (ms since the epoch).

    Every JSON entry is replayed in order, and a checkpoint where entries before it are
    missing (removed by the log's cleanup) for the adds and tombstones it holds. A path
    whose remove action is in no file left stays read as far as this knows: kept."""
    state: dict[str, int | None] = {}
    through = -1  # every version up to this one is in the state
    for version in sorted(set(commits) | set(checkpoints)):
        if version in commits:
            _apply(state, _commit_actions(commits[version]))
            if version == through + 1:
                through = version
        if version in checkpoints and version > through:
            for path in checkpoints[version]:
                _apply(state, _checkpoint_actions(path, _mtime_ms(path)))
            through = version
    return state


def _apply(state: dict[str, int | None], actions: Iterator[tuple[str, str, int]]) -> None:
    for kind, path, when in actions:
        if kind == "add":
            state[path] = None
        else:
            before = state.get(path)
            state[path] = when if before is None else max(before, when)


def _commit_actions(path: Path) -> Iterator[tuple[str, str, int]]:
    """(add or remove, path, when) of a JSON log entry; a remove's time is its
    deletionTimestamp or the commit's, whichever is later."""
    actions: list[tuple[str, str, int | None]] = []
    committed = None
    try:
        with open(path, "rb") as lines:
            for line in lines:
                if not line.strip():
                    continue
                action = json.loads(line)
                if "commitInfo" in action:
                    committed = _int(action["commitInfo"].get("timestamp"))
                for kind in ("add", "remove"):
                    if isinstance(action.get(kind), dict) and isinstance(action[kind].get("path"), str):
                        actions.append((kind, action[kind]["path"], _int(action[kind].get("deletionTimestamp"))))
    except (ValueError, AttributeError) as err:
        raise CatalogFault(
            f"cannot vacuum the table: log entry {str(path)!r} is unreadable ({err}); restore it from a "
            "backup, then run again"
        ) from None
    committed = committed if committed is not None else _mtime_ms(path)
    for kind, name, deleted in actions:
        yield kind, name, max(deleted or 0, committed)


def _checkpoint_actions(path: Path, written_ms: int) -> Iterator[tuple[str, str, int]]:
    """(add or remove, path, when) of a checkpoint file; a tombstone without a
    deletionTimestamp counts as removed when the checkpoint was written."""
    if path.suffix == ".json":
        yield from _commit_actions(path)
        return
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        columns = [f"{kind}.path" for kind in ("add", "remove") if kind in schema.names]
        tombstone_times = "remove" in schema.names and "deletionTimestamp" in {
            field.name for field in schema.field("remove").type
        }
        if tombstone_times:
            columns.append("remove.deletionTimestamp")
        for batch in parquet.iter_batches(columns=columns, batch_size=8192):
            for row in batch.to_pylist():
                if row.get("add"):
                    yield "add", row["add"]["path"], written_ms
                if row.get("remove"):
                    deleted = row["remove"].get("deletionTimestamp")
                    yield "remove", row["remove"]["path"], deleted if deleted is not None else written_ms
    except (ValueError, KeyError, TypeError) as err:  # pyarrow's errors are ValueErrors; OSError goes up
        raise CatalogFault(
            f"cannot vacuum the table: checkpoint {str(path)!r} is unreadable ({err}); remove it and "
            "write another (`designs maintain` does), then run again"
        ) from None


def _intents(table_path: Path) -> list[tuple[str, int, list[str]]]:
    """(file name, when last written in ms, the paths it names) of each compaction record."""
    found = []
    try:
        with os.scandir(table_path / INTENT_DIR) as entries:
            records = [e for e in entries if e.name.endswith(INTENT_SUFFIX) and e.is_file(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in records:
        try:
            fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:  # its compaction has just ended
            continue
        try:
            written = int(os.fstat(fd).st_mtime * 1000)
            text = os.read(fd, _INTENT_BYTES).decode("utf-8", "replace")
        finally:
            os.close(fd)
        found.append((entry.name, written, [line for line in text.splitlines() if WRITTEN_NAME.fullmatch(line)]))
    return found


def _scan(table_path: Path, known: set[str]) -> tuple[int, int]:
    """(symbolic links, files that `known` lacks) in the table's folder, following no link
    and skipping the top-level folders whose names start with "_" or "." (the log, the
    compaction records)."""
    links = unnamed = 0
    folders = [("", str(table_path))]
    while folders:
        prefix, folder = folders.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_symlink():
                    links += 1
                elif not prefix and entry.name.startswith(("_", ".")):
                    continue
                elif entry.is_dir(follow_symlinks=False):
                    folders.append((f"{prefix}{entry.name}/", entry.path))
                elif f"{prefix}{entry.name}" not in known:
                    unnamed += 1
    return links, unnamed


def _parts(path: str) -> list[str] | None:
    """The folders and name of a path relative to the table's folder; None for anything else
    (absolute, a URL, "..", a hidden top-level folder such as the log)."""
    if not path or "\x00" in path or path.startswith("/") or "\\" in path or re.match(r"[A-Za-z][\w+.-]*:", path):
        return None
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts) or parts[0].startswith(("_", ".")):
        return None
    return parts


class _Root:
    """The table's folder, opened once; files under it reached folder by folder, never through a link."""

    def __init__(self, table_path: Path):
        self.table_path = table_path

    def __enter__(self) -> _Root:
        self.fd = os.open(self.table_path, _DIR_FLAGS)  # ELOOP when the folder itself is a link
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)

    def _folder(self, parts: list[str]) -> int | None:
        """A descriptor of the folder holding parts[-1] (the caller closes it unless it is
        self.fd); None when a folder on the way is missing, not a folder, or a link."""
        fd = self.fd
        try:
            for part in parts[:-1]:
                opened = os.open(part, _DIR_FLAGS, dir_fd=fd)
                if fd != self.fd:
                    os.close(fd)
                fd = opened
        except OSError as err:
            if fd != self.fd:
                os.close(fd)
            if err.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return None
            raise
        return fd

    def size(self, parts: list[str]) -> int | None:
        """The file's bytes; None unless it is a regular file reached through real folders."""
        if not parts:
            return None
        fd = self._folder(parts)
        if fd is None:
            return None
        try:
            info = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        finally:
            if fd != self.fd:
                os.close(fd)
        return info.st_size if stat.S_ISREG(info.st_mode) else None

    def unlink(self, parts: list[str]) -> bool:
        """Remove the file if it is still a regular file reached through real folders."""
        fd = self._folder(parts)
        if fd is None:
            return False
        try:
            info = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode):
                return False
            os.unlink(parts[-1], dir_fd=fd)  # removes the entry itself, never what a link names
            return True
        except FileNotFoundError:  # removed meanwhile (another maintenance)
            return False
        finally:
            if fd != self.fd:
                os.close(fd)


def _log_entry(
    table_path: Path, latest: int, operation: str, parameters: dict, metrics: dict, note: dict[str, str]
) -> None:
    """A log entry of commitInfo alone, at the first free version after `latest`."""
    info = CommitInfo(int(time.time() * 1000), operation, parameters, metrics, note)
    version = latest + 1
    for _ in range(_LOG_ATTEMPTS):
        try:
            write_log_entry(table_path, version, [info])
            return
        except CommitFailedError:
            version += 1
    raise CatalogFault(
        f"cannot vacuum the table at {str(table_path)!r}: {_LOG_ATTEMPTS} versions after {latest} were taken "
        "while it wrote its log entry; run `designs maintain` again when fewer runs write"
    )


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _mtime_ms(path: Path) -> int:
    return int(path.stat().st_mtime * 1000)
