"""Reading and writing demo files (see :mod:`curriculum_ppo.demo.schema`).

:class:`Demo` holds a whole demo in memory (a 50,000-frame demo is ~40 MB of
states and RAM) so worker processes can restore any frame without touching the
file again. :class:`DemoBuilder` records one frame at a time from a live
emulator and supports truncation (the recorder's rewind).

All reading of demo files goes through
:func:`~curriculum_ppo.demo.reader.read_demo_file`; nothing keeps an HDF5
object open after it returns, so no read happens later, outside its checks.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from curriculum_ppo import __version__
from curriculum_ppo.atomic import atomic_path
from curriculum_ppo.demo import schema
from curriculum_ppo.demo.reader import read_demo_file
from curriculum_ppo.emulator import Emulator, EmulatorSettings, ale_version, resolve_game, rom_md5
from curriculum_ppo.errors import UserError


@dataclass
class Demo:
    """One demonstration in memory. ``len(demo)`` is the number of actions N."""

    game: str
    action_set: list[str]
    actions: np.ndarray  # uint8 [N]
    rewards: np.ndarray  # float32 [N]
    lives: np.ndarray  # uint8 [N+1]
    ram: np.ndarray  # uint8 [N+1, 128]
    state_frames: np.ndarray  # int64 [K]
    states: list[bytes]  # K serialized states
    attrs: dict = field(default_factory=dict)
    frames: np.ndarray | None = None  # uint8 [N+1, 210, 160, 3] or None
    path: Path | None = None
    frames_in_file: bool = False  # the file holds /frames (whether or not they were loaded)

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @property
    def total_return(self) -> float:
        return float(self.rewards.sum(dtype=np.float64))

    @property
    def cumulative_return(self) -> np.ndarray:
        """``c[t]`` = reward collected before frame t (length N+1, ``c[0] = 0``)."""
        return np.concatenate([[0.0], np.cumsum(self.rewards, dtype=np.float64)])

    @property
    def returns_to_go(self) -> np.ndarray:
        """``g[t]`` = reward the demo collects from frame t to its end (length N+1)."""
        c = self.cumulative_return
        return c[-1] - c

    def reward_events(self) -> list[tuple[int, float]]:
        """(frame, reward) of every nonzero reward; the reward is received on frame+1."""
        idx = np.flatnonzero(self.rewards)
        return [(int(t), float(self.rewards[t])) for t in idx]

    def origin(self) -> str | None:
        """How frame 0 came about: the ``source`` attribute, or for a cut, the source of the demo it was cut from."""
        source = self.attrs.get("source")
        if source == "cut":
            try:
                return json.loads(self.attrs.get("source_detail") or "{}").get("parent_source")
            except (json.JSONDecodeError, AttributeError):
                return None
        return source

    def starts_at_game_reset(self) -> bool:
        """Frame 0 is the game's reset (a recorded or scripted demo, or a cut of one), so resetting an emulator
        draws its screen; ALE does not redraw the screen on restoreState. An imported demo's frame 0 may lie
        after alignment NOOPs, so only its restored state is right there."""
        return self.origin() in ("recorded", "scripted")

    def life_losses(self) -> list[int]:
        """Frames t at which lives dropped (lives[t] < lives[t-1])."""
        return [int(t) for t in np.flatnonzero(np.diff(self.lives.astype(np.int16)) < 0) + 1]

    @property
    def settings(self) -> EmulatorSettings:
        return EmulatorSettings(self.game, self.attrs.get("mode"), self.attrs.get("difficulty"),
                                int(self.attrs.get("seed", 0)), 0.0)

    def make_emulator(self) -> Emulator:
        """A fresh emulator configured exactly like the one that recorded this demo."""
        self.check_rom()
        return Emulator(self.settings)

    def check_rom(self) -> None:
        expected = self.attrs.get("rom_md5")
        installed = rom_md5(self.game)
        if expected and expected != installed:
            name = self.path or "the demo"
            raise UserError(f"{name} was recorded on a {self.game} ROM with MD5 {expected}, "
                            f"but the installed ROM has MD5 {installed}; it cannot be replayed")

    def state_index(self, t: int) -> int:
        """Index of the last saved state at or before frame t."""
        return int(np.searchsorted(self.state_frames, t, side="right") - 1)

    def restore(self, emulator: Emulator, t: int) -> None:
        """Put ``emulator`` at frame t: restore the nearest saved state, replay the gap."""
        if not 0 <= t <= len(self):
            raise IndexError(f"frame {t} outside demo of {len(self)} frames")
        k = self.state_index(t)
        self.restore_saved(emulator, k)
        for a in self.actions[int(self.state_frames[k]):t]:
            emulator.step(int(a))

    def restore_saved(self, emulator: Emulator, k: int) -> None:
        """Restore saved state ``k`` (at frame ``state_frames[k]``); one that ALE refuses is a UserError."""
        try:
            emulator.restore_state(self.states[k])
        except UserError as exc:
            raise UserError(f"{self.path or 'the demo'}: saved state {k} (frame {int(self.state_frames[k])}): "
                            f"{exc}") from None


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(type(o))


def _write_attr(f: h5py.File, key: str, value) -> None:
    """Strings as fixed-length UTF-8 (kept in the object header, not in HDF5's unchecksummed global heap)."""
    if isinstance(value, str) or (isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value)):
        encoded = [value.encode()] if isinstance(value, str) else [v.encode() for v in value]
        dtype = h5py.string_dtype("utf-8", max(1, *map(len, encoded)))
        f.attrs.create(key, np.array(encoded[0] if isinstance(value, str) else encoded, dtype=dtype))
    else:
        f.attrs[key] = value


def save_demo(demo: Demo, path: str | os.PathLike, *, source: str | None = None, detail: dict | None = None) -> Path:
    """Write ``demo`` atomically: a temp file in the same directory, renamed when complete."""
    path = Path(path)
    n = len(demo)
    attrs = dict(demo.attrs)
    attrs.update({
        "format": schema.FORMAT_NAME,
        "schema_version": schema.SCHEMA_VERSION,
        "game": demo.game,
        "action_set": list(demo.action_set),
        "frameskip": 1,
        "repeat_action_probability": 0.0,
        "num_frames": n,
        "total_return": demo.total_return,
        "writer_version": __version__,
    })
    attrs.setdefault("rom_md5", rom_md5(demo.game))
    attrs.setdefault("ale_py_version", ale_version())
    attrs.setdefault("mode", 0)
    attrs.setdefault("difficulty", 0)
    attrs.setdefault("seed", 0)
    attrs.setdefault("state_interval", schema.DEFAULT_STATE_INTERVAL)
    attrs.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    if source is not None:
        attrs["source"] = source
    attrs.setdefault("source", "recorded")
    if detail is not None:
        attrs["source_detail"] = json.dumps(detail, default=_json_default)
    attrs.setdefault("source_detail", "{}")
    if attrs["source"] not in schema.SOURCES:
        raise ValueError(f"source must be one of {schema.SOURCES}")

    lengths = np.array([len(s) for s in demo.states], dtype=np.int32)
    packed = np.zeros((len(demo.states), int(lengths.max())), dtype=np.uint8)
    for i, s in enumerate(demo.states):
        packed[i, : len(s)] = np.frombuffer(s, dtype=np.uint8)

    # HDF5 is built in memory and written with plain Python I/O: when libhdf5 itself hits a
    # write error (disk full, EFBIG) it leaves the file half-closed and h5py can segfault.
    # Damage is detectable everywhere: every dataset carries Fletcher-32 checksums, the 1.10 file
    # format checksums its metadata, and strings live in the (checksummed) object header.
    buffer = io.BytesIO()
    checked = {"fletcher32": True}
    with atomic_path(path) as tmp:
        with h5py.File(buffer, "w", libver=("v110", "latest")) as f:
            for key, value in attrs.items():
                _write_attr(f, key, value)
            f.create_dataset("actions", data=demo.actions.astype(np.uint8), compression="gzip", **checked)
            f.create_dataset("rewards", data=demo.rewards.astype(np.float32), compression="gzip", **checked)
            f.create_dataset("lives", data=demo.lives.astype(np.uint8), compression="gzip", **checked)
            f.create_dataset("ram", data=demo.ram.astype(np.uint8), compression="gzip",
                             chunks=(min(n + 1, 4096), 128), **checked)
            f.create_dataset("states", data=packed, compression="gzip", compression_opts=6,
                             chunks=(min(len(packed), 16), packed.shape[1]), **checked)
            f.create_dataset("state_lengths", data=lengths, **checked)
            f.create_dataset("state_frames", data=demo.state_frames.astype(np.int64), **checked)
            if demo.frames is not None:
                f.create_dataset("frames", data=demo.frames, compression="gzip",
                                 chunks=(1,) + demo.frames.shape[1:], **checked)
        tmp.write_bytes(buffer.getbuffer())
    demo.path = path
    demo.attrs = attrs
    return path


def load_demo(path: str | os.PathLike, *, load_frames: bool = False, check_rom: bool = True) -> Demo:
    """Read and validate a demo file; every problem becomes a one-line :class:`UserError`."""
    path = Path(path)
    contents = read_demo_file(path, schema.DATASETS + (("frames",) if load_frames else ()))
    attrs, a = contents.attrs, contents.arrays
    actions, lengths, packed = a["actions"], a["state_lengths"], a["states"]
    try:
        schema.validate(attrs, contents.shapes, int(actions.max()) if actions.size else None,
                        a["state_frames"], dtypes=contents.dtypes)
        schema.check_states(lengths, packed)
    except schema.SchemaError as exc:
        raise UserError(f"{path}: {exc}") from None
    demo = Demo(
        game=attrs["game"],
        action_set=list(attrs["action_set"]),
        actions=actions,
        rewards=a["rewards"],
        lives=a["lives"],
        ram=a["ram"],
        state_frames=a["state_frames"],
        states=[packed[i, : lengths[i]].tobytes() for i in range(len(lengths))],
        attrs=attrs,
        frames=a.get("frames"),
        path=path,
        frames_in_file="frames" in contents.shapes,
    )
    try:
        demo.game = resolve_game(demo.game)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    if check_rom:
        demo.check_rom()
    return demo


class DemoBuilder:
    """Records a demo frame by frame from a live :class:`Emulator`.

    The recorder, the ``--actions`` replayer and the importer all go through
    :meth:`step`, so every demo is produced by the same code.
    """

    def __init__(self, emulator: Emulator, state_interval: int = schema.DEFAULT_STATE_INTERVAL,
                 store_frames: bool = False):
        self.emulator = emulator
        self.state_interval = int(state_interval)
        self.store_frames = store_frames
        self.actions: list[int] = []
        self.rewards: list[float] = []
        self.lives: list[int] = [emulator.lives()]
        self.ram: list[np.ndarray] = [emulator.ram()]
        self.states: dict[int, bytes] = {0: emulator.save_state()}
        self.frames: list[np.ndarray] = [emulator.screen_rgb()] if store_frames else []

    def __len__(self) -> int:
        return len(self.actions)

    @classmethod
    def from_demo(cls, demo: Demo, emulator: Emulator, store_frames: bool = False) -> "DemoBuilder":
        """Continue an existing demo (``record --resume``): the emulator ends up at its last frame."""
        demo.restore(emulator, len(demo))
        builder = cls.__new__(cls)
        builder.emulator = emulator
        builder.state_interval = int(demo.attrs.get("state_interval", schema.DEFAULT_STATE_INTERVAL))
        builder.store_frames = store_frames and demo.frames is not None
        builder.actions = [int(a) for a in demo.actions]
        builder.rewards = [float(r) for r in demo.rewards]
        builder.lives = [int(v) for v in demo.lives]
        builder.ram = list(demo.ram)
        builder.states = {int(f): s for f, s in zip(demo.state_frames, demo.states)}
        builder.frames = list(demo.frames) if builder.store_frames else []
        return builder

    @property
    def total_return(self) -> float:
        return float(sum(self.rewards))

    def step(self, action: int) -> float:
        if not 0 <= action < self.emulator.num_actions:
            raise UserError(f"action index {action} out of range 0..{self.emulator.num_actions - 1}")
        reward = self.emulator.step(action)
        self.actions.append(int(action))
        self.rewards.append(reward)
        self.lives.append(self.emulator.lives())
        self.ram.append(self.emulator.ram())
        if self.store_frames:
            self.frames.append(self.emulator.screen_rgb())
        t = len(self.actions)
        if t % self.state_interval == 0:
            self.states[t] = self.emulator.save_state()
        return reward

    def truncate(self, t: int) -> None:
        """Drop frames t.. and put the emulator back at frame t (the recorder's rewind)."""
        t = max(0, min(int(t), len(self.actions)))
        del self.actions[t:], self.rewards[t:], self.lives[t + 1:], self.ram[t + 1:]
        if self.store_frames:
            del self.frames[t + 1:]
        self.states = {f: s for f, s in self.states.items() if f <= t}
        base = max(self.states)
        self.emulator.restore_state(self.states[base])
        for a in self.actions[base:t]:
            self.emulator.step(a)

    def build(self, attrs: dict | None = None) -> Demo:
        """Freeze into a :class:`Demo`, saving a final state at the last frame too."""
        n = len(self.actions)
        states = dict(self.states)
        if n not in states:
            states[n] = self.emulator.save_state()
        frames = sorted(states)
        emu = self.emulator
        meta = {
            "game": emu.game,
            "rom_md5": rom_md5(emu.game),
            "ale_py_version": ale_version(),
            "mode": int(emu.ale.getMode()) if hasattr(emu.ale, "getMode") else int(emu.settings.mode or 0),
            "difficulty": int(emu.ale.getDifficulty()) if hasattr(emu.ale, "getDifficulty") else int(emu.settings.difficulty or 0),
            "seed": int(emu.settings.seed),
            "state_interval": self.state_interval,
        }
        meta.update(attrs or {})
        return Demo(
            game=emu.game,
            action_set=list(emu.action_names),
            actions=np.asarray(self.actions, dtype=np.uint8),
            rewards=np.asarray(self.rewards, dtype=np.float32),
            lives=np.asarray(self.lives, dtype=np.uint8),
            ram=np.asarray(self.ram, dtype=np.uint8).reshape(-1, 128),
            state_frames=np.asarray(frames, dtype=np.int64),
            states=[states[f] for f in frames],
            attrs=meta,
            frames=np.asarray(self.frames, dtype=np.uint8) if self.store_frames else None,
        )
