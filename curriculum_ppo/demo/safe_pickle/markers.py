"""The two inert stand-ins a load puts on its stack, and the checks that keep them off the result.

A :class:`_Global` is an allow-listed global that only REDUCE may call (it may
sit in REDUCE's argument tuple); a :class:`_Pending` is a numpy array or dtype
created by REDUCE whose state (BUILD) has not come yet. Neither may end up in
a value. (Both names keep their underscore: they are internal to the loader,
and messages that name a value's type show them.)
"""

from __future__ import annotations

from curriculum_ppo.demo.safe_pickle.errors import Refused


class _Global:
    """An allow-listed global: an inert marker that only REDUCE (and tuples of REDUCE arguments) accept."""

    __slots__ = ("module", "name", "kind")

    def __init__(self, module: str, name: str, kind: str):
        self.module, self.name, self.kind = module, name, kind

    def __repr__(self) -> str:
        return f"{self.module}.{self.name}"


class _Pending:
    """A numpy array or dtype whose state (BUILD) has not arrived yet; only PUT, POP and BUILD may touch it."""

    __slots__ = ("kind", "dtype_name", "memo_keys")

    def __init__(self, kind: str, dtype_name: str | None = None):
        self.kind, self.dtype_name, self.memo_keys = kind, dtype_name, []

    def __repr__(self) -> str:
        return f"a numpy {self.kind} before its state"


MARKERS = (_Global, _Pending)


def misplaced(value, where: str) -> Refused:
    """The refusal for a marker found ``where`` a value belongs."""
    if type(value) is _Global:
        return Refused(f"it uses {value!r} as a value ({where}), not as a function numpy's pickles call")
    return Refused(f"it uses {value!r} ({where}); numpy's pickles set an array's state right after creating it")


def check_value(value, where: str) -> None:
    """Refuse ``value`` if it is a marker rather than a value."""
    if type(value) in MARKERS:
        raise misplaced(value, where)


def describe(value) -> str:
    """What ``value`` is, for a message: a global by its name, anything else by its type."""
    if type(value) is _Global:
        return repr(value)
    return type(value).__name__
