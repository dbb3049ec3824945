"""Why an untrusted pickle was not loaded: every error's ``str()`` is one line."""

from __future__ import annotations


class UntrustedPickleError(Exception):
    """The bytes were not loaded; ``str()`` of it is one line saying why."""


class Refused(UntrustedPickleError):
    """The pickle is well formed but holds something outside what is allowed, or exceeds a limit."""


class Malformed(UntrustedPickleError):
    """The bytes are not a valid pickle."""


class Truncated(Malformed):
    """The pickle ends before its STOP opcode."""
