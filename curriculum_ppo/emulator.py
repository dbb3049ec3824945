"""The Atari emulator at frame level: one ``ALEInterface`` per game, frameskip 1.

Everything that touches ale-py directly lives here, so the demo code, the
agent's Gymnasium environment and the tests all create the emulator the same
way: frameskip 1, no sticky actions, a fixed seed, the game's *minimal* action
set. Demos are frame-exact because of these settings.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from curriculum_ppo.errors import UserError

try:  # ale-py >= 0.9
    from ale_py import ALEInterface, LoggerMode, roms
except ImportError as exc:  # pragma: no cover - dependency missing entirely
    raise ImportError("ale-py is required: pip install ale-py") from exc

ALEInterface.setLoggerMode(LoggerMode.Error)

RAM_SIZE = 128
SCREEN_SHAPE = (210, 160, 3)


def _snake_case(name: str) -> str:
    name = re.sub(r"^ALE/", "", name)
    name = re.sub(r"(NoFrameskip)?-v\d+$", "", name)
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return name.replace("-", "_").lower()


@lru_cache(maxsize=None)
def available_games() -> tuple[str, ...]:
    """ROM ids bundled with ale-py (snake_case, e.g. ``montezuma_revenge``)."""
    return tuple(sorted(roms.get_all_rom_ids()))


def resolve_game(name: str) -> str:
    """Accept ``MontezumaRevenge``, ``montezuma_revenge`` or ``ALE/MontezumaRevenge-v5``.

    Returns the ale-py ROM id; raises :class:`UserError` naming close matches.
    """
    game = _snake_case(name.strip())
    games = available_games()
    if game in games:
        return game
    close = [g for g in games if game[:4] and g.startswith(game[:4])]
    hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
    raise UserError(f"unknown game '{name}'{hint}; ale-py bundles {len(games)} games, e.g. montezuma_revenge, pitfall, private_eye")


def display_name(game: str) -> str:
    """``montezuma_revenge`` -> ``MontezumaRevenge`` (for file names and titles)."""
    return "".join(part.capitalize() for part in game.split("_"))


def rom_path(game: str) -> Path:
    return Path(roms.get_rom_path(resolve_game(game)))


@lru_cache(maxsize=None)
def rom_md5(game: str) -> str:
    """MD5 of the installed ROM: a demo only replays on the exact same ROM."""
    return hashlib.md5(rom_path(game).read_bytes()).hexdigest()


def ale_version() -> str:
    import ale_py

    return getattr(ale_py, "__version__", "unknown")


@dataclass(frozen=True)
class EmulatorSettings:
    """What must be identical for a recorded demo to replay frame-exactly."""

    game: str
    mode: int | None = None
    difficulty: int | None = None
    seed: int = 0
    repeat_action_probability: float = 0.0


class Emulator:
    """A thin, frame-level wrapper around :class:`ale_py.ALEInterface`.

    Actions are *indices into the game's minimal action set*, which is what demo
    files store and what the policy outputs. ``save_state``/``restore_state``
    include the emulator's RNG so a restored game continues bit-identically.
    """

    def __init__(self, settings: EmulatorSettings | str):
        if isinstance(settings, str):
            settings = EmulatorSettings(game=settings)
        game = resolve_game(settings.game)
        self.settings = EmulatorSettings(game, settings.mode, settings.difficulty, settings.seed,
                                         settings.repeat_action_probability)
        ale = ALEInterface()
        ale.setInt("random_seed", int(settings.seed))
        ale.setFloat("repeat_action_probability", float(settings.repeat_action_probability))
        ale.setInt("frame_skip", 1)
        ale.loadROM(str(rom_path(game)))
        if settings.mode is not None:
            ale.setMode(int(settings.mode))
        if settings.difficulty is not None:
            ale.setDifficulty(int(settings.difficulty))
        ale.reset_game()
        self.ale = ale
        self.game = game
        self.actions = list(ale.getMinimalActionSet())
        self.action_names = [a.name for a in self.actions]
        self._ram = np.empty(RAM_SIZE, dtype=np.uint8)

    # -- stepping -----------------------------------------------------------------
    @property
    def num_actions(self) -> int:
        return len(self.actions)

    def reset(self) -> None:
        self.ale.reset_game()

    def step(self, action: int) -> float:
        """Advance one frame with minimal-set action index ``action``; return the reward."""
        return float(self.ale.act(self.actions[action]))

    def lives(self) -> int:
        return int(self.ale.lives())

    def game_over(self) -> bool:
        return bool(self.ale.game_over())

    def ram(self) -> np.ndarray:
        self.ale.getRAM(self._ram)
        return self._ram.copy()

    def screen_rgb(self) -> np.ndarray:
        return self.ale.getScreenRGB()

    def screen_grayscale(self, out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            return self.ale.getScreenGrayscale()
        self.ale.getScreenGrayscale(out)
        return out

    def frame_number(self) -> int:
        return int(self.ale.getEpisodeFrameNumber())

    # -- states -------------------------------------------------------------------
    def save_state(self) -> bytes:
        """Serialized emulator state including its RNG (about 14 KB)."""
        return bytes(self.ale.cloneState(include_rng=True).serialize())

    def restore_state(self, state: bytes) -> None:
        """Restore a state from :meth:`save_state`; bytes ALE cannot parse are a :class:`UserError`.

        The screen buffer is not redrawn until the next frame is emulated (ALE
        issue #417); callers that need pixels step at least one frame after.
        """
        from ale_py import ALEState

        try:
            self.ale.restoreState(ALEState(bytes(state)) if not isinstance(state, ALEState) else state)
        except (RuntimeError, SystemError, ValueError, TypeError):  # ALE's deserializer refused the bytes
            raise UserError("the emulator cannot restore this saved state: it is damaged, or was saved by "
                            "another emulator") from None

    def action_index(self, name: str) -> int:
        """Minimal-set index of an action name such as ``RIGHTFIRE``."""
        key = name.strip().upper()
        try:
            return self.action_names.index(key)
        except ValueError:
            raise UserError(f"action '{name}' is not in {display_name(self.game)}'s action set: "
                            f"{' '.join(self.action_names)}") from None
