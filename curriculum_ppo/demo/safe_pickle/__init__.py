"""A pure-Python unpickler for untrusted files: plain data and plain numeric numpy arrays, nothing else.

:func:`pickle.load` runs whatever callables a file names, and even a restricted
:class:`pickle.Unpickler` that only allows numpy's own pickle hooks is unsafe:
``numpy.dtype`` plus ``__setstate__`` can build an *object* dtype whose flags
say "no Python objects here", after which numpy reads bytes from the file as
object pointers (a crafted demo crashed the importer with SIGSEGV that way).
So this module never hands a byte of the file to numpy's or Python's
unpickling machinery. It parses the opcode stream itself (protocols 0 to 5,
the opcodes of :mod:`pickletools`) and builds every value with its own code:

* numbers, ``None``, booleans, ``str``, ``bytes``, ``bytearray``, and lists,
  tuples, dicts, sets and frozensets of them;
* numpy arrays, from the three records numpy writes: ``_reconstruct`` followed
  by the state ``(version, shape, dtype, fortran, raw bytes)``, protocol 5's
  ``_frombuffer(buffer, dtype, shape, order)``, and scalars
  ``scalar(dtype, raw bytes)``. The array is rebuilt here from (shape, one of
  :data:`ALLOWED_DTYPES`, raw bytes) with ``np.frombuffer(...).reshape(...)``
  and copied; the dtype is one that *this* code made with ``np.dtype(name)``
  after checking that the file's dtype record equals numpy's standard one for
  that name. Object, string, datetime, structured and subarray dtypes, and any
  state that differs from the standard one (other flags, fields, names), are
  refused;
* ``_codecs.encode(text, 'latin1')``, ``bytes()`` and ``bytearray(...)``, the
  helpers Python uses for bytes at protocols 0 to 2.

Every global is looked up in :data:`ALLOWED_GLOBALS` and becomes an inert
marker; anything else (``os.system``, ``builtins.getattr``, ``copyreg``...) is
refused when it is named, before anything could use it. Nothing from the file
is ever called, imported or looked up as an attribute.

**Resource limits** (:class:`Limits`), checked *before* the memory is taken:

* an array whose shape needs more (or fewer) bytes than the record carries is
  refused, so a claimed shape can never allocate more than the file holds;
* the memory the load builds up is estimated as it goes (object sizes of
  CPython 3 and numpy: see :mod:`.sizes`) and the load stops when it would
  exceed ``memory_factor`` times the file's size plus ``memory_floor``;
* nesting is limited (``max_depth``) for marks while parsing, for containers
  as they are built, and once more on the finished value, which must also be
  free of cycles. The parser is a loop with explicit stacks, so no input can
  exhaust the C stack;
* dict keys and set elements must be strings, bytes, ``None``, booleans,
  floats, numpy scalars or integers of at most 64 bits. Strings and bytes have
  randomized, cached hashes; the others (whose hashes an attacker can make
  collide, turning dict inserts quadratic) are limited in number.

``memory_factor`` is calibrated on the layout of the atari-reset demos; the
reasoning is in the comment above :class:`Limits` (:mod:`.limits`).
:func:`loads_with_stats` reports the memory a load accounted, so the factor
can be checked on the real files (``scripts/atari_reset_manifest.py`` records
it per file).

**Layout.** :mod:`.loader` holds one load's state (the byte stream, the
stacks) and the loop, which dispatches each opcode to a small handler in
:mod:`.opcodes` (grouped by kind: framing, constants, containers, stack and
memo, globals and objects). REDUCE and BUILD hand numpy's records to
:mod:`.numpy_records` and Python's bytes helpers to :mod:`.bytes_records`.
:mod:`.limits` holds the limits and their checks, :mod:`.sizes` the object
sizes they account, :mod:`.allow_list` the dtypes and globals, :mod:`.markers`
the stand-ins for globals and half-built records, :mod:`.memo` the memo, and
:mod:`.result` the final walk over the finished value.
"""

from __future__ import annotations

from curriculum_ppo.demo.safe_pickle.allow_list import ALLOWED_DTYPES, ALLOWED_GLOBALS
from curriculum_ppo.demo.safe_pickle.errors import Malformed, Refused, Truncated, UntrustedPickleError
from curriculum_ppo.demo.safe_pickle.limits import Limits, LoadStats
from curriculum_ppo.demo.safe_pickle.loader import Loader

__all__ = ["ALLOWED_DTYPES", "ALLOWED_GLOBALS", "Limits", "LoadStats", "Malformed", "Refused", "Truncated",
           "UntrustedPickleError", "loads", "loads_with_stats"]


def loads_with_stats(data: bytes, limits: Limits = Limits()) -> tuple[object, LoadStats]:
    """Load ``data`` (see the module docstring); raises :class:`UntrustedPickleError` with a one-line reason."""
    loader = Loader(data, limits)
    value = loader.load()
    return value, loader.stats()


def loads(data: bytes, limits: Limits = Limits()):
    """Like :func:`pickle.loads` for plain data and plain numeric numpy arrays; nothing in ``data`` runs."""
    return loads_with_stats(data, limits)[0]
