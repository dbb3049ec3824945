"""PROTO, FRAME and STOP: the opcodes that frame a pickle rather than build a value."""

from __future__ import annotations

from typing import TYPE_CHECKING

from curriculum_ppo.demo.safe_pickle.errors import Malformed, Truncated
from curriculum_ppo.demo.safe_pickle.markers import check_value

if TYPE_CHECKING:
    from curriculum_ppo.demo.safe_pickle.loader import Loader

STOP = object()  # what the STOP handler returns: the loop ends


def op_proto(ld: Loader):
    proto = ld.read_byte("PROTO")
    if proto > 5:
        raise Malformed(f"unsupported pickle protocol {proto}")


def op_frame(ld: Loader):
    length = ld.unpack("<Q", "FRAME")
    if length > ld.size - ld.pos:
        raise Truncated(f"it ends at byte {ld.size}, inside a frame of {length:,} bytes that starts at "
                        f"byte {ld.pos}")


def op_stop(ld: Loader):
    ld.result = ld.pop()
    check_value(ld.result, "as the pickle's result")
    return STOP


HANDLERS = {b"\x80": op_proto, b"\x95": op_frame, b".": op_stop}
