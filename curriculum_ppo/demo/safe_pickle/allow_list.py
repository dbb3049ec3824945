"""What a pickle may name: the plain numeric dtypes an array may have, and the globals it may call."""

from __future__ import annotations

import numpy as np

#: numpy's dtype names in its pickles (``dtype.__reduce__``), the only dtypes an array may have.
ALLOWED_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(name) for name in ("b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8")
}
#: dtype kind letter -> its name, for the refusal of a dtype that is not allowed.
DTYPE_KINDS = {"O": "object", "V": "structured/void", "S": "byte-string", "a": "byte-string", "U": "unicode",
               "M": "datetime", "m": "timedelta", "c": "complex"}
BOOL = ALLOWED_DTYPES["b1"]
U1 = ALLOWED_DTYPES["u1"]


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


#: (module, name) a pickle may reference -> what this package does for it (a key of
#: :data:`.opcodes.objects.REDUCERS`); everything else is refused.
ALLOWED_GLOBALS: dict[tuple[str, str], str] = _allowed_globals()

#: The encoding names Python's pickles pass to ``_codecs.encode`` for bytes at protocols 0 to 2.
LATIN1_NAMES = frozenset({"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "iso_8859_1", "l1"})
