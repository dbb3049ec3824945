"""Write files so that a crash, Ctrl-C or full disk never leaves a half-written one.

Everything is written to a temporary file in the destination's directory and
renamed over the destination only after it was completely written and flushed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from curriculum_ppo.errors import UserError


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path; on success it is renamed to ``destination``.

    On any exception (including KeyboardInterrupt) the temporary file is
    removed and ``destination`` is left untouched. ``OSError`` while writing
    becomes a one-line :class:`UserError` naming the destination.
    """
    destination = Path(destination)
    directory = destination.parent if str(destination.parent) else Path(".")
    if not directory.is_dir():
        raise UserError(f"cannot write {destination}: directory {directory} does not exist")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=f".tmp{suffix}", dir=directory)
    except OSError as exc:
        raise UserError(f"cannot write {destination}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the result normal permissions
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, destination)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"could not write {destination}: {exc.strerror or exc}; nothing was written") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_destination(path: str | os.PathLike, flag: str) -> Path:
    """Fail *before* long work (recording, evaluating) when ``path`` cannot be written.

    ``flag`` names the option the path came from, e.g. ``--out``.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UserError(f"{flag} {path} is a directory; give a file name")
    if not parent.is_dir():
        raise UserError(f"cannot write {flag} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {flag} {path}: directory {parent} is not writable")
    return path


def write_bytes_atomic(destination: str | os.PathLike, data: bytes) -> None:
    with atomic_path(destination) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(destination: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(destination, text.encode())
