"""The memo of one load (PUT/GET): a list for the dense indices pickles write, a dict for far-apart ones."""

from __future__ import annotations

from curriculum_ppo.demo.safe_pickle import sizes
from curriculum_ppo.demo.safe_pickle.limits import Meter
from curriculum_ppo.demo.safe_pickle.markers import _Pending

EMPTY = object()  # an unset memo slot
DENSE_GAP = 4096  # PUT indices this far past the end grow the list; further ones go to the dict


class Memo:
    """Memo entries by index; each new slot is charged to the load's :class:`Meter` before it is made."""

    def __init__(self, meter: Meter):
        self.meter = meter
        self.dense: list = []
        self.sparse: dict[int, object] = {}
        self.count = 0  # entries written: the index MEMOIZE writes next

    def get(self, index: int):
        """The entry at ``index``, or :data:`EMPTY` if none was written."""
        value = self.dense[index] if 0 <= index < len(self.dense) else EMPTY
        if value is EMPTY:
            value = self.sparse.get(index, EMPTY)
        return value

    def put(self, index: int, value) -> None:
        """Write ``value`` at ``index`` (0 or more)."""
        dense = self.dense
        if index == len(dense) and not self.sparse:  # the usual case: the next index
            self.meter.charge(sizes.SLOT)
            dense.append(value)
            self.count += 1
        elif index in self.sparse:
            self.sparse[index] = value
        elif index < len(dense):
            if dense[index] is EMPTY:
                self.count += 1
            dense[index] = value
        elif index < len(dense) + DENSE_GAP:
            grow = index + 1 - len(dense)
            self.meter.charge(sizes.SLOT * grow)
            dense.extend([EMPTY] * grow)
            dense[index] = value
            self.count += 1
        else:
            self.meter.charge(sizes.SIDE_ENTRY)
            self.sparse[index] = value
            self.count += 1
        if type(value) is _Pending:
            self.meter.charge(8)
            value.memo_keys.append(index)

    def replace(self, pending: _Pending, value) -> None:
        """``pending`` got its state: the entries that still hold it now hold ``value``."""
        for index in pending.memo_keys:
            if index in self.sparse:
                if self.sparse[index] is pending:
                    self.sparse[index] = value
            elif index < len(self.dense) and self.dense[index] is pending:
                self.dense[index] = value
