"""The agent's view of an Atari game, as one Gymnasium ``Env``.

Standard Atari preprocessing (frameskip 4 with a max over the last two frames,
84x84 grayscale or 105x80 RGB, a stack of 4 frames, clipped rewards for the
learner while the raw score is tracked, life loss ends a training episode) is
done inside one class instead of a chain of wrappers: the workers step
thousands of these per second and each wrapper layer costs a Python call and
an array copy per step.

Episodes can start from a demo frame (``reset(options={"start_frame": t})``).
The frame stack is then filled from the demo's own frames just before ``t``,
and optionally ``warmup_steps`` agent steps replay the demo before control is
handed over: a recurrent policy's memory gets warmed up on them, and the learner
masks them out. ``info["warmup"]``, returned with every observation by ``reset``
and ``step``, says whether the *next* step from that observation is a replayed
one (the agent's action ignored): with ``k`` warm-up steps exactly ``k``
observations carry it, and the observation at the start frame, the agent's
first real decision, does not. The replayed steps themselves return
``info["replayed"] = True``. While
playing from a demo start, :class:`~curriculum_ppo.episode_rules.DemoEpisodeTracker`
decides success and cuts lagging episodes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

import cv2
import gymnasium as gym
import numpy as np

from curriculum_ppo.config_flags import knob
from curriculum_ppo.demo.store import Demo
from curriculum_ppo.emulator import Emulator, EmulatorSettings
from curriculum_ppo.episode_rules import DemoEpisodeTracker, EpisodeRulesConfig
from curriculum_ppo.errors import UserError

OBS_MODES = {"gray84": (84, 84, 1), "rgb105x80": (105, 80, 3)}


@dataclass
class AtariConfig:
    """Preprocessing and protocol settings; saved in checkpoints so evaluation matches training."""

    obs_mode: str = knob("gray84", flag="--obs", choices=tuple(OBS_MODES),
                         help="gray84: 84x84 grayscale (the Nature-DQN input), or rgb105x80: the original work's "
                              "105x80 RGB input")
    frameskip: int = 4
    frame_stack: int = 4
    end_on_life_loss: bool = True
    """Training episodes end when a life is lost (evaluation plays until game over)."""
    clip_rewards: bool = True
    time_limit_frames: int = 108_000
    """The env's hard cap on any episode (30 minutes of play, the standard evaluation cap); no flag. Not
    ``EpisodeRulesConfig.max_episode_frames`` (``--max-episode-frames``), the shorter limit of an episode
    from a demo start. (Configs saved before the two had distinct names call this one
    ``max_episode_frames``: :meth:`upgrade_legacy` renames it.)"""
    sticky_prob: float = 0.0
    """Repeat the previous action with this probability (0.25 = ALE v5 protocol)."""
    noop_max: int = 0
    """Start real-game episodes with 1..noop_max random no-ops (evaluation protocol)."""
    warmup_steps: int = knob(0, flag="--warmup-steps", metavar="K",
                             help="agent steps replaying the demo before a demo start, masked out of the loss "
                                  "(warms a recurrent policy's memory); the first decision at the start frame is "
                                  "trained on, and the --explore-steps come after the warm-up")
    start_cache_size: int = 128
    """Demo starts remembered per env, least recently used dropped first (emulator state + frame
    stack each). A repeated start is then one restoreState instead of a demo restore plus
    ``frame_stack * frameskip`` replayed frames, with the same observation and emulator state.
    The bound keeps an env's memory independent of the demo's length: the curriculum's starts
    repeat inside its window (and each env draws from its own share of it), while rehearsal
    starts behind the window rarely repeat on a long demo. The default holds a default-width
    window twice over even for a single env; raise it for a much wider window with few envs,
    0 turns the cache off."""

    LEGACY_KEYS: ClassVar[dict[str, str]] = {"max_episode_frames": "time_limit_frames"}

    @classmethod
    def upgrade_legacy(cls, fields: dict | None) -> dict:
        """``fields`` (a saved config's atari section) with the keys of older versions renamed to today's."""
        return {cls.LEGACY_KEYS.get(key, key): value for key, value in (fields or {}).items()}

    def __post_init__(self) -> None:
        if self.obs_mode not in OBS_MODES:
            raise UserError(f"--obs: unknown observation mode '{self.obs_mode}'; "
                            f"choose one of {', '.join(OBS_MODES)}")
        if self.frameskip < 1 or self.frame_stack < 1:
            raise UserError("frameskip and frame stack must be >= 1")

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        h, w, c = OBS_MODES[self.obs_mode]
        return (c * self.frame_stack, h, w)


class AtariEnv(gym.Env):
    """One Atari game for the agent; optionally bound to a demo for curriculum starts."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 60}

    def __init__(self, game: str | None = None, demo: Demo | None = None, config: AtariConfig | None = None,
                 rules: EpisodeRulesConfig | None = None, seed: int = 0, render_mode: str | None = None):
        if demo is None and game is None:
            raise ValueError("AtariEnv needs a game or a demo")
        self.config = config or AtariConfig()
        self.rules = rules or EpisodeRulesConfig()
        self.demo = demo
        settings = demo.settings if demo is not None else EmulatorSettings(game)
        self.emulator = Emulator(EmulatorSettings(settings.game, settings.mode, settings.difficulty, seed, 0.0))
        self.game = self.emulator.game
        self.render_mode = render_mode
        self.action_space = gym.spaces.Discrete(self.emulator.num_actions)
        self.observation_space = gym.spaces.Box(0, 255, self.config.obs_shape, np.uint8)
        self._height, self._width, self._channels = OBS_MODES[self.config.obs_mode]
        screen = (210, 160) if self._channels == 1 else (210, 160, 3)
        self._screens = [np.zeros(screen, np.uint8), np.zeros(screen, np.uint8)]
        self._stack = np.zeros(self.config.obs_shape, np.uint8)
        self._demo_cum = demo.cumulative_return if demo is not None else None
        self._rng = np.random.default_rng(seed)
        self._start_cache: OrderedDict[int, tuple[bytes, np.ndarray]] = OrderedDict()
        self._tracker: DemoEpisodeTracker | None = None
        self._start_frame: int | None = None
        self._demo_frame = 0  # demo frame the emulator is at during warm-up
        self._warmup_left = 0
        self._last_action = 0
        self._lives = 0
        self._score = 0.0
        self._frames = 0
        self._undrawn_start: int | None = None  # a cached start restored since the last emulated frame

    # -- observation helpers ----------------------------------------------------------
    def _grab(self, slot: int) -> None:
        if self._channels == 1:
            self.emulator.ale.getScreenGrayscale(self._screens[slot])
        else:
            self.emulator.ale.getScreenRGB(self._screens[slot])

    def _observe(self, pooled: bool = True) -> None:
        """Push the (max-pooled) current screen onto the frame stack."""
        frame = np.maximum(self._screens[0], self._screens[1]) if pooled else self._screens[1]
        small = cv2.resize(frame, (self._width, self._height), interpolation=cv2.INTER_AREA)
        c = self._channels
        self._stack[:-c] = self._stack[c:]
        self._stack[-c:] = small[None] if c == 1 else small.transpose(2, 0, 1)

    def _emulate(self, actions) -> tuple[float, bool]:
        """Play one agent step's frames; returns (raw reward, life lost)."""
        reward = 0.0
        n = len(actions)
        emu = self.emulator
        self._undrawn_start = None
        for i, a in enumerate(actions):
            reward += emu.step(a)
            if i >= n - 2:
                self._grab(i - (n - 2))
        if n == 1:
            self._screens[0][...] = self._screens[1]
        lives = emu.lives()
        lost = lives < self._lives
        self._lives = lives
        return reward, lost

    def _fill_stack_from_demo(self, t: int) -> None:
        """Put the emulator at demo frame t with the frame stack holding the demo's frames before t."""
        cached = self._start_cache.get(t)
        if cached is not None:
            self._start_cache.move_to_end(t)
            state, stack = cached
            self.emulator.restore_state(state)
            self._stack[...] = stack
            # No screens are kept: the next step grabs both before reading them. restoreState does not
            # redraw the screen, so render() replays this start if it is asked for the screen before a step.
            self._undrawn_start = t
            return
        self._fill_stack_by_replay(t)
        if self.config.start_cache_size > 0:
            self._start_cache[t] = (self.emulator.save_state(), self._stack.copy())
            while len(self._start_cache) > self.config.start_cache_size:
                self._start_cache.popitem(last=False)

    def _fill_stack_by_replay(self, t: int) -> None:
        skip, k = self.config.frameskip, self.config.frame_stack
        history = min(t, skip * k)
        first = t - history
        self.demo.restore(self.emulator, first)
        self._stack[...] = 0
        actions = self.demo.actions
        frame = first
        # Replay in agent-step-sized chunks ending exactly at t.
        chunk = history % skip or skip
        while frame < t:
            self._emulate([int(a) for a in actions[frame:frame + chunk]])
            self._observe()
            frame += chunk
            chunk = skip
        if history == 0:
            # Frame 0: restoreState does not redraw the screen (ALE #417). A recorded or scripted
            # demo's frame 0 is the game reset, so reset to draw it; an imported demo's frame 0 may
            # lie after alignment NOOPs, so its restored state is kept as it is.
            if self.demo.starts_at_game_reset():
                self.emulator.reset()
            self._grab(1)
            self._screens[0][...] = self._screens[1]
            for _ in range(k):
                self._observe()
        if history < skip * k:  # too close to the demo start: repeat the earliest frame
            c = self._channels
            filled = (history + skip - 1) // skip if history else k
            for i in range(k - filled):
                self._stack[i * c:(i + 1) * c] = self._stack[(k - filled) * c:(k - filled + 1) * c]

    # -- Gymnasium API ----------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """``options={"start_frame": t}`` starts from demo frame t; ``None`` is the real game start."""
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        start = (options or {}).get("start_frame")
        self._score, self._frames, self._last_action, self._warmup_left = 0.0, 0, 0, 0
        if start is not None:
            if self.demo is None:
                raise ValueError("start_frame given but this env has no demo")
            start = int(start)
            if not 0 <= start <= len(self.demo):
                raise ValueError(f"start frame {start} outside demo 0..{len(self.demo)}")
            warm = min(self.config.warmup_steps, start // self.config.frameskip)
            self._demo_frame = start - warm * self.config.frameskip
            self._fill_stack_from_demo(self._demo_frame)
            self._warmup_left = warm
            self._tracker = DemoEpisodeTracker(self._demo_cum, start, self.rules, self._rng)
        else:
            self.emulator.reset()
            self._grab(1)
            self._screens[0][...] = self._screens[1]
            self._stack[...] = 0
            for _ in range(self.config.frame_stack):
                self._observe()
            if self.config.noop_max > 0:
                for _ in range(int(self._rng.integers(1, self.config.noop_max + 1))):
                    self._emulate([0])
                    self._observe()
            self._tracker = None
        self._start_frame = start
        self._lives = self.emulator.lives()
        return self._stack.copy(), {"start_frame": start, "warmup": self._warmup_left > 0}

    def step(self, action: int):
        cfg = self.config
        if self._warmup_left > 0:
            t = self._demo_frame
            demo_actions = [int(a) for a in self.demo.actions[t:t + cfg.frameskip]]
            self._emulate(demo_actions)
            self._observe()
            self._demo_frame += cfg.frameskip
            self._warmup_left -= 1
            self._lives = self.emulator.lives()
            info = {"warmup": self._warmup_left > 0, "replayed": True, "demo_action": demo_actions[0]}
            return self._stack.copy(), 0.0, False, False, info

        action = int(action)
        if cfg.sticky_prob > 0:
            # Sticky actions per frame, as ALE v5 does internally.
            frames = []
            for _ in range(cfg.frameskip):
                if self._rng.random() >= cfg.sticky_prob:
                    self._last_action = action
                frames.append(self._last_action)
        else:
            frames = [action] * cfg.frameskip
        raw, life_lost = self._emulate(frames)
        self._observe()
        self._score += raw
        self._frames += cfg.frameskip

        terminated = self.emulator.game_over() or (cfg.end_on_life_loss and life_lost)
        truncated, reason, success = False, None, False
        if self._tracker is not None:
            verdict = self._tracker.step(self._frames, self._score)
            success, truncated, reason = verdict.success, verdict.truncated, verdict.reason
        if not truncated and self._frames >= cfg.time_limit_frames:
            truncated, reason = True, "max_frames"
        if terminated:
            reason = "game_over" if self.emulator.game_over() else "life_lost"
            truncated = False
        reward = float(np.sign(raw)) if cfg.clip_rewards else raw
        info = {"raw_reward": raw, "score": self._score}
        if terminated or truncated:
            info["episode"] = {
                "score": self._score,
                "frames": self._frames,
                "start_frame": self._start_frame,
                "success": bool(success),
                "reason": reason,
            }
        return self._stack.copy(), reward, bool(terminated), bool(truncated), info

    def demo_action(self, t: int) -> int:
        """The demo's action at frame ``t`` (the first frame of the agent step a start at ``t`` begins):
        the behaviour-cloning label of that start's observation (:mod:`curriculum_ppo.imitation`)."""
        if self.demo is None:
            raise ValueError("this env has no demo")
        return int(self.demo.actions[t])

    def render(self):
        start, self._undrawn_start = self._undrawn_start, None
        if start is not None:  # replaying the start draws its screen and ends in the cached state
            self._fill_stack_by_replay(start)
        return self.emulator.screen_rgb()

    def close(self):
        pass
