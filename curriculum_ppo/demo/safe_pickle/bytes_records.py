"""The helpers Python's pickles call for bytes at protocols 0 to 2, rebuilt by our own code.

``_codecs.encode(text, 'latin1')`` (how protocols 0-2 write ``bytes``),
``bytes()`` and ``bytearray(...)``; any other arguments are refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from curriculum_ppo.demo.safe_pickle import sizes
from curriculum_ppo.demo.safe_pickle.allow_list import LATIN1_NAMES
from curriculum_ppo.demo.safe_pickle.errors import Refused
from curriculum_ppo.demo.safe_pickle.markers import _Global
from curriculum_ppo.demo.safe_pickle.messages import short

if TYPE_CHECKING:
    from curriculum_ppo.demo.safe_pickle.loader import Loader


def reduce_encode(ld: Loader, func: _Global, args: tuple):
    if not (len(args) == 2 and type(args[0]) is str and type(args[1]) is str
            and args[1].lower() in LATIN1_NAMES):
        raise Refused(f"it calls _codecs.encode with {short(args)}; Python uses it only for latin-1 bytes")
    ld.meter.charge(len(args[0]) + sizes.BYTES)
    try:
        return args[0].encode("latin-1")
    except UnicodeEncodeError:
        raise Refused("it calls _codecs.encode on text with characters beyond latin-1") from None


def reduce_bytes(ld: Loader, func: _Global, args: tuple):
    if args != ():
        raise Refused(f"it calls bytes with {short(args)}; Python's pickles call it only as bytes()")
    return b""


def reduce_bytearray(ld: Loader, func: _Global, args: tuple):
    if args == ():
        raw = b""
    elif len(args) == 1 and type(args[0]) is bytes:
        raw = args[0]
    elif len(args) == 2 and type(args[0]) is str and type(args[1]) is str and args[1].lower() in LATIN1_NAMES:
        raw = reduce_encode(ld, func, args)
    else:
        raise Refused(f"it calls bytearray with {short(args)}; Python's pickles pass bytes or latin-1 text")
    ld.meter.charge(len(raw) + sizes.BYTEARRAY)
    return bytearray(raw)


#: Allowed-global kind -> what REDUCE does for it (see :data:`.allow_list.ALLOWED_GLOBALS`).
REDUCERS = {"encode": reduce_encode, "bytes": reduce_bytes, "bytearray": reduce_bytearray}
