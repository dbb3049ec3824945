"""One training per run directory: an exclusive ``flock`` on ``RUN_DIR/train.lock``.

Why: two trainings writing one run directory interleave ``metrics.jsonl`` and
overwrite each other's checkpoints, and both report success. The trainer takes
this lock before it writes anything in the directory and holds it until the
run has written its last file. ``flock`` locks belong to the open file, so the
kernel drops the lock whenever the process ends, ``kill -9`` included: a lock
file left behind never blocks a later run, and there is nothing to clean up.
The file itself only says who holds the lock (PID and host), for the message
a second training gets. Commands that only read a run (``evaluate``,
``inspect``, ``plot``) do not take the lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from curriculum_ppo.errors import UserError

LOCK_NAME = "train.lock"


def _holder_text(holder: dict | None) -> str:
    """``pid 123`` (plus ``on HOST`` when the holder runs on another machine sharing the directory)."""
    if not holder or not isinstance(holder.get("pid"), int):
        return "pid unknown"
    host = holder.get("host")
    elsewhere = f" on {host}" if isinstance(host, str) and host != socket.gethostname() else ""
    return f"pid {holder['pid']}{elsewhere}"


def read_holder(path: str | os.PathLike, wait: float = 2.0) -> dict | None:
    """The ``{"pid", "host"}`` a lock holder wrote into ``path`` (None if unreadable).

    A holder writes its PID right after it took the lock, so a reader that lost the race by
    microseconds may find the file still empty: it retries for up to ``wait`` seconds.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            holder = json.loads(Path(path).read_text())
            if isinstance(holder, dict):
                return holder
        except (OSError, ValueError):
            pass
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


class RunLock:
    """The exclusive lock of one run directory, held by this process from :meth:`acquire` to :meth:`release`."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        """Take the lock without waiting; a held one raises a one-line :class:`UserError` naming the holder."""
        if self._fd is not None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise UserError(f"cannot create the lock file {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _holder_text(read_holder(self.path))
            raise UserError(f"{self.run_dir} is in use by another training ({holder}); wait for it to end or stop "
                            "it, or choose another --run-dir") from None
        except OSError as exc:  # a filesystem without locks: refuse rather than run unguarded
            os.close(fd)
            raise UserError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n").encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise UserError(f"cannot write the lock file {self.path}: {exc.strerror or exc}") from None
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays: removing it would let two processes lock two different files)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor of the open file releases its flock

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:
            pass
