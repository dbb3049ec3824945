"""numpy's pickle records, rebuilt by our own code: arrays, scalars and dtypes of :data:`.allow_list.ALLOWED_DTYPES`.

numpy pickles an array as ``_reconstruct(ndarray, (0,), b'b')`` followed by
the state ``(version, shape, dtype, fortran, raw bytes)`` (BUILD), or at
protocol 5 as ``_frombuffer(buffer, dtype, shape, order)``; a scalar as
``scalar(dtype, raw bytes)``; a dtype as ``dtype(name, False, True)`` followed
by its state. None of these reaches numpy's own hooks: every dtype is one that
this code made with ``np.dtype(name)`` after checking that the file's dtype
state equals numpy's standard one for that name, and every array is
``np.frombuffer(raw bytes).reshape(shape)``, copied, after checking that the
shape needs exactly the bytes the record carries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from curriculum_ppo.demo.safe_pickle import sizes
from curriculum_ppo.demo.safe_pickle.allow_list import ALLOWED_DTYPES, BOOL, DTYPE_KINDS, U1
from curriculum_ppo.demo.safe_pickle.errors import Refused
from curriculum_ppo.demo.safe_pickle.limits import claimed_size
from curriculum_ppo.demo.safe_pickle.markers import _Global, _Pending, misplaced
from curriculum_ppo.demo.safe_pickle.messages import short

if TYPE_CHECKING:
    from curriculum_ppo.demo.safe_pickle.loader import Loader


# -- checked arguments ---------------------------------------------------------------------------------
def _dtype_arg(ld: Loader, value, what: str) -> np.dtype:
    """``value`` if it is a dtype this load built (:func:`build_dtype`), else refused."""
    if type(value) is _Pending:
        raise misplaced(value, what)
    dtype = ld.dtypes.get(id(value)) if isinstance(value, np.dtype) else None
    if dtype is None or dtype is not value:
        raise Refused(f"{what} has the dtype {short(value)}, not a numpy dtype record")
    return dtype


def raw_bytes(ld: Loader, raw, what: str) -> bytes:
    """The raw data of a record: bytes, or a Python 2 ``str`` loaded as latin-1 text."""
    if type(raw) is bytes:
        return raw
    if type(raw) is str:
        ld.meter.charge(len(raw) + sizes.BYTES)
        try:
            return raw.encode("latin-1")
        except UnicodeEncodeError:
            raise Refused(f"{what} is text with characters beyond latin-1, not raw bytes") from None
    if type(raw) is list:
        raise Refused(f"{what} is a list of Python objects: an object array")
    raise Refused(f"{what} is a {type(raw).__name__}, not raw bytes")


def make_array(ld: Loader, raw, dtype: np.dtype, shape: tuple[int, ...], fortran: bool, what: str,
               native: bool = False) -> np.ndarray:
    """The array of ``shape`` and ``dtype`` over ``raw``, copied, after checking that the sizes agree.

    ``native``: convert to the machine's byte order, as numpy's ``__setstate__`` does (protocol 5's
    ``_frombuffer`` keeps the file's byte order).
    """
    count, nbytes = claimed_size(shape, dtype, len(raw), what)
    ld.meter.charge(nbytes + sizes.NDARRAY)
    if dtype is BOOL:  # any byte other than 0 is True, as numpy would print it; never an invalid bool
        flat = np.frombuffer(raw, dtype=U1, count=count)
        return flat.reshape(shape, order="F" if fortran else "C").astype(BOOL, order="K")
    view = np.frombuffer(raw, dtype=dtype, count=count).reshape(shape, order="F" if fortran else "C")
    if native and not dtype.isnative:
        return view.astype(dtype.newbyteorder("="), order="K")
    return view.copy(order="K")


# -- arrays --------------------------------------------------------------------------------------------
def reduce_reconstruct(ld: Loader, func: _Global, args: tuple):
    if not (len(args) == 3 and type(args[0]) is _Global and args[0].kind == "ndarray"
            and type(args[1]) is tuple and len(args[1]) == 1 and type(args[1][0]) is int and args[1][0] == 0
            and type(args[2]) in (bytes, str) and args[2] in (b"b", "b")):
        raise Refused(f"it calls {func!r} with {short(args)}, not the (numpy.ndarray, (0,), b'b') "
                      f"that numpy's pickles of plain arrays use")
    return _Pending("array")


def build_array(ld: Loader, state) -> np.ndarray:
    what = "a numpy array record"
    if type(state) is not tuple or len(state) not in (4, 5):
        raise Refused(f"{what} has the state {short(state)}, not (version, shape, dtype, fortran, data)")
    if len(state) == 5:
        version, *state = state
        if type(version) is not int or version != 1:
            raise Refused(f"{what} has state version {short(version)}; numpy writes version 1")
    shape, dtype, fortran, raw = state
    dtype = _dtype_arg(ld, dtype, what)
    if type(fortran) not in (bool, int) or fortran not in (0, 1):
        raise Refused(f"{what} has the Fortran-order flag {short(fortran)}, not a boolean")
    shape = ld.meter.check_shape(shape, what)
    return make_array(ld, raw_bytes(ld, raw, f"the data of {what}"), dtype, shape, bool(fortran), what,
                      native=True)


def reduce_frombuffer(ld: Loader, func: _Global, args: tuple):
    what = "a numpy array record (protocol 5)"
    if len(args) != 4:
        raise Refused(f"it calls {func!r} with {len(args)} arguments; numpy writes (buffer, dtype, shape, order)")
    buffer, dtype, shape, order = args
    if type(buffer) not in (bytes, bytearray):
        raise Refused(f"{what} carries a {type(buffer).__name__}, not bytes")
    if type(order) is not str or order not in ("C", "F"):
        raise Refused(f"{what} has the order {short(order)}, not 'C' or 'F'")
    dtype = _dtype_arg(ld, dtype, what)
    return make_array(ld, bytes(buffer), dtype, ld.meter.check_shape(shape, what), order == "F", what)


def reduce_ndarray(ld: Loader, func: _Global, args: tuple):
    raise Refused("it calls numpy.ndarray directly (an uninitialized array), which numpy's pickles never do")


# -- scalars -------------------------------------------------------------------------------------------
def reduce_scalar(ld: Loader, func: _Global, args: tuple):
    what = "a numpy scalar"
    if len(args) != 2:
        raise Refused(f"it calls {func!r} with {short(args)}; numpy writes (dtype, raw bytes) for plain scalars")
    dtype = _dtype_arg(ld, args[0], what)
    raw = raw_bytes(ld, args[1], f"the data of {what}")
    if len(raw) != dtype.itemsize:
        raise Refused(f"{what} of {dtype} carries {len(raw)} bytes, not {dtype.itemsize}")
    ld.meter.charge(sizes.NP_SCALAR)
    if dtype is BOOL:
        return np.bool_(raw[0] != 0)
    return np.frombuffer(raw, dtype=dtype)[0]


# -- dtypes --------------------------------------------------------------------------------------------
def reduce_dtype(ld: Loader, func: _Global, args: tuple):
    if len(args) != 3 or type(args[0]) is not str:
        raise Refused(f"it calls numpy.dtype with {short(args)}; numpy writes (name, False, True)")
    name, align, copy = args
    if name not in ALLOWED_DTYPES:
        kind = DTYPE_KINDS.get(name.lstrip("<>|=")[:1], "")
        raise Refused(f"it holds a numpy dtype {short(name)}{f' ({kind})' if kind else ''}, not a plain "
                      f"numeric one (allowed: bool, int8..int64, uint8..uint64, float16/32/64)")
    if type(align) not in (bool, int) or align != 0 or type(copy) not in (bool, int) or copy != 1:
        raise Refused(f"it calls numpy.dtype with {short(args)}; numpy writes ({name!r}, False, True)")
    return _Pending("dtype", name)


def build_dtype(ld: Loader, pending: _Pending, state) -> np.dtype:
    """The dtype ``pending`` names, made here, once its state is numpy's standard one for that name."""
    name = pending.dtype_name
    base = ALLOWED_DTYPES[name]
    orders = ("|",) if base.itemsize == 1 else ("<", ">")
    order = state[1] if type(state) is tuple and len(state) == 8 else None
    expected = (3, order if order in orders else orders[0], None, None, None, -1, -1, 0)
    if not (type(state) is tuple and len(state) == 8 and all(type(a) is type(b) and a == b
                                                             for a, b in zip(state, expected))):
        raise Refused(f"its numpy dtype {name!r} has the state {short(state)}, not numpy's standard "
                      f"{expected} for that dtype (other flags, fields or byte order)")
    dtype = base if order == "|" else np.dtype(order + name)  # "<" is "=" (native) here, as numpy does
    ld.dtypes[id(dtype)] = dtype  # the dict keeps it alive, so the id stays its own
    return dtype


def build(ld: Loader, pending: _Pending, state):
    """BUILD on a pending record: its dtype or its array."""
    return build_dtype(ld, pending, state) if pending.kind == "dtype" else build_array(ld, state)


#: Allowed-global kind -> what REDUCE does for it (see :data:`.allow_list.ALLOWED_GLOBALS`).
REDUCERS = {"reconstruct": reduce_reconstruct, "frombuffer": reduce_frombuffer, "ndarray": reduce_ndarray,
            "scalar": reduce_scalar, "dtype": reduce_dtype}
