"""Values from the file, shown in error messages: bounded and on one line."""

from __future__ import annotations

import reprlib

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlevel, _repr.maxtuple, _repr.maxlist, _repr.maxdict = 3, 10, 6, 4


def short(obj) -> str:
    """A bounded, one-line repr for error messages (the value came from the file)."""
    return " ".join(_repr.repr(obj).split())


def name(text: str) -> str:
    """A module or global name from the file, shown plainly when it looks like one."""
    if text.isprintable() and " " not in text and len(text) <= 100:
        return text
    return short(text)
