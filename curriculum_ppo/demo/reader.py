"""Reading a demo file's HDF5 without trusting it: every outcome is the contents or one line.

libhdf5 trusts the structures it parses. A damaged file makes it raise any of a dozen exception
types (h5py's RuntimeError while iterating attributes among them), and some damage crashes the
process outright (SIGSEGV inside an attribute read). So on Linux a forked child process does all
the HDF5 parsing and streams plain arrays back over a pipe: whatever the file does to the child,
the caller gets either the arrays or one :class:`~curriculum_ppo.errors.UserError` saying what is
wrong with the file. The layout is checked (:mod:`curriculum_ppo.demo.schema`) before any array
is read, and only plain datasets of this file are read: no links, virtual datasets, external
storage or filters other than those :func:`~curriculum_ppo.demo.store.save_demo` uses.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import math
import os
import select
import signal
import struct
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from curriculum_ppo.demo import schema
from curriculum_ppo.errors import UserError

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
    if not path.is_file():  # a FIFO or device would block or never end
        raise UserError(f"{path} is not a regular file")
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
