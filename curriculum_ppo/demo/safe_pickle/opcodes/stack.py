"""The opcodes that move values rather than build them: POP, DUP, MARK, and the memo's PUT and GET."""

from __future__ import annotations

from typing import TYPE_CHECKING

from curriculum_ppo.demo.safe_pickle import sizes
from curriculum_ppo.demo.safe_pickle.errors import Malformed
from curriculum_ppo.demo.safe_pickle.markers import _Pending, misplaced
from curriculum_ppo.demo.safe_pickle.memo import EMPTY

if TYPE_CHECKING:
    from curriculum_ppo.demo.safe_pickle.loader import Loader


# -- the stack -----------------------------------------------------------------------------------------
def op_pop(ld: Loader):
    if ld.stack:
        ld.pop()
    else:
        ld.pop_mark()


def op_dup(ld: Loader):
    value = ld.top()
    if type(value) is _Pending:
        raise misplaced(value, "duplicated with DUP")
    ld.push(value)


def op_mark(ld: Loader):
    ld.meter.check_open_marks(len(ld.metastack))
    ld.meter.charge(sizes.LIST)
    ld.metastack.append(ld.stack)
    ld.stack = []


def op_pop_mark(ld: Loader):
    ld.pop_mark()


# -- the memo ------------------------------------------------------------------------------------------
def _memo_get(ld: Loader, index: int) -> None:
    value = ld.memo.get(index)
    if value is EMPTY:
        raise Malformed(f"byte {ld.pos}: memo entry {index} is read before it is written")
    if type(value) is _Pending:
        raise misplaced(value, "read back from the memo")
    ld.push(value)


def _memo_put(ld: Loader, index: int) -> None:
    if index < 0:
        raise Malformed(f"byte {ld.pos}: negative memo index {index}")
    ld.memo.put(index, ld.top())


def op_get(ld: Loader):
    _memo_get(ld, int(ld.readline("GET")))


def op_binget(ld: Loader):
    _memo_get(ld, ld.read_byte("BINGET"))


def op_long_binget(ld: Loader):
    _memo_get(ld, ld.unpack("<I", "LONG_BINGET"))


def op_put(ld: Loader):
    _memo_put(ld, int(ld.readline("PUT")))


def op_binput(ld: Loader):
    _memo_put(ld, ld.read_byte("BINPUT"))


def op_long_binput(ld: Loader):
    _memo_put(ld, ld.unpack("<I", "LONG_BINPUT"))


def op_memoize(ld: Loader):
    _memo_put(ld, ld.memo.count)


HANDLERS = {
    b"0": op_pop, b"2": op_dup, b"(": op_mark, b"1": op_pop_mark,
    b"g": op_get, b"h": op_binget, b"j": op_long_binget,
    b"p": op_put, b"q": op_binput, b"r": op_long_binput, b"\x94": op_memoize,
}
