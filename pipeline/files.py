"""File helpers without torch, for every stage and the readers (verify, runs,
query, gallery) alike: SHA-256 of a file, atomic writes, and a command's
--output file (`designs query -o`, `designs gallery -o`).

Writes go through a temporary file in the same folder, renamed into place, so a
failed write leaves no half file. mkstemp makes that file 0600; it is given the
usual 0666 & ~umask before the rename, so every output (design PNGs, plots,
--output files) can be read by whoever the umask lets read OUT. Each refusal is
raised as the caller's `error` type.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def check_output(path: Path, error: type[Exception] = ValueError) -> None:
    """Refuse an output path whose folder is missing, or that is a folder."""
    if not path.parent.is_dir():
        raise error(f"--output {str(path)!r}: folder {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise error(f"--output {str(path)!r} is a folder")
    if table := _inside_table(path.parent):
        raise error(
            f"--output {str(path)!r} is inside the Delta table {str(table)!r}: a file there could corrupt it "
            "(its log, its data files); write the result elsewhere"
        )


def _inside_table(folder: Path) -> Path | None:
    """The Delta table (a folder holding `_delta_log`) that `folder`, links resolved, lies in, if any."""
    real = Path(os.path.realpath(folder))
    for candidate in (real, *real.parents):
        if candidate.name == "_delta_log":
            return candidate.parent
        if (candidate / "_delta_log").is_dir():
            return candidate
    return None


def write_output(path: Path, write: Callable[[str], None], error: type[Exception] = ValueError) -> None:
    """`write(temp_path)`, then rename the temporary file to `path`; an OSError becomes `error`."""
    check_output(path, error)
    try:
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise error(f"--output {str(path)!r}: cannot write there: {err}") from None
    os.close(handle)
    try:
        write(temp)
        os.chmod(temp, _umask_mode())
        os.replace(temp, path)
    except OSError as err:
        Path(temp).unlink(missing_ok=True)
        raise error(f"--output {str(path)!r}: cannot write there: {err}") from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask, read from /proc where there is one: setting it to read it back
    would change it, for an instant, for every other thread creating files."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:  # no /proc: not Linux
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _umask_mode() -> int:
    """The mode a file created with open() gets: what a temporary file is given before its rename."""
    return 0o666 & ~_umask()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes) -> str:
    """Write via a temporary file and rename, so a crash never leaves half a file. Returns SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), _umask_mode())  # mkstemp's 0600 would hide it from other users
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return hashlib.sha256(data).hexdigest()
