"""The opcode handlers: one small function per pickle opcode, taking the :class:`~..loader.Loader`, grouped by kind.

* :mod:`.framing`: PROTO, FRAME, STOP;
* :mod:`.constants`: numbers, strings, bytes, None and booleans;
* :mod:`.containers`: lists, tuples, dicts, sets;
* :mod:`.stack`: POP, DUP, MARK and the memo;
* :mod:`.objects`: globals against the allow-list, REDUCE and BUILD (which hand numpy's and Python's
  records to :mod:`..numpy_records` and :mod:`..bytes_records`), and the object-building opcodes,
  which are all refused.

:data:`DISPATCH` maps each opcode byte to its handler (``None``: not an opcode).
"""

from __future__ import annotations

from curriculum_ppo.demo.safe_pickle.opcodes import constants, containers, framing, objects, stack
from curriculum_ppo.demo.safe_pickle.opcodes.framing import STOP


def _dispatch_table() -> tuple:
    table: list = [None] * 256
    for group in (framing, constants, containers, stack, objects):
        for opcode, handler in group.HANDLERS.items():
            if table[opcode[0]] is not None:
                raise RuntimeError(f"opcode {opcode!r} has two handlers")
            table[opcode[0]] = handler
    return tuple(table)


DISPATCH = _dispatch_table()

__all__ = ["DISPATCH", "STOP"]
