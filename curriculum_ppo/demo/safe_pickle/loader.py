"""One load of an untrusted pickle: the byte stream, the stacks, and the loop that dispatches opcodes.

What each opcode does is in :mod:`.opcodes`, one small handler function per
opcode, each taking the :class:`Loader`. The loop is iterative and the stacks
are explicit lists, so no input can exhaust the C stack.
"""

from __future__ import annotations

import struct
import weakref

import numpy as np

from curriculum_ppo.demo.safe_pickle import sizes
from curriculum_ppo.demo.safe_pickle.errors import Malformed, Truncated, UntrustedPickleError
from curriculum_ppo.demo.safe_pickle.limits import Limits, LoadStats, Meter
from curriculum_ppo.demo.safe_pickle.markers import _Global
from curriculum_ppo.demo.safe_pickle.memo import Memo
from curriculum_ppo.demo.safe_pickle.opcodes import DISPATCH, STOP
from curriculum_ppo.demo.safe_pickle.result import check_result

_STRUCTS = {fmt: struct.Struct(fmt) for fmt in ("<i", "<H", "<I", "<Q", ">d")}


class Loader:
    """The state of one load; the opcode handlers change it through the methods below and its attributes."""

    def __init__(self, data: bytes, limits: Limits):
        self.data = bytes(data)
        self.size = len(self.data)
        self.limits = limits
        self.pos = 0
        self.opcodes = 0
        this = weakref.ref(self)  # weak: the loader, which holds the file and the memo, goes when the load returns
        self.meter = Meter(limits, self.size, position=lambda: this().pos)
        self.stack: list = []
        self.metastack: list[list] = []  # the stacks under the open MARKs
        self.stack_items = 0  # items on all stacks, and their peak: each new peak costs a slot
        self.stack_peak = 0
        self.memo = Memo(self.meter)
        self.dtypes: dict[int, np.dtype] = {}  # id -> the dtypes this load built (see numpy_records.py)
        self.globals: dict[tuple[str, str], _Global] = {}  # the markers made so far, one per allowed global
        self.result = None

    # -- the stacks ------------------------------------------------------------------------------
    def push(self, value) -> None:
        self.stack.append(value)
        self.stack_items += 1
        if self.stack_items > self.stack_peak:
            self.stack_peak = self.stack_items
            self.meter.charge(sizes.SLOT)

    def pop(self):
        if not self.stack:
            raise Malformed(f"byte {self.pos - 1}: an opcode needs a value but the stack is empty")
        self.stack_items -= 1
        return self.stack.pop()

    def pop_mark(self) -> list:
        """The items pushed since the last MARK, which is closed."""
        if not self.metastack:
            raise Malformed(f"byte {self.pos - 1}: an opcode needs a MARK but there is none")
        items = self.stack
        self.stack = self.metastack.pop()
        self.stack_items -= len(items)
        return items

    def pop_n(self, n: int) -> list:
        """The top ``n`` items (for TUPLE1..3)."""
        if len(self.stack) < n:
            raise Malformed(f"byte {self.pos - 1}: TUPLE{n} needs {n} values, the stack holds {len(self.stack)}")
        items = self.stack[-n:]
        del self.stack[-n:]
        self.stack_items -= n
        return items

    def top(self):
        if not self.stack:
            raise Malformed(f"byte {self.pos - 1}: an opcode needs a value but the stack is empty")
        return self.stack[-1]

    # -- reading ---------------------------------------------------------------------------------
    def truncated(self, what: str) -> Truncated:
        return Truncated(f"it ends at byte {self.size}, inside {what}")

    def read(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > self.size:
            raise self.truncated(what)
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def read_byte(self, what: str) -> int:
        """One byte, as the int it is (the argument of BININT1, BINPUT, SHORT_BINBYTES...)."""
        pos = self.pos
        if pos >= self.size:
            raise self.truncated(what)
        self.pos = pos + 1
        return self.data[pos]

    def read_payload(self, n: int, what: str, overhead: int) -> bytes:
        """``n`` bytes that become a value: their memory is charged before they are copied."""
        if n > self.size - self.pos:
            raise self.truncated(what)
        self.meter.charge(n + overhead)
        return self.read(n, what)

    def readline(self, what: str) -> bytes:
        end = self.data.find(b"\n", self.pos)
        if end < 0:
            raise self.truncated(what)
        line = self.data[self.pos:end]
        self.pos = end + 1
        return line

    def unpack(self, fmt: str, what: str):
        layout = _STRUCTS[fmt]
        pos = self.pos
        if pos + layout.size > self.size:
            raise self.truncated(what)
        self.pos = pos + layout.size
        return layout.unpack_from(self.data, pos)[0]

    # -- the loop --------------------------------------------------------------------------------
    def load(self):
        """The pickle's value, checked whole (:func:`.result.check_result`) before it is returned."""
        data, dispatch = self.data, DISPATCH
        start = 0
        try:
            while True:
                start = self.pos
                if start >= self.size:
                    raise Truncated(f"it ends at byte {self.size}, before the pickle's STOP opcode")
                op = data[start]
                self.pos = start + 1
                self.opcodes += 1
                handler = dispatch[op]
                if handler is None:
                    raise Malformed(f"byte {start} holds {bytes([op])!r}, which is not a pickle opcode")
                if handler(self) is STOP:
                    break
            value = self.result
        except UntrustedPickleError:
            raise
        except Exception as exc:  # noqa: BLE001 - bad data inside an opcode (e.g. invalid UTF-8, bad int)
            text = " ".join(str(exc).split())[:160]
            raise Malformed(f"byte {start}: {type(exc).__name__}: {text}") from None
        check_result(value, self.limits.max_depth)
        return value

    def stats(self) -> LoadStats:
        return LoadStats(self.size, self.meter.used, self.meter.budget, self.opcodes)
