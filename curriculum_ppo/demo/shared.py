"""One read-only copy of a demo per machine, shared by every env process.

A long demo is tens of MB in memory (a 53,000-frame demo: ~77 MB of emulator
states and ~7 MB of RAM rows), and every env worker used to hold its own copy.
Here the parent process unpacks the demo once into a *cache directory* of plain
``.npy`` files, named after the demo file's SHA-256, and every process maps
those files read-only (``np.load(mmap_mode="r")``). The pages live once in the
operating system's page cache, so N processes on a machine cost one copy, and
torchrun ranks on the same machine share it too. Nothing is decompressed per
process, so starting an env costs a few file maps instead of a full HDF5 read.

The cache is built from a demo that :func:`~curriculum_ppo.demo.store.load_demo`
validated, written to a temporary directory and renamed into place, so a
reader never sees half of it; two processes building it at once both succeed
and one rename wins. A cache directory that is missing or damaged is rebuilt.

Where: ``$CURRICULUM_PPO_DEMO_CACHE`` if set, else ``<tmp>/curriculum_ppo-demo-cache``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from curriculum_ppo.demo.store import Demo, load_demo
from curriculum_ppo.errors import UserError

CACHE_ENV = "CURRICULUM_PPO_DEMO_CACHE"
LAYOUT_VERSION = 1
ARRAYS = ("actions", "rewards", "lives", "ram", "state_frames", "state_lengths", "states")


def cache_root() -> Path:
    root = os.environ.get(CACHE_ENV)
    return Path(root) if root else Path(tempfile.gettempdir()) / "curriculum_ppo-demo-cache"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class PackedStates(Sequence):
    """``states[k]`` as ``bytes``, read from one zero-padded ``[K, L]`` uint8 array (a memory map)."""

    def __init__(self, packed: np.ndarray, lengths: np.ndarray) -> None:
        self._packed, self._lengths = packed, lengths

    def __len__(self) -> int:
        return int(self._lengths.shape[0])

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        return self._packed[k, : int(self._lengths[k])].tobytes()


def _write_cache(demo: Demo, directory: Path, sha256: str) -> None:
    lengths = np.array([len(s) for s in demo.states], dtype=np.int32)
    packed = np.zeros((len(demo.states), int(lengths.max())), dtype=np.uint8)
    for i, s in enumerate(demo.states):
        packed[i, : len(s)] = np.frombuffer(s, dtype=np.uint8)
    arrays = {"actions": demo.actions, "rewards": demo.rewards, "lives": demo.lives, "ram": demo.ram,
              "state_frames": demo.state_frames, "state_lengths": lengths, "states": packed}
    for name in ARRAYS:
        np.save(directory / f"{name}.npy", np.ascontiguousarray(arrays[name]), allow_pickle=False)
    meta = {"layout": LAYOUT_VERSION, "sha256": sha256, "game": demo.game, "action_set": list(demo.action_set),
            "attrs": demo.attrs, "frames": len(demo)}
    (directory / "meta.json").write_text(json.dumps(meta))


def _open_cache(directory: Path, sha256: str, source: Path) -> Demo | None:
    """The cached demo, or ``None`` if the directory is missing, of another layout, or damaged."""
    try:
        meta = json.loads((directory / "meta.json").read_text())
        if meta.get("layout") != LAYOUT_VERSION or meta.get("sha256") != sha256:
            return None
        a = {name: np.load(directory / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in ARRAYS}
    except (OSError, ValueError, json.JSONDecodeError):
        return None
    n = int(meta["frames"])
    if (a["actions"].shape != (n,) or a["ram"].shape != (n + 1, 128) or a["lives"].shape != (n + 1,)
            or a["states"].shape[0] != a["state_lengths"].shape[0] or a["state_frames"].shape != a["state_lengths"].shape):
        return None
    return Demo(game=meta["game"], action_set=list(meta["action_set"]), actions=a["actions"], rewards=a["rewards"],
                lives=a["lives"], ram=a["ram"], state_frames=a["state_frames"],
                states=PackedStates(a["states"], a["state_lengths"]), attrs=meta["attrs"], path=source)


def shared_demo_cache(path: str | os.PathLike) -> Path:
    """Make sure the machine's cache holds ``path``'s demo (validating it on the way); returns the cache directory.

    Call this once in the parent process, before starting env workers: it reads and validates the HDF5
    file (every problem is a one-line :class:`UserError`), and builds the cache if it is not there yet.
    """
    path = Path(path)
    if not path.is_file():
        load_demo(path)  # raises the usual one-line error (missing, a directory, ...)
    sha256 = file_sha256(path)
    directory = cache_root() / sha256
    if _open_cache(directory, sha256, path) is not None:
        return directory
    demo = load_demo(path)
    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{sha256[:12]}-", dir=root))
        try:
            _write_cache(demo, tmp, sha256)
            if directory.exists():  # damaged or of an older layout: replace it
                shutil.rmtree(directory, ignore_errors=True)
            try:
                tmp.rename(directory)
            except OSError:
                if _open_cache(directory, sha256, path) is None:  # not another process's complete copy
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        raise UserError(f"cannot write the shared demo cache under {root} ({exc.strerror or exc}); "
                        f"set {CACHE_ENV} to a writable directory") from None
    return directory


_OPENED: dict[tuple, Demo] = {}
"""This process's open shared demos by (path, size, mtime): the envs of one worker share one mapping,
and the file is hashed once per process, not once per env."""


def open_shared_demo(path: str | os.PathLike, *, check_rom: bool = True) -> Demo:
    """The demo of ``path`` with its arrays memory-mapped from the machine's cache (built if needed).

    The arrays are read-only views: every process that opens the same file shares their pages. The
    returned :class:`Demo` may be shared by several envs of this process; treat it as read-only.
    """
    path = Path(path)
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, check_rom, str(cache_root()))
    except OSError:
        key = None  # missing or unreadable: shared_demo_cache gives the one-line error
    if key is not None and key in _OPENED:
        return _OPENED[key]
    directory = shared_demo_cache(path)
    demo = _open_cache(directory, directory.name, path)
    if demo is None:
        raise UserError(f"the shared demo cache {directory} is unreadable; delete it and try again")
    if check_rom:
        demo.check_rom()
    if key is not None:
        _OPENED[key] = demo
    return demo
