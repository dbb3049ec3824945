"""The opcodes that build lists, tuples, dicts, sets and frozensets.

Markers (:mod:`..markers`) never go into a container, except allow-listed
globals into the tuple of a REDUCE's arguments. Each container's depth is
tracked as it is filled (:meth:`..limits.Meter.grow_depth`), and dict keys and
set elements are limited to cheap hashes (:meth:`..limits.Meter.check_key`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from curriculum_ppo.demo.safe_pickle import sizes
from curriculum_ppo.demo.safe_pickle.errors import Malformed
from curriculum_ppo.demo.safe_pickle.markers import _Pending, check_value, misplaced

if TYPE_CHECKING:
    from curriculum_ppo.demo.safe_pickle.loader import Loader


def _target(ld: Loader, kind: type, op: str):
    """The container on top of the stack that ``op`` fills, which must be a ``kind``."""
    target = ld.top()
    if type(target) is not kind:
        raise Malformed(f"byte {ld.pos - 1}: {op} on a {type(target).__name__}, not a {kind.__name__}")
    return target


# -- lists ---------------------------------------------------------------------------------------------
def op_empty_list(ld: Loader):
    ld.meter.charge(sizes.LIST)
    ld.push([])


def op_append(ld: Loader):
    value = ld.pop()
    target = _target(ld, list, "APPEND")
    check_value(value, "in a list")
    ld.meter.charge(sizes.SLOT)
    target.append(value)
    ld.meter.grow_depth(target, (value,))


def op_appends(ld: Loader):
    items = ld.pop_mark()
    target = _target(ld, list, "APPENDS")
    for value in items:
        check_value(value, "in a list")
    ld.meter.charge(sizes.SLOT * len(items))
    target.extend(items)
    ld.meter.grow_depth(target, items)


def op_list(ld: Loader):
    items = ld.pop_mark()
    for value in items:
        check_value(value, "in a list")
    ld.meter.charge(sizes.LIST + sizes.SLOT * len(items))
    ld.meter.grow_depth(items, items)
    ld.push(items)


# -- tuples --------------------------------------------------------------------------------------------
def op_empty_tuple(ld: Loader):
    ld.push(())


def _push_tuple(ld: Loader, items) -> None:
    for value in items:
        if type(value) is _Pending:  # allow-listed globals may sit in a tuple of REDUCE arguments
            raise misplaced(value, "in a tuple")
    value = tuple(items)
    if value:
        ld.meter.charge(sizes.TUPLE + 8 * len(value))
        ld.meter.grow_depth(value, value)
    ld.push(value)


def op_tuple(ld: Loader):
    _push_tuple(ld, ld.pop_mark())


def op_tuple1(ld: Loader):
    _push_tuple(ld, ld.pop_n(1))


def op_tuple2(ld: Loader):
    _push_tuple(ld, ld.pop_n(2))


def op_tuple3(ld: Loader):
    _push_tuple(ld, ld.pop_n(3))


# -- dicts ---------------------------------------------------------------------------------------------
def _set_items(ld: Loader, target: dict, items: list) -> None:
    if len(items) % 2:
        raise Malformed(f"byte {ld.pos - 1}: an odd number of values for dict keys and values")
    for value in items:
        check_value(value, "in a dict")
    check_key = ld.meter.check_key
    for key in items[0::2]:
        check_key(key)
    ld.meter.charge(sizes.DICT_ENTRY * (len(items) // 2))
    for i in range(0, len(items), 2):
        target[items[i]] = items[i + 1]
    ld.meter.grow_depth(target, items)


def op_empty_dict(ld: Loader):
    ld.meter.charge(sizes.DICT)
    ld.push({})


def op_dict(ld: Loader):
    items = ld.pop_mark()
    ld.meter.charge(sizes.DICT)
    target: dict = {}
    _set_items(ld, target, items)
    ld.push(target)


def op_setitem(ld: Loader):
    value = ld.pop()
    key = ld.pop()
    _set_items(ld, _target(ld, dict, "SETITEM"), [key, value])


def op_setitems(ld: Loader):
    items = ld.pop_mark()
    _set_items(ld, _target(ld, dict, "SETITEMS"), items)


# -- sets ----------------------------------------------------------------------------------------------
def _check_elements(ld: Loader, items) -> None:
    for value in items:
        check_value(value, "in a set")
        ld.meter.check_key(value)
    ld.meter.charge(sizes.SET_ENTRY * len(items))


def op_empty_set(ld: Loader):
    ld.meter.charge(sizes.SET)
    ld.push(set())


def op_additems(ld: Loader):
    items = ld.pop_mark()
    target = _target(ld, set, "ADDITEMS")
    _check_elements(ld, items)
    target.update(items)


def op_frozenset(ld: Loader):
    items = ld.pop_mark()
    ld.meter.charge(sizes.SET)
    _check_elements(ld, items)
    ld.push(frozenset(items))


HANDLERS = {
    b"]": op_empty_list, b"a": op_append, b"e": op_appends, b"l": op_list,
    b")": op_empty_tuple, b"t": op_tuple, b"\x85": op_tuple1, b"\x86": op_tuple2, b"\x87": op_tuple3,
    b"}": op_empty_dict, b"d": op_dict, b"s": op_setitem, b"u": op_setitems,
    b"\x8f": op_empty_set, b"\x90": op_additems, b"\x91": op_frozenset,
}
