"""A pure-Python unpickler for untrusted files: plain data and plain numeric numpy arrays, nothing else.

:func:`pickle.load` runs whatever callables a file names, and even a restricted
:class:`pickle.Unpickler` that only allows numpy's own pickle hooks is unsafe:
``numpy.dtype`` plus ``__setstate__`` can build an *object* dtype whose flags
say "no Python objects here", after which numpy reads bytes from the file as
object pointers (a crafted demo crashed the importer with SIGSEGV that way).
So this module never hands a byte of the file to numpy's or Python's
unpickling machinery. It parses the opcode stream itself (protocols 0 to 5,
the opcodes of :mod:`pickletools`) and builds every value with its own code:

* numbers, ``None``, booleans, ``str``, ``bytes``, ``bytearray``, and lists,
  tuples, dicts, sets and frozensets of them;
* numpy arrays, from the three records numpy writes: ``_reconstruct`` followed
  by the state ``(version, shape, dtype, fortran, raw bytes)``, protocol 5's
  ``_frombuffer(buffer, dtype, shape, order)``, and scalars
  ``scalar(dtype, raw bytes)``. The array is rebuilt here from (shape, one of
  :data:`ALLOWED_DTYPES`, raw bytes) with ``np.frombuffer(...).reshape(...)``
  and copied; the dtype is one that *this* code made with ``np.dtype(name)``
  after checking that the file's dtype record equals numpy's standard one for
  that name. Object, string, datetime, structured and subarray dtypes, and any
  state that differs from the standard one (other flags, fields, names), are
  refused;
* ``_codecs.encode(text, 'latin1')``, ``bytes()`` and ``bytearray(...)``, the
  helpers Python uses for bytes at protocols 0 to 2.

Every global is looked up in :data:`ALLOWED_GLOBALS` and becomes an inert
marker; anything else (``os.system``, ``builtins.getattr``, ``copyreg``...) is
refused when it is named, before anything could use it. Nothing from the file
is ever called, imported or looked up as an attribute.

**Resource limits** (:class:`Limits`), checked *before* the memory is taken:

* an array whose shape needs more (or fewer) bytes than the record carries is
  refused, so a claimed shape can never allocate more than the file holds;
* the memory the load builds up is estimated as it goes (object sizes of
  CPython 3 and numpy: see :func:`_charge` and its callers) and the load stops
  when it would exceed ``memory_factor`` times the file's size plus
  ``memory_floor``;
* nesting is limited (``max_depth``) for marks while parsing, for containers
  as they are built, and once more on the finished value, which must also be
  free of cycles. The parser is a loop with explicit stacks, so no input can
  exhaust the C stack;
* dict keys and set elements must be strings, bytes, ``None``, booleans,
  floats, numpy scalars or integers of at most 64 bits. Strings and bytes have
  randomized, cached hashes; the others (whose hashes an attacker can make
  collide, turning dict inserts quadratic) are limited in number.

``memory_factor`` is calibrated on the layout of the atari-reset demos; the
reasoning is in the comment above :class:`Limits`. :func:`loads_with_stats`
reports the memory a load accounted, so the factor can be checked on the real
files (``scripts/atari_reset_manifest.py`` records it per file).
"""

from __future__ import annotations

import codecs
import itertools
import reprlib
import struct
import sys
from dataclasses import dataclass

import numpy as np

__all__ = ["ALLOWED_DTYPES", "ALLOWED_GLOBALS", "Limits", "LoadStats", "Malformed", "Refused", "Truncated",
           "UntrustedPickleError", "loads", "loads_with_stats"]


class UntrustedPickleError(Exception):
    """The bytes were not loaded; ``str()`` of it is one line saying why."""


class Refused(UntrustedPickleError):
    """The pickle is well formed but holds something outside what is allowed, or exceeds a limit."""


class Malformed(UntrustedPickleError):
    """The bytes are not a valid pickle."""


class Truncated(Malformed):
    """The pickle ends before its STOP opcode."""


# Calibration of Limits.memory_factor. The real atari-reset files could not be read where this was
# written (they are not in the repository and there was no network), so the factor is reasoned from
# their layout and checked on files built the same way (tests/test_safe_pickle.py). An atari-reset
# demo is a dict of per-frame lists (actions, rewards, lives: ~53,000 entries each for Montezuma's
# Revenge) and emulator checkpoints as uint8 arrays, one per 100 frames, which make up most of the
# file (5.2 MB for Montezuma). Accounted memory per byte of file, which tracemalloc confirms:
#   - a checkpoint: its raw bytes (kept alive by the memo) plus the rebuilt copy: ~2x;
#   - a list of small ints (2 bytes each, cached int objects, a 9-byte list slot): ~4.5x;
#   - a list of floats (9 bytes each; 24-byte float + slot): ~3.7x;
#   - the worst layouts a real demo might use: ints from 256 to 65,535 (3 bytes each, as in
#     checkpoint_action_nr): ~14x; numpy scalars at protocol 3-4 (scalar, raw bytes and args tuple
#     all memoized): ~9x.
# A Montezuma-sized file of checkpoints and per-frame lists accounts ~2.5x. 32 leaves more than 2x
# over the worst layout, and still holds an attacker's 5 MB file to ~170 MB (about what loading the
# imported demo takes anyway). The manifest check asks for a 2x margin on every real file.
@dataclass(frozen=True)
class Limits:
    """What one load may use; see the module docstring for how the memory factor was chosen."""

    memory_factor: int = 32  # accounted bytes per byte of file ...
    memory_floor: int = 16 * 2**20  # ... plus this much, so that tiny files are never refused for size
    max_depth: int = 64  # containers inside containers, and open MARKs (an atari-reset demo nests 3)
    max_fixed_hash_keys: int = 10_000  # dict keys / set elements other than str and bytes
    max_ndim: int = 32

    def budget(self, size: int) -> int:
        return self.memory_factor * size + self.memory_floor


@dataclass(frozen=True)
class LoadStats:
    """What a successful load used: ``memory`` is the accounted peak in bytes (never credited back)."""

    size: int
    memory: int
    budget: int
    opcodes: int

    @property
    def memory_per_byte(self) -> float:
        return self.memory / max(self.size, 1)


#: numpy's dtype names in its pickles (``dtype.__reduce__``), the only dtypes an array may have.
ALLOWED_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(name) for name in ("b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8")
}
_DTYPE_KINDS = {"O": "object", "V": "structured/void", "S": "byte-string", "a": "byte-string", "U": "unicode",
                "M": "datetime", "m": "timedelta", "c": "complex"}
_BOOL = ALLOWED_DTYPES["b1"]
_U1 = ALLOWED_DTYPES["u1"]


def _allowed_globals() -> dict[tuple[str, str], str]:
    allowed = {("numpy", "ndarray"): "ndarray", ("numpy", "dtype"): "dtype", ("_codecs", "encode"): "encode"}
    for core in ("numpy.core", "numpy._core"):  # numpy 1.x and Python 2 files; numpy 2 files
        for module in (f"{core}.multiarray", f"{core}._multiarray_umath"):
            allowed[(module, "_reconstruct")] = "reconstruct"
            allowed[(module, "scalar")] = "scalar"
        allowed[(f"{core}.numeric", "_frombuffer")] = "frombuffer"
    for builtins in ("builtins", "__builtin__"):  # Python 3 / Python 2 spelling (protocols 0-2)
        allowed[(builtins, "bytes")] = "bytes"
        allowed[(builtins, "bytearray")] = "bytearray"
    return allowed


#: (module, name) a pickle may reference -> what this module does for it; everything else is refused.
ALLOWED_GLOBALS: dict[tuple[str, str], str] = _allowed_globals()

_LATIN1_NAMES = frozenset({"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "iso_8859_1", "l1"})
_CONTAINERS = (list, tuple, dict, set, frozenset)
_EMPTY = object()  # an unset memo slot
_DENSE_MEMO_GAP = 4096  # PUT indices this far past the end grow the memo list; further ones go to a dict

# Approximate CPython 3 / numpy sizes in bytes, used for accounting (a little generous).
_LIST, _TUPLE, _DICT, _SET = 64, 48, 64, 216
_SLOT = 9  # a list/tuple slot, with list over-allocation
_DICT_ENTRY = _SET_ENTRY = 56
_BYTES, _BYTEARRAY, _STR = 33, 57, 49
_FLOAT, _INT, _NP_SCALAR, _NDARRAY = 24, 32, 32, 112
_SIDE_ENTRY = 120  # an entry in a side table (depth of a nested container, sparse memo)

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlevel, _repr.maxtuple, _repr.maxlist, _repr.maxdict = 3, 10, 6, 4


def _short(obj) -> str:
    """A bounded, one-line repr for error messages (the value came from the file)."""
    return " ".join(_repr.repr(obj).split())


def _name(text: str) -> str:
    """A module or global name from the file, shown plainly when it looks like one."""
    if text.isprintable() and " " not in text and len(text) <= 100:
        return text
    return _short(text)


class _Global:
    """An allow-listed global: an inert marker that only REDUCE (and tuples of REDUCE arguments) accept."""

    __slots__ = ("module", "name", "kind")

    def __init__(self, module: str, name: str, kind: str):
        self.module, self.name, self.kind = module, name, kind

    def __repr__(self) -> str:
        return f"{self.module}.{self.name}"


class _Pending:
    """A numpy array or dtype whose state (BUILD) has not arrived yet; only PUT, POP and BUILD may touch it."""

    __slots__ = ("kind", "dtype_name", "memo_keys")

    def __init__(self, kind: str, dtype_name: str | None = None):
        self.kind, self.dtype_name, self.memo_keys = kind, dtype_name, []

    def __repr__(self) -> str:
        return f"a numpy {self.kind} before its state"


_INTERNAL = (_Global, _Pending)


def _charge_for_int(value: int) -> int:
    return 0 if -5 <= value <= 256 else _INT + 4 * (value.bit_length() // 30)


class _Loader:
    def __init__(self, data: bytes, limits: Limits):
        self.data = bytes(data)
        self.size = len(self.data)
        self.limits = limits
        self.budget = limits.budget(self.size)
        self.used = 0
        self.pos = 0
        self.opcodes = 0
        self.stack: list = []
        self.metastack: list[list] = []
        self.stack_items = 0  # items on all stacks, and their peak: each new peak costs a slot
        self.stack_peak = 0
        self.memo: list = []
        self.memo_extra: dict[int, object] = {}
        self.memo_count = 0
        self.depths: dict[int, tuple[object, int]] = {}  # id -> (container, depth) for depth > 1
        self.fixed_hash_keys = 0
        self.dtypes: dict[int, np.dtype] = {}  # id -> the dtypes this loader built
        self.globals: dict[tuple[str, str], _Global] = {}
        self.stack_value = None
        self.dispatch = {op[0]: handler for op, handler in self._handlers().items()}

    # -- accounting and limits ---------------------------------------------------------------
    def _charge(self, nbytes: int) -> None:
        self.used += nbytes
        if self.used > self.budget:
            raise Refused(f"loading it would take more than {self.budget:,} bytes of memory "
                          f"({self.limits.memory_factor}x its {self.size:,} bytes, plus "
                          f"{self.limits.memory_floor // 2**20} MiB); stopped at byte {self.pos}")

    def _too_deep(self) -> Refused:
        return Refused(f"its data is nested more than {self.limits.max_depth} levels deep (at byte {self.pos})")

    def _depth(self, value) -> int:
        if type(value) in _CONTAINERS:
            entry = self.depths.get(id(value))
            return entry[1] if entry is not None else 1
        return 0

    def _set_depth(self, container, depth: int) -> None:
        if depth > self.limits.max_depth:
            raise self._too_deep()
        if depth > 1:
            key = id(container)
            entry = self.depths.get(key)
            if entry is None:
                self._charge(_SIDE_ENTRY)
            elif entry[1] >= depth:
                return
            self.depths[key] = (container, depth)  # the entry keeps the container alive: ids stay unique

    def _grow_depth(self, container, children) -> None:
        deepest = max((self._depth(c) for c in children if type(c) in _CONTAINERS), default=0)
        if deepest:
            self._set_depth(container, deepest + 1)

    def _check_value(self, value, where: str) -> None:
        if type(value) in _INTERNAL:
            raise self._misplaced(value, where)

    def _misplaced(self, value, where: str) -> Refused:
        if type(value) is _Global:
            return Refused(f"it uses {value!r} as a value ({where}), not as a function numpy's pickles call")
        return Refused(f"it uses {value!r} ({where}); numpy's pickles set an array's state right after creating it")

    def _check_key(self, key) -> None:
        kind = type(key)
        if kind is str or kind is bytes:
            return
        if kind is int:
            if key.bit_length() > 64:
                raise Refused(f"it uses an integer of {key.bit_length()} bits as a dict key or set element")
        elif not (key is None or kind is bool or kind is float or isinstance(key, np.generic)):
            raise Refused(f"it uses a {kind.__name__} as a dict key or set element (only strings, bytes, "
                          f"numbers and None are allowed)")
        self.fixed_hash_keys += 1
        if self.fixed_hash_keys > self.limits.max_fixed_hash_keys:
            raise Refused(f"it has more than {self.limits.max_fixed_hash_keys:,} dict keys or set elements "
                          f"that are not strings")

    # -- the stacks ----------------------------------------------------------------------------
    def push(self, value) -> None:
        self.stack.append(value)
        self.stack_items += 1
        if self.stack_items > self.stack_peak:
            self.stack_peak = self.stack_items
            self._charge(_SLOT)

    def pop(self):
        if not self.stack:
            raise Malformed(f"byte {self.pos - 1}: an opcode needs a value but the stack is empty")
        self.stack_items -= 1
        return self.stack.pop()

    def pop_mark(self) -> list:
        if not self.metastack:
            raise Malformed(f"byte {self.pos - 1}: an opcode needs a MARK but there is none")
        items = self.stack
        self.stack = self.metastack.pop()
        self.stack_items -= len(items)
        return items

    def top(self):
        if not self.stack:
            raise Malformed(f"byte {self.pos - 1}: an opcode needs a value but the stack is empty")
        return self.stack[-1]

    # -- reading ---------------------------------------------------------------------------------
    def _truncated(self, what: str) -> Truncated:
        return Truncated(f"it ends at byte {self.size}, inside {what}")

    def read(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > self.size:
            raise self._truncated(what)
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def read_payload(self, n: int, what: str, overhead: int) -> bytes:
        """``n`` bytes that become a value: their memory is charged before they are copied."""
        if n > self.size - self.pos:
            raise self._truncated(what)
        self._charge(n + overhead)
        return self.read(n, what)

    def readline(self, what: str) -> bytes:
        end = self.data.find(b"\n", self.pos)
        if end < 0:
            raise self._truncated(what)
        line = self.data[self.pos:end]
        self.pos = end + 1
        return line

    def unpack(self, fmt: str, what: str):
        layout = _STRUCTS[fmt]
        pos = self.pos
        if pos + layout.size > self.size:
            raise self._truncated(what)
        self.pos = pos + layout.size
        return layout.unpack_from(self.data, pos)[0]

    # -- the loop --------------------------------------------------------------------------------
    def load(self):
        data, dispatch = self.data, self.dispatch
        start = 0
        try:
            while True:
                start = self.pos
                if start >= self.size:
                    raise Truncated(f"it ends at byte {self.size}, before the pickle's STOP opcode")
                op = data[start]
                self.pos = start + 1
                self.opcodes += 1
                handler = dispatch.get(op)
                if handler is None:
                    raise Malformed(f"byte {start} holds {bytes([op])!r}, which is not a pickle opcode")
                if handler() is _STOP:
                    break
            value = self.stack_value
        except UntrustedPickleError:
            raise
        except Exception as exc:  # noqa: BLE001 - bad data inside an opcode (e.g. invalid UTF-8, bad int)
            text = " ".join(str(exc).split())[:160]
            raise Malformed(f"byte {start}: {type(exc).__name__}: {text}") from None
        _check_result(value, self.limits.max_depth)
        return value

    def _handlers(self) -> dict[bytes, object]:
        return {
            b"I": self.op_int, b"J": self.op_binint, b"K": self.op_binint1, b"M": self.op_binint2,
            b"L": self.op_long, b"\x8a": self.op_long1, b"\x8b": self.op_long4,
            b"S": self.op_string, b"T": self.op_binstring, b"U": self.op_short_binstring,
            b"B": self.op_binbytes, b"C": self.op_short_binbytes, b"\x8e": self.op_binbytes8,
            b"\x96": self.op_bytearray8, b"\x97": self.op_buffer, b"\x98": self.op_buffer,
            b"N": self.op_none, b"\x88": self.op_true, b"\x89": self.op_false,
            b"V": self.op_unicode, b"\x8c": self.op_short_binunicode, b"X": self.op_binunicode,
            b"\x8d": self.op_binunicode8, b"F": self.op_float, b"G": self.op_binfloat,
            b"]": self.op_empty_list, b"a": self.op_append, b"e": self.op_appends, b"l": self.op_list,
            b")": self.op_empty_tuple, b"t": self.op_tuple, b"\x85": self.op_tuple1, b"\x86": self.op_tuple2,
            b"\x87": self.op_tuple3, b"}": self.op_empty_dict, b"d": self.op_dict, b"s": self.op_setitem,
            b"u": self.op_setitems, b"\x8f": self.op_empty_set, b"\x90": self.op_additems,
            b"\x91": self.op_frozenset, b"0": self.op_pop, b"2": self.op_dup, b"(": self.op_mark,
            b"1": self.op_pop_mark, b"g": self.op_get, b"h": self.op_binget, b"j": self.op_long_binget,
            b"p": self.op_put, b"q": self.op_binput, b"r": self.op_long_binput, b"\x94": self.op_memoize,
            b"\x82": self.op_ext, b"\x83": self.op_ext, b"\x84": self.op_ext, b"c": self.op_global,
            b"\x93": self.op_stack_global, b"R": self.op_reduce, b"b": self.op_build, b"i": self.op_inst,
            b"o": self.op_obj, b"\x81": self.op_newobj, b"\x92": self.op_newobj, b"\x80": self.op_proto,
            b".": self.op_stop, b"\x95": self.op_frame, b"P": self.op_persid, b"Q": self.op_persid,
        }

    # -- framing and protocol ----------------------------------------------------------------------
    def op_proto(self):
        proto = self.read(1, "PROTO")[0]
        if proto > 5:
            raise Malformed(f"unsupported pickle protocol {proto}")

    def op_frame(self):
        length = self.unpack("<Q", "FRAME")
        if length > self.size - self.pos:
            raise Truncated(f"it ends at byte {self.size}, inside a frame of {length:,} bytes that starts at "
                            f"byte {self.pos}")

    def op_stop(self):
        self.stack_value = self.pop()
        self._check_value(self.stack_value, "as the pickle's result")
        return _STOP

    # -- numbers -------------------------------------------------------------------------------------
    def _push_int(self, value: int) -> None:
        self._charge(_charge_for_int(value))
        self.push(value)

    def op_int(self):
        line = self.readline("INT")
        if line == b"00":
            self.push(False)
        elif line == b"01":
            self.push(True)
        else:
            self._push_int(int(line, 0))

    def op_binint(self):
        self._push_int(self.unpack("<i", "BININT"))

    def op_binint1(self):
        self.push(self.read(1, "BININT1")[0])

    def op_binint2(self):
        self._push_int(self.unpack("<H", "BININT2"))

    def op_long(self):
        line = self.readline("LONG")
        if line.endswith(b"L"):
            line = line[:-1]
        self._push_int(int(line, 0))

    def _long(self, n: int, what: str) -> None:
        raw = self.read_payload(n, what, _INT)
        self.push(int.from_bytes(raw, "little", signed=True))

    def op_long1(self):
        self._long(self.read(1, "LONG1")[0], "LONG1")

    def op_long4(self):
        n = self.unpack("<i", "LONG4")
        if n < 0:
            raise Malformed(f"byte {self.pos - 5}: LONG4 with a negative byte count")
        self._long(n, "LONG4")

    def op_float(self):
        self._charge(_FLOAT)
        self.push(float(self.readline("FLOAT")))

    def op_binfloat(self):
        self._charge(_FLOAT)
        self.push(self.unpack(">d", "BINFLOAT"))

    def op_none(self):
        self.push(None)

    def op_true(self):
        self.push(True)

    def op_false(self):
        self.push(False)

    # -- strings and bytes -----------------------------------------------------------------------------
    def _push_py2_string(self, raw: bytes) -> None:
        """A Python 2 ``str``: loaded as latin-1 text, numpy's advice for Python 2 pickles."""
        self.push(raw.decode("latin-1"))

    def op_string(self):
        line = self.readline("STRING")
        if len(line) < 2 or line[0] != line[-1] or line[0] not in b"\"'":
            raise Malformed("the argument of a STRING opcode is not quoted")
        self._charge(len(line) + _STR)
        self._push_py2_string(codecs.escape_decode(line[1:-1])[0])

    def op_binstring(self):
        n = self.unpack("<i", "BINSTRING")
        if n < 0:
            raise Malformed(f"byte {self.pos - 5}: BINSTRING with a negative byte count")
        self._push_py2_string(self.read_payload(n, "BINSTRING", _STR))

    def op_short_binstring(self):
        self._push_py2_string(self.read_payload(self.read(1, "SHORT_BINSTRING")[0], "SHORT_BINSTRING", _STR))

    def _push_utf8(self, n: int, what: str) -> None:
        text = str(self.read_payload(n, what, _STR), "utf-8", "surrogatepass")
        extra = sys.getsizeof(text) - (n + _STR)  # up to 4x for mostly-ASCII text with one wide character
        if extra > 0:
            self._charge(extra)
        self.push(text)

    def op_unicode(self):
        line = self.readline("UNICODE")
        self._charge(4 * len(line) + _STR)
        self.push(str(line, "raw-unicode-escape"))

    def op_short_binunicode(self):
        self._push_utf8(self.read(1, "SHORT_BINUNICODE")[0], "SHORT_BINUNICODE")

    def op_binunicode(self):
        self._push_utf8(self.unpack("<I", "BINUNICODE"), "BINUNICODE")

    def op_binunicode8(self):
        self._push_utf8(self.unpack("<Q", "BINUNICODE8"), "BINUNICODE8")

    def op_binbytes(self):
        self.push(self.read_payload(self.unpack("<I", "BINBYTES"), "BINBYTES", _BYTES))

    def op_short_binbytes(self):
        self.push(self.read_payload(self.read(1, "SHORT_BINBYTES")[0], "SHORT_BINBYTES", _BYTES))

    def op_binbytes8(self):
        self.push(self.read_payload(self.unpack("<Q", "BINBYTES8"), "BINBYTES8", _BYTES))

    def op_bytearray8(self):
        n = self.unpack("<Q", "BYTEARRAY8")
        if n > self.size - self.pos:
            raise self._truncated("BYTEARRAY8")
        self._charge(n + _BYTEARRAY)
        value = bytearray(memoryview(self.data)[self.pos:self.pos + n])
        self.pos += n
        self.push(value)

    def op_buffer(self):
        raise Refused("it refers to out-of-band buffers (pickle protocol 5), which a file cannot carry")

    # -- containers ------------------------------------------------------------------------------------
    def op_empty_list(self):
        self._charge(_LIST)
        self.push([])

    def _target(self, kind: type, op: str):
        target = self.top()
        if type(target) is not kind:
            raise Malformed(f"byte {self.pos - 1}: {op} on a {type(target).__name__}, not a {kind.__name__}")
        return target

    def op_append(self):
        value = self.pop()
        target = self._target(list, "APPEND")
        self._check_value(value, "in a list")
        self._charge(_SLOT)
        target.append(value)
        self._grow_depth(target, (value,))

    def op_appends(self):
        items = self.pop_mark()
        target = self._target(list, "APPENDS")
        for value in items:
            self._check_value(value, "in a list")
        self._charge(_SLOT * len(items))
        target.extend(items)
        self._grow_depth(target, items)

    def op_list(self):
        items = self.pop_mark()
        for value in items:
            self._check_value(value, "in a list")
        self._charge(_LIST + _SLOT * len(items))
        self._grow_depth(items, items)
        self.push(items)

    def op_empty_tuple(self):
        self.push(())

    def _push_tuple(self, items) -> None:
        for value in items:
            if type(value) is _Pending:  # allow-listed globals may sit in a tuple of REDUCE arguments
                raise self._misplaced(value, "in a tuple")
        value = tuple(items)
        if value:
            self._charge(_TUPLE + 8 * len(value))
            self._grow_depth(value, value)
        self.push(value)

    def op_tuple(self):
        self._push_tuple(self.pop_mark())

    def _pop_n(self, n: int) -> list:
        if len(self.stack) < n:
            raise Malformed(f"byte {self.pos - 1}: TUPLE{n} needs {n} values, the stack holds {len(self.stack)}")
        items = self.stack[-n:]
        del self.stack[-n:]
        self.stack_items -= n
        return items

    def op_tuple1(self):
        self._push_tuple(self._pop_n(1))

    def op_tuple2(self):
        self._push_tuple(self._pop_n(2))

    def op_tuple3(self):
        self._push_tuple(self._pop_n(3))

    def op_empty_dict(self):
        self._charge(_DICT)
        self.push({})

    def _set_items(self, target: dict, items: list) -> None:
        if len(items) % 2:
            raise Malformed(f"byte {self.pos - 1}: an odd number of values for dict keys and values")
        for value in items:
            self._check_value(value, "in a dict")
        for key in items[0::2]:
            self._check_key(key)
        self._charge(_DICT_ENTRY * (len(items) // 2))
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]
        self._grow_depth(target, items)

    def op_dict(self):
        items = self.pop_mark()
        self._charge(_DICT)
        target: dict = {}
        self._set_items(target, items)
        self.push(target)

    def op_setitem(self):
        value = self.pop()
        key = self.pop()
        self._set_items(self._target(dict, "SETITEM"), [key, value])

    def op_setitems(self):
        items = self.pop_mark()
        self._set_items(self._target(dict, "SETITEMS"), items)

    def op_empty_set(self):
        self._charge(_SET)
        self.push(set())

    def _check_elements(self, items) -> None:
        for value in items:
            self._check_value(value, "in a set")
            self._check_key(value)
        self._charge(_SET_ENTRY * len(items))

    def op_additems(self):
        items = self.pop_mark()
        target = self._target(set, "ADDITEMS")
        self._check_elements(items)
        target.update(items)

    def op_frozenset(self):
        items = self.pop_mark()
        self._charge(_SET)
        self._check_elements(items)
        self.push(frozenset(items))

    # -- stack and memo -------------------------------------------------------------------------------
    def op_pop(self):
        if self.stack:
            self.pop()
        else:
            self.pop_mark()

    def op_dup(self):
        value = self.top()
        if type(value) is _Pending:
            raise self._misplaced(value, "duplicated with DUP")
        self.push(value)

    def op_mark(self):
        if len(self.metastack) >= self.limits.max_depth:
            raise self._too_deep()
        self._charge(_LIST)
        self.metastack.append(self.stack)
        self.stack = []

    def op_pop_mark(self):
        self.pop_mark()

    def _memo_get(self, index: int):
        value = self.memo[index] if 0 <= index < len(self.memo) else _EMPTY
        if value is _EMPTY:
            value = self.memo_extra.get(index, _EMPTY)
        if value is _EMPTY:
            raise Malformed(f"byte {self.pos}: memo entry {index} is read before it is written")
        if type(value) is _Pending:
            raise self._misplaced(value, "read back from the memo")
        self.push(value)

    def _memo_put(self, index: int) -> None:
        if index < 0:
            raise Malformed(f"byte {self.pos}: negative memo index {index}")
        value = self.top()
        if index == len(self.memo) and not self.memo_extra:  # the usual case: the next index
            self._charge(_SLOT)
            self.memo.append(value)
            self.memo_count += 1
        elif index in self.memo_extra:
            self.memo_extra[index] = value
        elif index < len(self.memo):
            if self.memo[index] is _EMPTY:
                self.memo_count += 1
            self.memo[index] = value
        elif index < len(self.memo) + _DENSE_MEMO_GAP:
            grow = index + 1 - len(self.memo)
            self._charge(_SLOT * grow)
            self.memo.extend([_EMPTY] * grow)
            self.memo[index] = value
            self.memo_count += 1
        else:
            self._charge(_SIDE_ENTRY)
            self.memo_extra[index] = value
            self.memo_count += 1
        if type(value) is _Pending:
            self._charge(8)
            value.memo_keys.append(index)

    def _memo_replace(self, pending: _Pending, value) -> None:
        for index in pending.memo_keys:
            if index in self.memo_extra:
                if self.memo_extra[index] is pending:
                    self.memo_extra[index] = value
            elif index < len(self.memo) and self.memo[index] is pending:
                self.memo[index] = value

    def op_get(self):
        self._memo_get(int(self.readline("GET")))

    def op_binget(self):
        self._memo_get(self.read(1, "BINGET")[0])

    def op_long_binget(self):
        self._memo_get(self.unpack("<I", "LONG_BINGET"))

    def op_put(self):
        self._memo_put(int(self.readline("PUT")))

    def op_binput(self):
        self._memo_put(self.read(1, "BINPUT")[0])

    def op_long_binput(self):
        self._memo_put(self.unpack("<I", "LONG_BINPUT"))

    def op_memoize(self):
        self._memo_put(self.memo_count)

    # -- globals and the opcodes that create objects ------------------------------------------------------
    def find(self, module: str, name: str) -> _Global:
        marker = self.globals.get((module, name))
        if marker is None:
            kind = ALLOWED_GLOBALS.get((module, name))
            if kind is None:
                raise Refused(f"it references {_name(module)}.{_name(name)}, which is not on the allow-list "
                              f"(only plain containers, numbers, strings, bytes and plain numeric numpy arrays "
                              f"are allowed)")
            self._charge(_SIDE_ENTRY)
            marker = self.globals[(module, name)] = _Global(module, name, kind)
        return marker

    def op_global(self):
        module = self.readline("GLOBAL").decode("utf-8")
        name = self.readline("GLOBAL").decode("utf-8")
        self.push(self.find(module, name))

    def op_stack_global(self):
        name = self.pop()
        module = self.pop()
        if type(name) is not str or type(module) is not str:
            raise Malformed(f"byte {self.pos - 1}: STACK_GLOBAL needs two strings")
        self.push(self.find(module, name))

    def op_ext(self):
        raise Refused("it uses pickle's extension registry (EXT1/EXT2/EXT4), which names arbitrary globals")

    def op_inst(self):
        module = self.readline("INST").decode("utf-8")
        name = self.readline("INST").decode("utf-8")
        marker = self.find(module, name)
        raise Refused(f"it instantiates {marker!r} with the INST opcode, which numpy's and Python's pickles "
                      f"of plain data never use")

    def op_obj(self):
        raise Refused("it instantiates a class with the OBJ opcode, which pickles of plain data never use")

    def op_newobj(self):
        raise Refused("it creates an object with NEWOBJ, which pickles of plain data and numpy arrays never use")

    def op_persid(self):
        raise Refused("it uses pickle persistent ids, which refer to objects outside the file")

    def op_reduce(self):
        args = self.pop()
        func = self.top()
        if type(func) is not _Global:
            raise Refused(f"it calls a {type(func).__name__} (REDUCE); only the allow-listed numpy and bytes "
                          f"constructors can be called")
        if type(args) is not tuple:
            raise Malformed(f"byte {self.pos - 1}: REDUCE arguments are a {type(args).__name__}, not a tuple")
        self.stack[-1] = getattr(self, f"reduce_{func.kind}")(func, args)

    def op_build(self):
        state = self.pop()
        target = self.top()
        if type(target) is not _Pending:
            raise Refused(f"it sets the state (BUILD) of a {_describe(target)}; in a demo only numpy arrays "
                          f"and dtypes have a state")
        self._check_value(state, "as a state")
        value = self.build_dtype(target, state) if target.kind == "dtype" else self.build_array(state)
        self.stack[-1] = value
        self._memo_replace(target, value)

    # -- what the allow-listed globals do ---------------------------------------------------------------------
    def _dtype_arg(self, value, what: str) -> np.dtype:
        if type(value) is _Pending:
            raise self._misplaced(value, what)
        dtype = self.dtypes.get(id(value)) if isinstance(value, np.dtype) else None
        if dtype is None or dtype is not value:
            raise Refused(f"{what} has the dtype {_short(value)}, not a numpy dtype record")
        return dtype

    def _raw_bytes(self, raw, what: str) -> bytes:
        if type(raw) is bytes:
            return raw
        if type(raw) is str:  # a Python 2 str, loaded as latin-1
            self._charge(len(raw) + _BYTES)
            try:
                return raw.encode("latin-1")
            except UnicodeEncodeError:
                raise Refused(f"{what} is text with characters beyond latin-1, not raw bytes") from None
        if type(raw) is list:
            raise Refused(f"{what} is a list of Python objects: an object array")
        raise Refused(f"{what} is a {type(raw).__name__}, not raw bytes")

    def _shape(self, shape, what: str) -> tuple[int, ...]:
        if type(shape) is not tuple or not all(type(d) is int and d >= 0 for d in shape):
            raise Refused(f"{what} has the shape {_short(shape)}, not a tuple of sizes")
        if len(shape) > self.limits.max_ndim:
            raise Refused(f"{what} has {len(shape)} dimensions (at most {self.limits.max_ndim} are allowed)")
        return shape

    def make_array(self, raw, dtype: np.dtype, shape: tuple[int, ...], fortran: bool, what: str,
                   native: bool = False) -> np.ndarray:
        """The array of ``shape`` and ``dtype`` over ``raw``, copied, after checking that the sizes agree.

        ``native``: convert to the machine's byte order, as numpy's ``__setstate__`` does (protocol 5's
        ``_frombuffer`` keeps the file's byte order).
        """
        count = 1
        nonzero = 1
        for d in shape:
            count *= d
            nonzero *= max(d, 1)
        nbytes = count * dtype.itemsize
        if nbytes != len(raw):
            raise Refused(f"{what} claims the shape {shape} of {dtype}, {count:,} elements ({nbytes:,} bytes), "
                          f"but carries {len(raw):,} bytes of data")
        if nonzero >= 2**62:
            raise Refused(f"{what} claims the shape {shape}, too large for numpy")
        self._charge(nbytes + _NDARRAY)
        if dtype is _BOOL:  # any byte other than 0 is True, as numpy would print it; never an invalid bool
            flat = np.frombuffer(raw, dtype=_U1, count=count)
            return flat.reshape(shape, order="F" if fortran else "C").astype(_BOOL, order="K")
        view = np.frombuffer(raw, dtype=dtype, count=count).reshape(shape, order="F" if fortran else "C")
        if native and not dtype.isnative:
            return view.astype(dtype.newbyteorder("="), order="K")
        return view.copy(order="K")

    def reduce_reconstruct(self, func: _Global, args: tuple):
        if not (len(args) == 3 and type(args[0]) is _Global and args[0].kind == "ndarray"
                and type(args[1]) is tuple and len(args[1]) == 1 and type(args[1][0]) is int and args[1][0] == 0
                and type(args[2]) in (bytes, str) and args[2] in (b"b", "b")):
            raise Refused(f"it calls {func!r} with {_short(args)}, not the (numpy.ndarray, (0,), b'b') "
                          f"that numpy's pickles of plain arrays use")
        return _Pending("array")

    def build_array(self, state) -> np.ndarray:
        what = "a numpy array record"
        if type(state) is not tuple or len(state) not in (4, 5):
            raise Refused(f"{what} has the state {_short(state)}, not (version, shape, dtype, fortran, data)")
        if len(state) == 5:
            version, *state = state
            if type(version) is not int or version != 1:
                raise Refused(f"{what} has state version {_short(version)}; numpy writes version 1")
        shape, dtype, fortran, raw = state
        dtype = self._dtype_arg(dtype, what)
        if type(fortran) not in (bool, int) or fortran not in (0, 1):
            raise Refused(f"{what} has the Fortran-order flag {_short(fortran)}, not a boolean")
        shape = self._shape(shape, what)
        return self.make_array(self._raw_bytes(raw, f"the data of {what}"), dtype, shape, bool(fortran), what,
                               native=True)

    def reduce_frombuffer(self, func: _Global, args: tuple):
        what = "a numpy array record (protocol 5)"
        if len(args) != 4:
            raise Refused(f"it calls {func!r} with {len(args)} arguments; numpy writes (buffer, dtype, shape, order)")
        buffer, dtype, shape, order = args
        if type(buffer) not in (bytes, bytearray):
            raise Refused(f"{what} carries a {type(buffer).__name__}, not bytes")
        if type(order) is not str or order not in ("C", "F"):
            raise Refused(f"{what} has the order {_short(order)}, not 'C' or 'F'")
        dtype = self._dtype_arg(dtype, what)
        return self.make_array(bytes(buffer), dtype, self._shape(shape, what), order == "F", what)

    def reduce_scalar(self, func: _Global, args: tuple):
        what = "a numpy scalar"
        if len(args) != 2:
            raise Refused(f"it calls {func!r} with {_short(args)}; numpy writes (dtype, raw bytes) for plain scalars")
        dtype = self._dtype_arg(args[0], what)
        raw = self._raw_bytes(args[1], f"the data of {what}")
        if len(raw) != dtype.itemsize:
            raise Refused(f"{what} of {dtype} carries {len(raw)} bytes, not {dtype.itemsize}")
        self._charge(_NP_SCALAR)
        if dtype is _BOOL:
            return np.bool_(raw[0] != 0)
        return np.frombuffer(raw, dtype=dtype)[0]

    def reduce_dtype(self, func: _Global, args: tuple):
        if len(args) != 3 or type(args[0]) is not str:
            raise Refused(f"it calls numpy.dtype with {_short(args)}; numpy writes (name, False, True)")
        name, align, copy = args
        if name not in ALLOWED_DTYPES:
            kind = _DTYPE_KINDS.get(name.lstrip("<>|=")[:1], "")
            raise Refused(f"it holds a numpy dtype {_short(name)}{f' ({kind})' if kind else ''}, not a plain "
                          f"numeric one (allowed: bool, int8..int64, uint8..uint64, float16/32/64)")
        if type(align) not in (bool, int) or align != 0 or type(copy) not in (bool, int) or copy != 1:
            raise Refused(f"it calls numpy.dtype with {_short(args)}; numpy writes ({name!r}, False, True)")
        return _Pending("dtype", name)

    def build_dtype(self, pending: _Pending, state) -> np.dtype:
        name = pending.dtype_name
        base = ALLOWED_DTYPES[name]
        orders = ("|",) if base.itemsize == 1 else ("<", ">")
        order = state[1] if type(state) is tuple and len(state) == 8 else None
        expected = (3, order if order in orders else orders[0], None, None, None, -1, -1, 0)
        if not (type(state) is tuple and len(state) == 8 and all(type(a) is type(b) and a == b
                                                                 for a, b in zip(state, expected))):
            raise Refused(f"its numpy dtype {name!r} has the state {_short(state)}, not numpy's standard "
                          f"{expected} for that dtype (other flags, fields or byte order)")
        dtype = base if order == "|" else np.dtype(order + name)  # "<" is "=" (native) here, as numpy does
        self.dtypes[id(dtype)] = dtype  # the dict keeps it alive, so the id stays its own
        return dtype

    def reduce_encode(self, func: _Global, args: tuple):
        if not (len(args) == 2 and type(args[0]) is str and type(args[1]) is str
                and args[1].lower() in _LATIN1_NAMES):
            raise Refused(f"it calls _codecs.encode with {_short(args)}; Python uses it only for latin-1 bytes")
        self._charge(len(args[0]) + _BYTES)
        try:
            return args[0].encode("latin-1")
        except UnicodeEncodeError:
            raise Refused("it calls _codecs.encode on text with characters beyond latin-1") from None

    def reduce_bytes(self, func: _Global, args: tuple):
        if args != ():
            raise Refused(f"it calls bytes with {_short(args)}; Python's pickles call it only as bytes()")
        return b""

    def reduce_bytearray(self, func: _Global, args: tuple):
        if args == ():
            raw = b""
        elif len(args) == 1 and type(args[0]) is bytes:
            raw = args[0]
        elif len(args) == 2 and type(args[0]) is str and type(args[1]) is str and args[1].lower() in _LATIN1_NAMES:
            raw = self.reduce_encode(func, args)
        else:
            raise Refused(f"it calls bytearray with {_short(args)}; Python's pickles pass bytes or latin-1 text")
        self._charge(len(raw) + _BYTEARRAY)
        return bytearray(raw)

    def reduce_ndarray(self, func: _Global, args: tuple):
        raise Refused("it calls numpy.ndarray directly (an uninitialized array), which numpy's pickles never do")


_STOP = object()
_STRUCTS = {fmt: struct.Struct(fmt) for fmt in ("<i", "<H", "<I", "<Q", ">d")}


def _describe(value) -> str:
    if type(value) is _Global:
        return repr(value)
    return type(value).__name__


_LEAVES = (int, float, bool, type(None), str, bytes, bytearray, np.ndarray)


def _check_leaf(value) -> None:
    if type(value) in _LEAVES or isinstance(value, (np.generic, np.dtype)):
        return
    if type(value) is _Global:
        raise Refused(f"it holds {value!r} itself as a value, not the result of calling it")
    raise Refused(f"it holds {_describe(value)} as a value")


def _check_result(root, max_depth: int) -> None:
    """The finished value: no markers left, no container that contains itself, at most ``max_depth`` deep.

    Lists and dicts can be filled after they were put inside others, so the
    depth tracked while loading can be stale; this walk is exact. It is an
    iterative depth-first search (no recursion), and each container is visited
    once however often it is shared.
    """
    if type(root) not in _CONTAINERS:
        _check_leaf(root)
        return

    def children(node):
        return itertools.chain(node.keys(), node.values()) if type(node) is dict else iter(node)

    heights: dict[int, int] = {}
    on_path = {id(root)}
    path = [[root, children(root), 0]]  # node, its remaining children, the height of its tallest child so far
    while path:
        frame = path[-1]
        for child in frame[1]:
            if type(child) not in _CONTAINERS:
                _check_leaf(child)
                continue
            key = id(child)
            if key in on_path:
                raise Refused(f"it holds a {type(child).__name__} that contains itself")
            height = heights.get(key)
            if height is None:
                if len(path) >= max_depth:
                    raise Refused(f"its data is nested more than {max_depth} levels deep")
                on_path.add(key)
                path.append([child, children(child), 0])
                break
            frame[2] = max(frame[2], height)
        else:
            path.pop()
            node = frame[0]
            on_path.discard(id(node))
            heights[id(node)] = frame[2] + 1
            if path:
                path[-1][2] = max(path[-1][2], frame[2] + 1)


def loads_with_stats(data: bytes, limits: Limits = Limits()) -> tuple[object, LoadStats]:
    """Load ``data`` (see the module docstring); raises :class:`UntrustedPickleError` with a one-line reason."""
    loader = _Loader(data, limits)
    value = loader.load()
    return value, LoadStats(loader.size, loader.used, loader.budget, loader.opcodes)


def loads(data: bytes, limits: Limits = Limits()):
    """Like :func:`pickle.loads` for plain data and plain numeric numpy arrays; nothing in ``data`` runs."""
    return loads_with_stats(data, limits)[0]
