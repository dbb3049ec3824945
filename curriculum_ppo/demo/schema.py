"""The demo file schema (version 1), as data, plus pure validation.

A demo is one playthrough recorded at **frameskip 1** with no sticky actions.
"Frame t" means the emulator *before* action ``t`` is applied; frame 0 is the
start of the demo and frame N the end. Layout (all readable with plain h5py)::

    /actions   uint8   [N]          index into attrs["action_set"] (the game's minimal set)
    /rewards   float32 [N]          reward returned by action t
    /lives     uint8   [N+1]        lives at frame t
    /ram       uint8   [N+1, 128]   console RAM at frame t
    /states    uint8   [K, L]       serialized emulator states (with RNG), zero-padded to L
    /state_lengths int32 [K]        true byte length of each state
    /state_frames  int64 [K]        frame of each state: 0, I, 2I, ... and always N (plus the
                                    earlier ends of a recording that was continued or rewound)
    /frames    uint8   [N+1,210,160,3]  optional RGB screens (gzip), frame t as shown before action t

Consecutive states differ in a few dozen bytes, so ``/states`` is stored in
row chunks with gzip: deflate finds the previous row inside its 32 KB window
and a state costs well under 1 KB on disk.

Any frame t is reached by restoring the last state at or before t and
replaying ``actions[state_frame:t]`` (see :meth:`Demo.restore`).

Files carry no checksums of their own (deflate's catches damage to the
compressed datasets), so :func:`validate`, :func:`check_state_frames` and
:func:`check_states` also check what the layout implies about the uncompressed
``/state_lengths`` and ``/state_frames``: a damaged file is refused at load
instead of diverging, or crashing the emulator, later.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

FORMAT_NAME = "curriculum_ppo.demo"
SCHEMA_VERSION = 1
DEFAULT_STATE_INTERVAL = 10
SOURCES = ("recorded", "scripted", "imported", "cut")

#: attribute -> (python type(s), meaning). Written on the file's root group.
ATTRIBUTES: dict[str, tuple[tuple[type, ...], str]] = {
    "format": ((str,), f"always '{FORMAT_NAME}': tells our files from other HDF5 files"),
    "schema_version": ((int,), "layout version; readers refuse versions they do not know"),
    "game": ((str,), "ale-py ROM id, e.g. 'montezuma_revenge'"),
    "rom_md5": ((str,), "MD5 of the ROM the demo was recorded on; replay needs the same ROM"),
    "ale_py_version": ((str,), "ale-py version used to record"),
    "action_set": ((list,), "names of the game's minimal action set; /actions index into it"),
    "mode": ((int,), "game mode (ALE setMode)"),
    "difficulty": ((int,), "game difficulty (ALE setDifficulty)"),
    "seed": ((int,), "ALE random_seed used when recording"),
    "frameskip": ((int,), "always 1: one action per emulator frame"),
    "repeat_action_probability": ((float,), "always 0.0: no sticky actions"),
    "num_frames": ((int,), "N, the number of actions"),
    "total_return": ((float,), "sum of /rewards"),
    "state_interval": ((int,), "I, frames between saved states"),
    "source": ((str,), "'recorded' (played by a person), 'scripted' (--actions file), 'imported' or 'cut' "
                       "(the first frames of another demo)"),
    "source_detail": ((str,), "JSON: script name, imported file, NOOP alignment, ..."),
    "created": ((str,), "ISO-8601 UTC creation time"),
    "writer_version": ((str,), "curriculum_ppo version that wrote the file"),
}

DATASETS = ("actions", "rewards", "lives", "ram", "states", "state_lengths", "state_frames")
OPTIONAL_DATASETS = ("frames",)
#: dataset -> element type. Only these native types are read: a file that stores another
#: type (or a byte order other than this machine's) is refused instead of converted.
DATASET_DTYPES: dict[str, np.dtype] = {
    "actions": np.dtype(np.uint8), "rewards": np.dtype(np.float32), "lives": np.dtype(np.uint8),
    "ram": np.dtype(np.uint8), "states": np.dtype(np.uint8), "state_lengths": np.dtype(np.int32),
    "state_frames": np.dtype(np.int64), "frames": np.dtype(np.uint8),
}
SCREEN_SHAPE = (210, 160, 3)


class SchemaError(ValueError):
    """The file is a demo, but its contents are inconsistent."""


def check_version(attrs: Mapping) -> None:
    """Refuse foreign HDF5 files and other schema versions with a precise reason."""
    if attrs.get("format") != FORMAT_NAME:
        raise SchemaError(f"it is an HDF5 file but not a curriculum_ppo demo (no format='{FORMAT_NAME}' attribute)")
    version = attrs.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaError(f"it has demo schema version {version}; this curriculum_ppo reads version {SCHEMA_VERSION}")


def _type_ok(value, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # a bool is an int to Python, never to a demo
        return bool in types
    if float in types and isinstance(value, int):
        return True
    return isinstance(value, types)


def _check_attribute_types(attrs: Mapping) -> None:
    for key, (types, _meaning) in ATTRIBUTES.items():
        value = attrs[key]
        if not _type_ok(value, types):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise SchemaError(f"attribute '{key}' is {type(value).__name__} {shown}, "
                              f"expected {' or '.join(t.__name__ for t in types)}")
    names = attrs["action_set"]
    if not names or not all(isinstance(name, str) for name in names):
        raise SchemaError("attribute 'action_set' must be a non-empty list of action names")


def validate(attrs: Mapping, shapes: Mapping[str, tuple[int, ...]], max_action: int | None = None,
             state_frames=None, dtypes: Mapping | None = None) -> None:
    """Check attributes, dataset shapes and types agree with each other (pure; no file access).

    Called twice by the reader: with shapes and ``dtypes`` alone before any array is read (so a
    file that claims impossible sizes is refused before memory is allocated for it), then with
    the contents (``max_action``, ``state_frames``) once they are read.
    """
    check_version(attrs)
    missing = [k for k in ATTRIBUTES if k not in attrs]
    if missing:
        raise SchemaError(f"missing attributes: {', '.join(missing)}")
    _check_attribute_types(attrs)
    missing = [k for k in DATASETS if k not in shapes]
    if missing:
        raise SchemaError(f"missing datasets: {', '.join(missing)}")
    if dtypes is not None:
        for name, expected in DATASET_DTYPES.items():
            if name in dtypes and np.dtype(dtypes[name]) != expected:
                raise SchemaError(f"/{name} stores {np.dtype(dtypes[name])} values, expected {expected}")
    n = attrs["num_frames"]
    if n < 0:
        raise SchemaError(f"num_frames is {n}")
    expected = {"actions": (n,), "rewards": (n,), "lives": (n + 1,), "ram": (n + 1, 128)}
    for name, shape in expected.items():
        if tuple(shapes[name]) != shape:
            raise SchemaError(f"/{name} has shape {tuple(shapes[name])}, expected {shape} for {n} frames")
    if len(shapes["states"]) != 2 or len(shapes["state_lengths"]) != 1 or len(shapes["state_frames"]) != 1:
        raise SchemaError("/states must be a table of states and /state_lengths, /state_frames lists")
    k = shapes["states"][0]
    if tuple(shapes["state_lengths"]) != (k,) or tuple(shapes["state_frames"]) != (k,):
        raise SchemaError("/states, /state_lengths and /state_frames disagree in length")
    if "frames" in shapes and tuple(shapes["frames"]) != (n + 1, *SCREEN_SHAPE):
        raise SchemaError(f"/frames has shape {tuple(shapes['frames'])}, expected {(n + 1, *SCREEN_SHAPE)}")
    if attrs["frameskip"] != 1:
        raise SchemaError(f"frameskip is {attrs['frameskip']}; demos must be recorded at frameskip 1")
    if attrs["repeat_action_probability"] != 0.0:
        raise SchemaError(f"repeat_action_probability is {attrs['repeat_action_probability']}; "
                          "demos are recorded without sticky actions")
    interval = attrs["state_interval"]
    if interval < 1:
        raise SchemaError(f"state_interval is {interval}; it must be at least 1")
    n_actions = len(attrs["action_set"])
    if max_action is not None and max_action >= n_actions:
        raise SchemaError(f"action index {max_action} is out of range for the {n_actions}-action set")
    if state_frames is not None:
        check_state_frames(state_frames, n, interval)


def check_state_frames(state_frames, n: int, interval: int) -> None:
    """Saved states lie at frame 0, every ``interval`` frames, at the end ``n``, and nowhere else but
    at earlier ends (a recording continued with ``--resume``, or rewound, keeps its old last state)."""
    frames = np.asarray(state_frames, dtype=np.int64)
    if not frames.size or frames[0] != 0:
        raise SchemaError("there is no saved state at frame 0")
    if np.any(np.diff(frames) <= 0) or frames[-1] > n:
        raise SchemaError("/state_frames must increase and lie within the demo")
    if frames[-1] != n:
        raise SchemaError(f"there is no saved state at the last frame ({n})")
    grid = np.arange(0, n + 1, interval, dtype=np.int64)
    absent = grid[~np.isin(grid, frames)]
    if absent.size:
        raise SchemaError(f"there is no saved state at frame {int(absent[0])} "
                          f"(states are saved every {interval} frames)")


def check_states(lengths, packed) -> None:
    """``/states`` rows hold each state's bytes and zeros after them, and the widest state fills its row.

    These are the only checks a file without checksums allows on its uncompressed ``/state_lengths``:
    a changed length then shows as a cut-off state or as padding that is not zero.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    width = packed.shape[1]
    if lengths.size == 0:
        return
    bad = np.flatnonzero((lengths < 1) | (lengths > width))
    if bad.size:
        k = int(bad[0])
        raise SchemaError(f"saved state {k} has length {int(lengths[k])}, outside 1..{width}")
    if int(lengths.max()) != width:
        raise SchemaError(f"/states rows are {width} bytes wide but the longest state is {int(lengths.max())}")
    for k, length in enumerate(lengths.tolist()):
        if length < width and packed[k, length:].any():
            raise SchemaError(f"saved state {k} has nonzero bytes after its recorded length {length}")
