"""Writing a command's --output file (`designs query -o`, `designs gallery -o`).

Through a temporary file in the same folder, renamed into place, so a failed
write leaves no half file; the file gets the usual umask permissions (mkstemp
makes it 0600). Each refusal is raised as the caller's `error` type.
"""

from __future__ import annotations

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
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, path)
    except OSError as err:
        Path(temp).unlink(missing_ok=True)
        raise error(f"--output {str(path)!r}: cannot write there: {err}") from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
