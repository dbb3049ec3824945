"""The resource limits of a load: what it may use (:class:`Limits`) and their checks as it runs (:class:`Meter`).

Every check runs *before* the memory it guards is taken: an array's claimed
shape is compared with the bytes the record carries (:func:`claimed_size`),
memory is charged before the value is built, and nesting is refused as the
level past the limit is opened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from curriculum_ppo.demo.safe_pickle import sizes
from curriculum_ppo.demo.safe_pickle.errors import Refused
from curriculum_ppo.demo.safe_pickle.messages import short

#: The containers a load builds; only they nest.
CONTAINERS = (list, tuple, dict, set, frozenset)


# Calibration of Limits.memory_factor. The real atari-reset files were not at hand when it was chosen,
# so the factor is reasoned from their layout and checked on files built the same way
# (tests/test_safe_pickle.py). An atari-reset demo is a dict of per-frame lists (actions, rewards,
# lives: ~53,000 entries each for Montezuma's Revenge) and emulator checkpoints as uint8 arrays, one
# per 100 frames, which make up most of the file (5.2 MB for Montezuma). Accounted memory per byte of
# file, which tracemalloc confirms:
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
    """What one load may use; the comment above explains how the memory factor was chosen."""

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


class Meter:
    """The limits of one load as it runs: memory charged against the budget, nesting depth, costly hash keys.

    ``position`` gives the byte the load has reached, for the messages.
    """

    def __init__(self, limits: Limits, size: int, position: Callable[[], int]):
        self.limits = limits
        self.size = size
        self.budget = limits.budget(size)
        self.used = 0
        self.position = position
        self.depths: dict[int, tuple[object, int]] = {}  # id -> (container, depth) for depth > 1
        self.fixed_hash_keys = 0

    # -- memory ----------------------------------------------------------------------------------
    def charge(self, nbytes: int) -> None:
        """Account ``nbytes`` about to be allocated; refuse the load once the total passes the budget."""
        self.used += nbytes
        if self.used > self.budget:
            raise Refused(f"loading it would take more than {self.budget:,} bytes of memory "
                          f"({self.limits.memory_factor}x its {self.size:,} bytes, plus "
                          f"{self.limits.memory_floor // 2**20} MiB); stopped at byte {self.position()}")

    # -- nesting ---------------------------------------------------------------------------------
    def too_deep(self) -> Refused:
        return Refused(f"its data is nested more than {self.limits.max_depth} levels deep "
                       f"(at byte {self.position()})")

    def check_open_marks(self, open_marks: int) -> None:
        """Before a MARK opens one more level: ``open_marks`` are open already."""
        if open_marks >= self.limits.max_depth:
            raise self.too_deep()

    def depth(self, value) -> int:
        if type(value) in CONTAINERS:
            entry = self.depths.get(id(value))
            return entry[1] if entry is not None else 1
        return 0

    def set_depth(self, container, depth: int) -> None:
        if depth > self.limits.max_depth:
            raise self.too_deep()
        if depth > 1:
            key = id(container)
            entry = self.depths.get(key)
            if entry is None:
                self.charge(sizes.SIDE_ENTRY)
            elif entry[1] >= depth:
                return
            self.depths[key] = (container, depth)  # the entry keeps the container alive: ids stay unique

    def grow_depth(self, container, children) -> None:
        """``children`` were put into ``container``: it is now one level deeper than the deepest of them."""
        deepest = max((self.depth(c) for c in children if type(c) in CONTAINERS), default=0)
        if deepest:
            self.set_depth(container, deepest + 1)

    # -- hashing ---------------------------------------------------------------------------------
    def check_key(self, key) -> None:
        """A dict key or set element: str and bytes freely, small numbers and None up to a count."""
        kind = type(key)
        if kind is str or kind is bytes:  # randomized, cached hashes
            return
        if kind is int:
            if key.bit_length() > 64:
                raise Refused(f"it uses an integer of {key.bit_length()} bits as a dict key or set element")
        elif not (key is None or kind is bool or kind is float or isinstance(key, np.generic)):
            raise Refused(f"it uses a {kind.__name__} as a dict key or set element (only strings, bytes, "
                          f"numbers and None are allowed)")
        self.fixed_hash_keys += 1  # hashes an attacker can make collide, turning dict inserts quadratic
        if self.fixed_hash_keys > self.limits.max_fixed_hash_keys:
            raise Refused(f"it has more than {self.limits.max_fixed_hash_keys:,} dict keys or set elements "
                          f"that are not strings")

    # -- arrays ----------------------------------------------------------------------------------
    def check_shape(self, shape, what: str) -> tuple[int, ...]:
        if type(shape) is not tuple or not all(type(d) is int and d >= 0 for d in shape):
            raise Refused(f"{what} has the shape {short(shape)}, not a tuple of sizes")
        if len(shape) > self.limits.max_ndim:
            raise Refused(f"{what} has {len(shape)} dimensions (at most {self.limits.max_ndim} are allowed)")
        return shape


def claimed_size(shape: tuple[int, ...], dtype: np.dtype, carried: int, what: str) -> tuple[int, int]:
    """(elements, bytes) of an array of ``shape``, refused unless exactly the ``carried`` bytes hold it.

    So a claimed shape can never make the load allocate more than the file holds.
    """
    count = 1
    nonzero = 1
    for d in shape:
        count *= d
        nonzero *= max(d, 1)
    nbytes = count * dtype.itemsize
    if nbytes != carried:
        raise Refused(f"{what} claims the shape {shape} of {dtype}, {count:,} elements ({nbytes:,} bytes), "
                      f"but carries {carried:,} bytes of data")
    if nonzero >= 2**62:
        raise Refused(f"{what} claims the shape {shape}, too large for numpy")
    return count, nbytes
