"""Reading and writing demo files (see :mod:`curriculum_ppo.demo.schema`).

:class:`Demo` holds a whole demo in memory (a 50,000-frame demo is ~40 MB of
states and RAM) so worker processes can restore any frame without touching the
file again. :class:`DemoBuilder` records one frame at a time from a live
emulator and supports truncation (the recorder's rewind).

All reading of demo files goes through :func:`read_demo_file`; nothing keeps an
HDF5 object open after it returns, so no read happens later, outside its checks.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import faulthandler
import io
import json
import math
import os
import select
import signal
import struct
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from curriculum_ppo import __version__
from curriculum_ppo.atomic import atomic_path
from curriculum_ppo.demo import schema
from curriculum_ppo.emulator import Emulator, EmulatorSettings, ale_version, resolve_game, rom_md5
from curriculum_ppo.errors import UserError


@dataclass
class Demo:
    """One demonstration in memory. ``len(demo)`` is the number of actions N."""

    game: str
    action_set: list[str]
    actions: np.ndarray  # uint8 [N]
    rewards: np.ndarray  # float32 [N]
    lives: np.ndarray  # uint8 [N+1]
    ram: np.ndarray  # uint8 [N+1, 128]
    state_frames: np.ndarray  # int64 [K]
    states: list[bytes]  # K serialized states
    attrs: dict = field(default_factory=dict)
    frames: np.ndarray | None = None  # uint8 [N+1, 210, 160, 3] or None
    path: Path | None = None
    frames_in_file: bool = False  # the file holds /frames (whether or not they were loaded)

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @property
    def total_return(self) -> float:
        return float(self.rewards.sum(dtype=np.float64))

    @property
    def cumulative_return(self) -> np.ndarray:
        """``c[t]`` = reward collected before frame t (length N+1, ``c[0] = 0``)."""
        return np.concatenate([[0.0], np.cumsum(self.rewards, dtype=np.float64)])

    @property
    def returns_to_go(self) -> np.ndarray:
        """``g[t]`` = reward the demo collects from frame t to its end (length N+1)."""
        c = self.cumulative_return
        return c[-1] - c

    def reward_events(self) -> list[tuple[int, float]]:
        """(frame, reward) of every nonzero reward; the reward is received on frame+1."""
        idx = np.flatnonzero(self.rewards)
        return [(int(t), float(self.rewards[t])) for t in idx]

    def life_losses(self) -> list[int]:
        """Frames t at which lives dropped (lives[t] < lives[t-1])."""
        return [int(t) for t in np.flatnonzero(np.diff(self.lives.astype(np.int16)) < 0) + 1]

    @property
    def settings(self) -> EmulatorSettings:
        return EmulatorSettings(self.game, self.attrs.get("mode"), self.attrs.get("difficulty"),
                                int(self.attrs.get("seed", 0)), 0.0)

    def make_emulator(self) -> Emulator:
        """A fresh emulator configured exactly like the one that recorded this demo."""
        self.check_rom()
        return Emulator(self.settings)

    def check_rom(self) -> None:
        expected = self.attrs.get("rom_md5")
        installed = rom_md5(self.game)
        if expected and expected != installed:
            name = self.path or "the demo"
            raise UserError(f"{name} was recorded on a {self.game} ROM with MD5 {expected}, "
                            f"but the installed ROM has MD5 {installed}; it cannot be replayed")

    def state_index(self, t: int) -> int:
        """Index of the last saved state at or before frame t."""
        return int(np.searchsorted(self.state_frames, t, side="right") - 1)

    def restore(self, emulator: Emulator, t: int) -> None:
        """Put ``emulator`` at frame t: restore the nearest saved state, replay the gap."""
        if not 0 <= t <= len(self):
            raise IndexError(f"frame {t} outside demo of {len(self)} frames")
        k = self.state_index(t)
        self.restore_saved(emulator, k)
        for a in self.actions[int(self.state_frames[k]):t]:
            emulator.step(int(a))

    def restore_saved(self, emulator: Emulator, k: int) -> None:
        """Restore saved state ``k`` (at frame ``state_frames[k]``); one that ALE refuses is a UserError."""
        try:
            emulator.restore_state(self.states[k])
        except UserError as exc:
            raise UserError(f"{self.path or 'the demo'}: saved state {k} (frame {int(self.state_frames[k])}): "
                            f"{exc}") from None


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(type(o))


def _write_attr(f: h5py.File, key: str, value) -> None:
    """Strings as fixed-length UTF-8 (kept in the object header, not in HDF5's unchecksummed global heap)."""
    if isinstance(value, str) or (isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value)):
        encoded = [value.encode()] if isinstance(value, str) else [v.encode() for v in value]
        dtype = h5py.string_dtype("utf-8", max(1, *map(len, encoded)))
        f.attrs.create(key, np.array(encoded[0] if isinstance(value, str) else encoded, dtype=dtype))
    else:
        f.attrs[key] = value


def save_demo(demo: Demo, path: str | os.PathLike, *, source: str | None = None, detail: dict | None = None) -> Path:
    """Write ``demo`` atomically: a temp file in the same directory, renamed when complete."""
    path = Path(path)
    n = len(demo)
    attrs = dict(demo.attrs)
    attrs.update({
        "format": schema.FORMAT_NAME,
        "schema_version": schema.SCHEMA_VERSION,
        "game": demo.game,
        "action_set": list(demo.action_set),
        "frameskip": 1,
        "repeat_action_probability": 0.0,
        "num_frames": n,
        "total_return": demo.total_return,
        "writer_version": __version__,
    })
    attrs.setdefault("rom_md5", rom_md5(demo.game))
    attrs.setdefault("ale_py_version", ale_version())
    attrs.setdefault("mode", 0)
    attrs.setdefault("difficulty", 0)
    attrs.setdefault("seed", 0)
    attrs.setdefault("state_interval", schema.DEFAULT_STATE_INTERVAL)
    attrs.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    if source is not None:
        attrs["source"] = source
    attrs.setdefault("source", "recorded")
    if detail is not None:
        attrs["source_detail"] = json.dumps(detail, default=_json_default)
    attrs.setdefault("source_detail", "{}")
    if attrs["source"] not in schema.SOURCES:
        raise ValueError(f"source must be one of {schema.SOURCES}")

    lengths = np.array([len(s) for s in demo.states], dtype=np.int32)
    packed = np.zeros((len(demo.states), int(lengths.max())), dtype=np.uint8)
    for i, s in enumerate(demo.states):
        packed[i, : len(s)] = np.frombuffer(s, dtype=np.uint8)

    # HDF5 is built in memory and written with plain Python I/O: when libhdf5 itself hits a
    # write error (disk full, EFBIG) it leaves the file half-closed and h5py can segfault.
    # Damage is detectable everywhere: every dataset carries Fletcher-32 checksums, the 1.10 file
    # format checksums its metadata, and strings live in the (checksummed) object header.
    buffer = io.BytesIO()
    checked = {"fletcher32": True}
    with atomic_path(path) as tmp:
        with h5py.File(buffer, "w", libver=("v110", "latest")) as f:
            for key, value in attrs.items():
                _write_attr(f, key, value)
            f.create_dataset("actions", data=demo.actions.astype(np.uint8), compression="gzip", **checked)
            f.create_dataset("rewards", data=demo.rewards.astype(np.float32), compression="gzip", **checked)
            f.create_dataset("lives", data=demo.lives.astype(np.uint8), compression="gzip", **checked)
            f.create_dataset("ram", data=demo.ram.astype(np.uint8), compression="gzip",
                             chunks=(min(n + 1, 4096), 128), **checked)
            f.create_dataset("states", data=packed, compression="gzip", compression_opts=6,
                             chunks=(min(len(packed), 16), packed.shape[1]), **checked)
            f.create_dataset("state_lengths", data=lengths, **checked)
            f.create_dataset("state_frames", data=demo.state_frames.astype(np.int64), **checked)
            if demo.frames is not None:
                f.create_dataset("frames", data=demo.frames, compression="gzip",
                                 chunks=(1,) + demo.frames.shape[1:], **checked)
        tmp.write_bytes(buffer.getbuffer())
    demo.path = path
    demo.attrs = attrs
    return path


# --- reading ------------------------------------------------------------------------------
# libhdf5 trusts the structures it parses. A damaged file makes it raise any of a dozen exception
# types (h5py's RuntimeError while iterating attributes among them), and some damage crashes the
# process outright (SIGSEGV inside an attribute read). So on Linux a forked child process does all
# the HDF5 parsing and streams plain arrays back over a pipe: whatever the file does to the child,
# the caller gets either the arrays or one line saying what is wrong with the file.

#: Deflate expands data at most ~1032 times, so no dataset can hold more than this multiple of the
#: bytes it stores; a file claiming more is refused before anything is allocated for it.
MAX_EXPANSION = 1100
_SLACK = 1 << 20
_ALLOWED_FILTERS = {h5py.h5z.FILTER_DEFLATE: "deflate", h5py.h5z.FILTER_SHUFFLE: "shuffle",
                    h5py.h5z.FILTER_FLETCHER32: "fletcher32"}
_BLOCK_BYTES = 16 << 20  # the child streams each dataset in blocks of about this size
STALL_SECONDS = 120.0  # a child that sends nothing for this long is stopped
_HEADER = struct.Struct("<cQ")


@dataclass
class DemoFileContents:
    """What the reader found in a demo file: its root attributes (plain Python values), the shape
    and element type of every dataset, and the arrays that were asked for."""

    attrs: dict
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    arrays: dict[str, np.ndarray]


class _Refused(Exception):
    """The reader's verdict on a file that is not a readable demo (``kind`` picks the wording)."""

    def __init__(self, kind: str, message: str = ""):
        super().__init__(message)
        self.kind, self.message = kind, message


def _refusal_message(path: Path, kind: str, message: str) -> str:
    if kind == "unreadable":
        return f"cannot read {path}: {message}"
    if kind == "not_hdf5":
        return f"{path} is not an HDF5 file (not a curriculum_ppo demo)"
    if kind == "schema":
        return f"{path}: {message}"
    return f"{path} is truncated or corrupt ({message})"


def _attr(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [_attr(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_attr(v) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f"a {type(value).__name__} value")


def _dataset_info(f: h5py.File) -> tuple[dict, dict]:
    """Shapes and types of the root's datasets, without reading them. Only plain datasets stored in
    this file are accepted for the names the schema uses: a link, a virtual dataset or external raw
    storage would make HDF5 read other files."""
    shapes, dtypes = {}, {}
    known = set(schema.DATASET_DTYPES)
    for name in f:
        if name not in known:
            continue
        if not isinstance(f.get(name, getlink=True), h5py.HardLink):
            raise _Refused("schema", f"/{name} is a link; demo datasets are stored in the file itself")
        ds = f[name]
        if not isinstance(ds, h5py.Dataset):
            raise _Refused("schema", f"/{name} is a group, not a dataset")
        plist = ds.id.get_create_plist()
        if ds.is_virtual or plist.get_external_count():
            raise _Refused("schema", f"/{name} takes its data from other files; demos never do")
        for i in range(plist.get_nfilters()):
            code = plist.get_filter(i)[0]
            if code not in _ALLOWED_FILTERS:
                raise _Refused("schema", f"/{name} uses HDF5 filter {code}; demos use only "
                                         f"{', '.join(_ALLOWED_FILTERS.values())}")
        shapes[name] = tuple(int(d) for d in ds.shape) if ds.shape is not None else ()
        dtypes[name] = ds.dtype.str
    return shapes, dtypes


def _stream(ds: h5py.Dataset, name: str, sink) -> None:
    shape = tuple(int(d) for d in ds.shape)
    itemsize = ds.dtype.itemsize
    nbytes = math.prod(shape) * itemsize
    stored = int(ds.id.get_storage_size())
    if nbytes > MAX_EXPANSION * stored + _SLACK:
        raise _Refused("corrupt", f"/{name} claims {nbytes:,} bytes but the file stores only {stored:,} bytes of it")
    sink.begin(name, ds.dtype.str, shape)
    if nbytes == 0:
        return
    rows = max(1, _BLOCK_BYTES // max(1, nbytes // shape[0]))
    for i in range(0, shape[0], rows):
        block = np.ascontiguousarray(ds[i:i + rows])
        sink.data(block.reshape(-1).view(np.uint8).data)


def _read_file(path: Path, names: tuple[str, ...], sink) -> None:
    """Parse ``path`` and hand everything to ``sink``; every failure becomes ``sink.error(kind, message)``."""
    try:
        try:
            if not h5py.is_hdf5(path):
                raise _Refused("not_hdf5")
        except OSError as exc:
            raise _Refused("unreadable", exc.strerror or str(exc)) from None
        with h5py.File(path, "r") as f:
            attrs = {}
            for key in f.attrs:
                if not isinstance(key, str):
                    raise _Refused("corrupt", f"an attribute name is not text: {key!r:.60}")
                try:
                    attrs[key] = _attr(f.attrs[key])
                except (TypeError, UnicodeDecodeError) as exc:
                    raise _Refused("corrupt", f"attribute '{key}' cannot be read as text or numbers: {exc}") from None
            schema.check_version(attrs)
            shapes, dtypes = _dataset_info(f)
            schema.validate(attrs, shapes, dtypes=dtypes)  # before any array is read
            sink.meta(attrs, shapes, dtypes)
            for name in names:
                if name in shapes:
                    _stream(f[name], name, sink)
        sink.end()
    except _Refused as exc:
        sink.error(exc.kind, exc.message)
    except schema.SchemaError as exc:
        sink.error("schema", str(exc))
    except Exception as exc:  # noqa: BLE001 - whatever h5py raises on a damaged file, the file is damaged
        text = " ".join(str(exc).split())
        sink.error("corrupt", f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__)


class _Collector:
    """Receives what the reader sends, checking it against what it announced, and builds the contents."""

    def __init__(self, path: Path, limit: int):
        self.path, self.limit = path, limit
        self.contents: DemoFileContents | None = None
        self.refusal: tuple[str, str] | None = None
        self.finished = False
        self._view: memoryview | None = None
        self._filled = 0

    def _broken(self, what: str):
        return UserError(f"{self.path} is truncated or corrupt (the reader sent {what})")

    def meta(self, attrs: dict, shapes: dict, dtypes: dict) -> None:
        self.contents = DemoFileContents(attrs, {k: tuple(v) for k, v in shapes.items()}, dict(dtypes), {})

    def begin(self, name: str, dtype: str, shape) -> None:
        c, shape = self.contents, tuple(shape)
        if (c is None or self._view is not None or name in c.arrays or c.shapes.get(name) != shape
                or c.dtypes.get(name) != dtype or np.dtype(dtype) != schema.DATASET_DTYPES.get(name)):
            raise self._broken(f"an unexpected array /{name}")
        dt = np.dtype(dtype)
        if math.prod(shape) * dt.itemsize > self.limit:
            raise self._broken(f"/{name} larger than the file could hold")
        array = np.empty(shape, dt)
        c.arrays[name] = array
        self._view, self._filled = array.reshape(-1).view(np.uint8).data, 0
        if not len(self._view):
            self._view = None

    def target(self, n: int) -> memoryview:
        """Where the next ``n`` bytes of the current array go."""
        if self._view is None or self._filled + n > len(self._view):
            raise self._broken("more data than it announced")
        out = self._view[self._filled:self._filled + n]
        self._filled += n
        if self._filled == len(self._view):
            self._view = None
        return out

    def data(self, payload) -> None:
        payload = memoryview(payload).cast("B")
        self.target(len(payload))[:] = payload

    def end(self) -> None:
        if self.contents is None or self._view is not None:
            raise self._broken("less data than it announced")
        self.finished = True

    def error(self, kind: str, message: str) -> None:
        self.refusal = (kind, message)


class _PipeSink:
    """The child's side: each call becomes one record (kind, length, payload) on the pipe."""

    def __init__(self, fd: int):
        self.fd = fd

    def _send(self, kind: bytes, payload=b"") -> None:
        payload = memoryview(payload).cast("B")
        self._write(_HEADER.pack(kind, len(payload)))
        self._write(payload)

    def _write(self, data) -> None:
        data = memoryview(data)
        while data:
            data = data[os.write(self.fd, data):]

    def meta(self, attrs, shapes, dtypes):
        self._send(b"M", json.dumps({"attrs": attrs, "shapes": shapes, "dtypes": dtypes}).encode())

    def begin(self, name, dtype, shape):
        self._send(b"B", json.dumps([name, dtype, list(shape)]).encode())

    def data(self, payload):
        self._send(b"D", payload)

    def end(self):
        self._send(b"Z")

    def error(self, kind, message):
        self._send(b"E", json.dumps([kind, message]).encode())


class _Stalled(Exception):
    pass


def _read_exact(fd: int, view: memoryview) -> bool:
    """Fill ``view`` from ``fd``; False at end of file (the child is gone)."""
    while view:
        ready, _, _ = select.select([fd], [], [], STALL_SECONDS)
        if not ready:
            raise _Stalled
        n = os.readv(fd, [view])
        if n == 0:
            return False
        view = view[n:]
    return True


def _receive(fd: int, collector: _Collector) -> bool:
    """Apply the child's records to ``collector``; False if the pipe ended before the last record."""
    header = bytearray(_HEADER.size)
    while True:
        if not _read_exact(fd, memoryview(header)):
            return False
        kind, length = _HEADER.unpack(header)
        if kind == b"D":
            if not _read_exact(fd, collector.target(length)):
                return False
            continue
        if length > (64 << 20):
            raise collector._broken("an oversized record")
        payload = bytearray(length)
        if not _read_exact(fd, memoryview(payload)):
            return False
        if kind == b"Z":
            collector.end()
            return True
        try:
            message = json.loads(payload)
            if kind == b"M":
                collector.meta(message["attrs"], message["shapes"], message["dtypes"])
            elif kind == b"B":
                collector.begin(*message)
            elif kind == b"E":
                collector.error(str(message[0]), str(message[1]))
                return True
            else:
                raise ValueError(kind)
        except (ValueError, KeyError, TypeError, IndexError):
            raise collector._broken("a record it could not parse") from None


def _read_in_child(path: Path, names: tuple[str, ...], collector: _Collector) -> None:
    r, w = os.pipe()
    with warnings.catch_warnings():  # the child only parses the file and exits; it never uses other threads
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: parse, send, exit without running any of the parent's exit handlers
        try:
            os.close(r)
            faulthandler.disable()  # a crash of libhdf5 here is the expected case, not a Python fatal error
            with contextlib.suppress(ValueError):  # Ctrl-C stops the child at once, as it stops the parent
                signal.signal(signal.SIGINT, signal.SIG_DFL)
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            _read_file(path, names, _PipeSink(w))
        finally:
            os._exit(0)
    os.close(w)
    complete = False
    try:
        complete = _receive(r, collector)
    except _Stalled:
        raise UserError(f"{path}: reading it made no progress for {STALL_SECONDS:.0f} s "
                        "(the file is probably damaged)") from None
    finally:
        os.close(r)
        if not complete:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    if not complete:
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) != signal.SIGKILL:
            name = signal.Signals(os.WTERMSIG(status)).name
            raise UserError(f"{path} is corrupt: the HDF5 library crashed reading it ({name})")
        raise UserError(f"{path} is truncated or corrupt (its reader stopped early)")


def read_demo_file(path: str | os.PathLike, arrays: tuple[str, ...] = schema.DATASETS, *,
                   isolate: bool | None = None) -> DemoFileContents:
    """The attributes, dataset shapes and the named ``arrays`` of a demo file.

    The layout is validated against :mod:`~curriculum_ppo.demo.schema` before any array is read.
    Every problem, whatever libhdf5 makes of the file, is a one-line :class:`UserError` naming it.
    ``isolate`` (default: on Linux) parses the file in a forked child process, so that even a crash
    of the HDF5 library is one of those lines.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"demo file not found: {path}")
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a demo file")
    try:
        with open(path, "rb") as f:
            f.read(8)
        size = os.path.getsize(path)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    collector = _Collector(path, MAX_EXPANSION * size + _SLACK)
    if isolate is None:
        isolate = sys.platform.startswith("linux")
    if isolate:
        _read_in_child(path, tuple(arrays), collector)
    else:
        _read_file(path, tuple(arrays), collector)
    if collector.refusal is not None:
        raise UserError(_refusal_message(path, *collector.refusal))
    if not collector.finished:
        raise collector._broken("nothing")
    return collector.contents


def load_demo(path: str | os.PathLike, *, load_frames: bool = False, check_rom: bool = True) -> Demo:
    """Read and validate a demo file; every problem becomes a one-line :class:`UserError`."""
    path = Path(path)
    contents = read_demo_file(path, schema.DATASETS + (("frames",) if load_frames else ()))
    attrs, a = contents.attrs, contents.arrays
    actions, lengths, packed = a["actions"], a["state_lengths"], a["states"]
    try:
        schema.validate(attrs, contents.shapes, int(actions.max()) if actions.size else None,
                        a["state_frames"], dtypes=contents.dtypes)
        schema.check_states(lengths, packed)
    except schema.SchemaError as exc:
        raise UserError(f"{path}: {exc}") from None
    demo = Demo(
        game=attrs["game"],
        action_set=list(attrs["action_set"]),
        actions=actions,
        rewards=a["rewards"],
        lives=a["lives"],
        ram=a["ram"],
        state_frames=a["state_frames"],
        states=[packed[i, : lengths[i]].tobytes() for i in range(len(lengths))],
        attrs=attrs,
        frames=a.get("frames"),
        path=path,
        frames_in_file="frames" in contents.shapes,
    )
    try:
        demo.game = resolve_game(demo.game)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    if check_rom:
        demo.check_rom()
    return demo


class DemoBuilder:
    """Records a demo frame by frame from a live :class:`Emulator`.

    The recorder, the ``--actions`` replayer and the importer all go through
    :meth:`step`, so every demo is produced by the same code.
    """

    def __init__(self, emulator: Emulator, state_interval: int = schema.DEFAULT_STATE_INTERVAL,
                 store_frames: bool = False):
        self.emulator = emulator
        self.state_interval = int(state_interval)
        self.store_frames = store_frames
        self.actions: list[int] = []
        self.rewards: list[float] = []
        self.lives: list[int] = [emulator.lives()]
        self.ram: list[np.ndarray] = [emulator.ram()]
        self.states: dict[int, bytes] = {0: emulator.save_state()}
        self.frames: list[np.ndarray] = [emulator.screen_rgb()] if store_frames else []

    def __len__(self) -> int:
        return len(self.actions)

    @classmethod
    def from_demo(cls, demo: Demo, emulator: Emulator, store_frames: bool = False) -> "DemoBuilder":
        """Continue an existing demo (``record --resume``): the emulator ends up at its last frame."""
        demo.restore(emulator, len(demo))
        builder = cls.__new__(cls)
        builder.emulator = emulator
        builder.state_interval = int(demo.attrs.get("state_interval", schema.DEFAULT_STATE_INTERVAL))
        builder.store_frames = store_frames and demo.frames is not None
        builder.actions = [int(a) for a in demo.actions]
        builder.rewards = [float(r) for r in demo.rewards]
        builder.lives = [int(v) for v in demo.lives]
        builder.ram = list(demo.ram)
        builder.states = {int(f): s for f, s in zip(demo.state_frames, demo.states)}
        builder.frames = list(demo.frames) if builder.store_frames else []
        return builder

    @property
    def total_return(self) -> float:
        return float(sum(self.rewards))

    def step(self, action: int) -> float:
        if not 0 <= action < self.emulator.num_actions:
            raise UserError(f"action index {action} out of range 0..{self.emulator.num_actions - 1}")
        reward = self.emulator.step(action)
        self.actions.append(int(action))
        self.rewards.append(reward)
        self.lives.append(self.emulator.lives())
        self.ram.append(self.emulator.ram())
        if self.store_frames:
            self.frames.append(self.emulator.screen_rgb())
        t = len(self.actions)
        if t % self.state_interval == 0:
            self.states[t] = self.emulator.save_state()
        return reward

    def truncate(self, t: int) -> None:
        """Drop frames t.. and put the emulator back at frame t (the recorder's rewind)."""
        t = max(0, min(int(t), len(self.actions)))
        del self.actions[t:], self.rewards[t:], self.lives[t + 1:], self.ram[t + 1:]
        if self.store_frames:
            del self.frames[t + 1:]
        self.states = {f: s for f, s in self.states.items() if f <= t}
        base = max(self.states)
        self.emulator.restore_state(self.states[base])
        for a in self.actions[base:t]:
            self.emulator.step(a)

    def build(self, attrs: dict | None = None) -> Demo:
        """Freeze into a :class:`Demo`, saving a final state at the last frame too."""
        n = len(self.actions)
        states = dict(self.states)
        if n not in states:
            states[n] = self.emulator.save_state()
        frames = sorted(states)
        emu = self.emulator
        meta = {
            "game": emu.game,
            "rom_md5": rom_md5(emu.game),
            "ale_py_version": ale_version(),
            "mode": int(emu.ale.getMode()) if hasattr(emu.ale, "getMode") else int(emu.settings.mode or 0),
            "difficulty": int(emu.ale.getDifficulty()) if hasattr(emu.ale, "getDifficulty") else int(emu.settings.difficulty or 0),
            "seed": int(emu.settings.seed),
            "state_interval": self.state_interval,
        }
        meta.update(attrs or {})
        return Demo(
            game=emu.game,
            action_set=list(emu.action_names),
            actions=np.asarray(self.actions, dtype=np.uint8),
            rewards=np.asarray(self.rewards, dtype=np.float32),
            lives=np.asarray(self.lives, dtype=np.uint8),
            ram=np.asarray(self.ram, dtype=np.uint8).reshape(-1, 128),
            state_frames=np.asarray(frames, dtype=np.int64),
            states=[states[f] for f in frames],
            attrs=meta,
            frames=np.asarray(self.frames, dtype=np.uint8) if self.store_frames else None,
        )
