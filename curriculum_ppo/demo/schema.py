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
    /state_frames  int64 [K]        frame of each state: 0, I, 2I, ... and always N
    /frames    uint8   [N+1,210,160,3]  optional RGB screens (gzip), frame t as shown before action t

Consecutive states differ in a few dozen bytes, so ``/states`` is stored in
row chunks with gzip: deflate finds the previous row inside its 32 KB window
and a state costs well under 1 KB on disk.

Any frame t is reached by restoring the last state at or before t and
replaying ``actions[state_frame:t]`` (see :meth:`Demo.restore`).
"""

from __future__ import annotations

from collections.abc import Mapping

FORMAT_NAME = "curriculum_ppo.demo"
SCHEMA_VERSION = 1
DEFAULT_STATE_INTERVAL = 10
SOURCES = ("recorded", "scripted", "imported")

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
    "source": ((str,), "'recorded' (played by a person), 'scripted' (--actions file) or 'imported'"),
    "source_detail": ((str,), "JSON: script name, imported file, NOOP alignment, ..."),
    "created": ((str,), "ISO-8601 UTC creation time"),
    "writer_version": ((str,), "curriculum_ppo version that wrote the file"),
}

DATASETS = ("actions", "rewards", "lives", "ram", "states", "state_lengths", "state_frames")
OPTIONAL_DATASETS = ("frames",)


class SchemaError(ValueError):
    """The file is a demo, but its contents are inconsistent."""


def check_version(attrs: Mapping) -> None:
    """Refuse foreign HDF5 files and other schema versions with a precise reason."""
    if attrs.get("format") != FORMAT_NAME:
        raise SchemaError(f"it is an HDF5 file but not a curriculum_ppo demo (no format='{FORMAT_NAME}' attribute)")
    version = attrs.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaError(f"it has demo schema version {version}; this curriculum_ppo reads version {SCHEMA_VERSION}")


def validate(attrs: Mapping, shapes: Mapping[str, tuple[int, ...]], max_action: int | None = None,
             state_frames=None) -> None:
    """Check attributes and dataset shapes agree with each other (pure; no file access)."""
    check_version(attrs)
    missing = [k for k in ATTRIBUTES if k not in attrs]
    if missing:
        raise SchemaError(f"missing attributes: {', '.join(missing)}")
    missing = [k for k in DATASETS if k not in shapes]
    if missing:
        raise SchemaError(f"missing datasets: {', '.join(missing)}")
    n = int(attrs["num_frames"])
    expected = {"actions": (n,), "rewards": (n,), "lives": (n + 1,), "ram": (n + 1, 128)}
    for name, shape in expected.items():
        if tuple(shapes[name]) != shape:
            raise SchemaError(f"/{name} has shape {tuple(shapes[name])}, expected {shape} for {n} frames")
    k = shapes["states"][0]
    if shapes["state_lengths"] != (k,) or shapes["state_frames"] != (k,):
        raise SchemaError("/states, /state_lengths and /state_frames disagree in length")
    if "frames" in shapes and shapes["frames"][0] != n + 1:
        raise SchemaError(f"/frames holds {shapes['frames'][0]} screens, expected {n + 1}")
    if int(attrs["frameskip"]) != 1:
        raise SchemaError(f"frameskip is {attrs['frameskip']}; demos must be recorded at frameskip 1")
    n_actions = len(attrs["action_set"])
    if max_action is not None and max_action >= n_actions:
        raise SchemaError(f"action index {max_action} is out of range for the {n_actions}-action set")
    if state_frames is not None:
        frames = list(state_frames)
        if not frames or frames[0] != 0:
            raise SchemaError("there is no saved state at frame 0")
        if any(b <= a for a, b in zip(frames, frames[1:])) or frames[-1] > n:
            raise SchemaError("/state_frames must increase and lie within the demo")
