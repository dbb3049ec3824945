"""The opcodes of plain values: numbers, None and booleans, text, and bytes.

Each value's memory is charged before it is built; the payload of a string or
bytes opcode is charged before it is copied out of the file.
"""

from __future__ import annotations

import codecs
import sys
from typing import TYPE_CHECKING

from curriculum_ppo.demo.safe_pickle import sizes
from curriculum_ppo.demo.safe_pickle.errors import Malformed, Refused

if TYPE_CHECKING:
    from curriculum_ppo.demo.safe_pickle.loader import Loader


# -- numbers -----------------------------------------------------------------------------------------
def _push_int(ld: Loader, value: int) -> None:
    ld.meter.charge(sizes.of_int(value))
    ld.push(value)


def op_int(ld: Loader):
    line = ld.readline("INT")
    if line == b"00":
        ld.push(False)
    elif line == b"01":
        ld.push(True)
    else:
        _push_int(ld, int(line, 0))


def op_binint(ld: Loader):
    _push_int(ld, ld.unpack("<i", "BININT"))


def op_binint1(ld: Loader):
    ld.push(ld.read_byte("BININT1"))


def op_binint2(ld: Loader):
    _push_int(ld, ld.unpack("<H", "BININT2"))


def op_long(ld: Loader):
    line = ld.readline("LONG")
    if line.endswith(b"L"):
        line = line[:-1]
    _push_int(ld, int(line, 0))


def _long(ld: Loader, n: int, what: str) -> None:
    raw = ld.read_payload(n, what, sizes.INT)
    ld.push(int.from_bytes(raw, "little", signed=True))


def op_long1(ld: Loader):
    _long(ld, ld.read_byte("LONG1"), "LONG1")


def op_long4(ld: Loader):
    n = ld.unpack("<i", "LONG4")
    if n < 0:
        raise Malformed(f"byte {ld.pos - 5}: LONG4 with a negative byte count")
    _long(ld, n, "LONG4")


def op_float(ld: Loader):
    ld.meter.charge(sizes.FLOAT)
    ld.push(float(ld.readline("FLOAT")))


def op_binfloat(ld: Loader):
    ld.meter.charge(sizes.FLOAT)
    ld.push(ld.unpack(">d", "BINFLOAT"))


def op_none(ld: Loader):
    ld.push(None)


def op_true(ld: Loader):
    ld.push(True)


def op_false(ld: Loader):
    ld.push(False)


# -- text ----------------------------------------------------------------------------------------------
def _push_py2_string(ld: Loader, raw: bytes) -> None:
    """A Python 2 ``str``: loaded as latin-1 text, numpy's advice for Python 2 pickles."""
    ld.push(raw.decode("latin-1"))


def op_string(ld: Loader):
    line = ld.readline("STRING")
    if len(line) < 2 or line[0] != line[-1] or line[0] not in b"\"'":
        raise Malformed("the argument of a STRING opcode is not quoted")
    ld.meter.charge(len(line) + sizes.STR)
    _push_py2_string(ld, codecs.escape_decode(line[1:-1])[0])


def op_binstring(ld: Loader):
    n = ld.unpack("<i", "BINSTRING")
    if n < 0:
        raise Malformed(f"byte {ld.pos - 5}: BINSTRING with a negative byte count")
    _push_py2_string(ld, ld.read_payload(n, "BINSTRING", sizes.STR))


def op_short_binstring(ld: Loader):
    _push_py2_string(ld, ld.read_payload(ld.read_byte("SHORT_BINSTRING"), "SHORT_BINSTRING", sizes.STR))


def _push_utf8(ld: Loader, n: int, what: str) -> None:
    text = str(ld.read_payload(n, what, sizes.STR), "utf-8", "surrogatepass")
    extra = sys.getsizeof(text) - (n + sizes.STR)  # up to 4x for mostly-ASCII text with one wide character
    if extra > 0:
        ld.meter.charge(extra)
    ld.push(text)


def op_unicode(ld: Loader):
    line = ld.readline("UNICODE")
    ld.meter.charge(4 * len(line) + sizes.STR)
    ld.push(str(line, "raw-unicode-escape"))


def op_short_binunicode(ld: Loader):
    _push_utf8(ld, ld.read_byte("SHORT_BINUNICODE"), "SHORT_BINUNICODE")


def op_binunicode(ld: Loader):
    _push_utf8(ld, ld.unpack("<I", "BINUNICODE"), "BINUNICODE")


def op_binunicode8(ld: Loader):
    _push_utf8(ld, ld.unpack("<Q", "BINUNICODE8"), "BINUNICODE8")


# -- bytes ---------------------------------------------------------------------------------------------
def op_binbytes(ld: Loader):
    ld.push(ld.read_payload(ld.unpack("<I", "BINBYTES"), "BINBYTES", sizes.BYTES))


def op_short_binbytes(ld: Loader):
    ld.push(ld.read_payload(ld.read_byte("SHORT_BINBYTES"), "SHORT_BINBYTES", sizes.BYTES))


def op_binbytes8(ld: Loader):
    ld.push(ld.read_payload(ld.unpack("<Q", "BINBYTES8"), "BINBYTES8", sizes.BYTES))


def op_bytearray8(ld: Loader):
    n = ld.unpack("<Q", "BYTEARRAY8")
    if n > ld.size - ld.pos:
        raise ld.truncated("BYTEARRAY8")
    ld.meter.charge(n + sizes.BYTEARRAY)
    value = bytearray(memoryview(ld.data)[ld.pos:ld.pos + n])
    ld.pos += n
    ld.push(value)


def op_buffer(ld: Loader):
    raise Refused("it refers to out-of-band buffers (pickle protocol 5), which a file cannot carry")


HANDLERS = {
    b"I": op_int, b"J": op_binint, b"K": op_binint1, b"M": op_binint2,
    b"L": op_long, b"\x8a": op_long1, b"\x8b": op_long4, b"F": op_float, b"G": op_binfloat,
    b"N": op_none, b"\x88": op_true, b"\x89": op_false,
    b"S": op_string, b"T": op_binstring, b"U": op_short_binstring,
    b"V": op_unicode, b"\x8c": op_short_binunicode, b"X": op_binunicode, b"\x8d": op_binunicode8,
    b"B": op_binbytes, b"C": op_short_binbytes, b"\x8e": op_binbytes8,
    b"\x96": op_bytearray8, b"\x97": op_buffer, b"\x98": op_buffer,
}
