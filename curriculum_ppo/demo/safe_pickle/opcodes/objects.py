"""The opcodes that name globals and create objects: GLOBAL, REDUCE and BUILD, against the allow-list.

A global becomes an inert :class:`..markers._Global` if it is on
:data:`..allow_list.ALLOWED_GLOBALS` and is refused, when it is named,
otherwise. REDUCE hands an allowed global's arguments to that global's
reducer (:data:`REDUCERS`), our own code; BUILD gives a pending numpy array or
dtype its state. Nothing from the file is called, imported or looked up as an
attribute. Every other opcode that creates objects is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from curriculum_ppo.demo.safe_pickle import bytes_records, numpy_records, sizes
from curriculum_ppo.demo.safe_pickle.allow_list import ALLOWED_GLOBALS
from curriculum_ppo.demo.safe_pickle.errors import Malformed, Refused
from curriculum_ppo.demo.safe_pickle.markers import _Global, _Pending, check_value, describe
from curriculum_ppo.demo.safe_pickle.messages import name as shown_name

if TYPE_CHECKING:
    from curriculum_ppo.demo.safe_pickle.loader import Loader

#: What REDUCE does for each kind of allowed global: ``reducer(loader, global, args) -> value``.
REDUCERS = {**numpy_records.REDUCERS, **bytes_records.REDUCERS}
if set(REDUCERS) != set(ALLOWED_GLOBALS.values()):
    raise RuntimeError("every allowed global needs a reducer, and every reducer an allowed global")


# -- globals -------------------------------------------------------------------------------------------
def find(ld: Loader, module: str, name: str) -> _Global:
    """The marker for ``module.name``, refused unless it is on the allow-list."""
    marker = ld.globals.get((module, name))
    if marker is None:
        kind = ALLOWED_GLOBALS.get((module, name))
        if kind is None:
            raise Refused(f"it references {shown_name(module)}.{shown_name(name)}, which is not on the "
                          f"allow-list (only plain containers, numbers, strings, bytes and plain numeric numpy "
                          f"arrays are allowed)")
        ld.meter.charge(sizes.SIDE_ENTRY)
        marker = ld.globals[(module, name)] = _Global(module, name, kind)
    return marker


def op_global(ld: Loader):
    module = ld.readline("GLOBAL").decode("utf-8")
    name = ld.readline("GLOBAL").decode("utf-8")
    ld.push(find(ld, module, name))


def op_stack_global(ld: Loader):
    name = ld.pop()
    module = ld.pop()
    if type(name) is not str or type(module) is not str:
        raise Malformed(f"byte {ld.pos - 1}: STACK_GLOBAL needs two strings")
    ld.push(find(ld, module, name))


# -- calling an allowed global, and setting a state ----------------------------------------------------
def op_reduce(ld: Loader):
    args = ld.pop()
    func = ld.top()
    if type(func) is not _Global:
        raise Refused(f"it calls a {type(func).__name__} (REDUCE); only the allow-listed numpy and bytes "
                      f"constructors can be called")
    if type(args) is not tuple:
        raise Malformed(f"byte {ld.pos - 1}: REDUCE arguments are a {type(args).__name__}, not a tuple")
    ld.stack[-1] = REDUCERS[func.kind](ld, func, args)


def op_build(ld: Loader):
    state = ld.pop()
    target = ld.top()
    if type(target) is not _Pending:
        raise Refused(f"it sets the state (BUILD) of a {describe(target)}; in a demo only numpy arrays "
                      f"and dtypes have a state")
    check_value(state, "as a state")
    value = numpy_records.build(ld, target, state)
    ld.stack[-1] = value
    ld.memo.replace(target, value)


# -- refused: the opcodes that create arbitrary objects ------------------------------------------------
def op_persid(ld: Loader):
    raise Refused("it uses pickle persistent ids, which refer to objects outside the file")


def op_ext(ld: Loader):
    raise Refused("it uses pickle's extension registry (EXT1/EXT2/EXT4), which names arbitrary globals")


def op_inst(ld: Loader):
    module = ld.readline("INST").decode("utf-8")
    name = ld.readline("INST").decode("utf-8")
    marker = find(ld, module, name)
    raise Refused(f"it instantiates {marker!r} with the INST opcode, which numpy's and Python's pickles "
                  f"of plain data never use")


def op_obj(ld: Loader):
    raise Refused("it instantiates a class with the OBJ opcode, which pickles of plain data never use")


def op_newobj(ld: Loader):
    raise Refused("it creates an object with NEWOBJ, which pickles of plain data and numpy arrays never use")


HANDLERS = {
    b"c": op_global, b"\x93": op_stack_global, b"R": op_reduce, b"b": op_build,
    b"P": op_persid, b"Q": op_persid, b"\x82": op_ext, b"\x83": op_ext, b"\x84": op_ext,
    b"i": op_inst, b"o": op_obj, b"\x81": op_newobj, b"\x92": op_newobj,
}
