"""What the values a load builds cost in memory, in bytes, for the memory budget (:class:`.limits.Meter`).

Approximate CPython 3 and numpy object sizes, a little generous; the tests
compare the total with what tracemalloc sees the load allocate.
"""

from __future__ import annotations

LIST, TUPLE, DICT, SET = 64, 48, 64, 216
SLOT = 9  # a list/tuple slot, with list over-allocation
DICT_ENTRY = SET_ENTRY = 56
BYTES, BYTEARRAY, STR = 33, 57, 49
FLOAT, INT, NP_SCALAR, NDARRAY = 24, 32, 32, 112
SIDE_ENTRY = 120  # an entry in a side table (depth of a nested container, sparse memo, a global's marker)


def of_int(value: int) -> int:
    """An int's cost: nothing for the small ints CPython caches, else its object size."""
    return 0 if -5 <= value <= 256 else INT + 4 * (value.bit_length() // 30)
