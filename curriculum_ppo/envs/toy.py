"""A combination lock: the smallest environment where one demonstration changes everything.

``length`` = N positions, ``num_actions`` = A actions. At position ``p`` exactly
one action (``code[p]``, fixed by ``lock_seed``) advances to ``p + 1``; any other
action ends the episode (terminated, reward 0). Reaching position N opens the
lock: reward 1, terminated. An episode is therefore at most N steps long, and a
uniformly random policy opens the lock with probability ``A ** -N``: without a
demonstration RL has to find that one sequence by chance (Salimans & Chen 2018,
section 2).

Intermediate rewards (``reward_every=K``, off by default): reaching positions
K, 2K, ... also pays 1, without ending the episode (only opening the lock or a
wrong action ends it). The lock then looks like a game with several rewards
along the way, the case where the ``"horizon"`` success rule
(:mod:`curriculum_ppo.episode_rules`) differs from the original ``"demo_end"``
rule: an episode from position t only has to reach the demo's score at its
first reward event at or after ``t + success_horizon``, not open the lock.
With rewards only at N (the default) the two rules give the same verdicts.

How the toy plugs into the same curriculum code as Atari
--------------------------------------------------------
The *demo* is the correct sequence ``code`` (:func:`toy_demo`): demo frame ``t``
is "the lock at position t", ``len(demo) == N``, and the demo's action ``t``
(from position t to t + 1) earns the reward paid on reaching position t + 1, so
its reward frames are the reward positions (``reward_frames == [N]`` by default,
``[K, 2K, ..., N]`` with ``reward_every=K``: the Atari convention ``t + 1``).

* ``TrainConfig(env_kind="toy", toy={"length": N, "num_actions": A, ...})`` gives the
  Trainer the registry's ``EnvFactory("toy", **toy)`` (:mod:`curriculum_ppo.envs.registry`):
  its ``demo_info()`` calls :func:`toy_demo_info` (the demo's length and reward frames,
  what it reads from an HDF5 demo for Atari) and the pool's envs are built by
  :func:`make_toy_env` in place of ``AtariEnv``; every key of ``toy`` (``reward_every``,
  ``rules``, ...) reaches both. Everything else -- the
  :class:`~curriculum_ppo.curriculum.CurriculumScheduler`, the rollout loop, autoreset at
  the start frame set through the pool's ``set_options``, PPO -- is the Atari code path.
* ``reset(options={"start_frame": t})`` puts the lock at position t (the demo
  state t), ``None`` is the real start (position 0), as ``AtariEnv.reset``.
* Episodes started from a demo state are judged by the same
  :class:`~curriculum_ppo.episode_rules.DemoEpisodeTracker` as Atari's, with the
  rules of ``toy={"rules": {...}}`` (an :class:`~curriculum_ppo.episode_rules.EpisodeRulesConfig`
  as a dict). Where success means opening the lock (rewards only at N, or the
  ``"demo_end"`` rule), the episode terminates at success, so the "extra frames
  after success" rule never applies. Where success comes at an intermediate
  reward, the agent plays the extra frames and the episode is then cut as a
  truncation (reason ``"horizon"``), unless it opens the lock or errs first.
  Lagging/max-frames only apply if ``rules`` sets them below N (the agent moves
  one position per step, exactly as fast as the demo, or the episode ends).
* ``toy={"demo": False, ...}`` reports no demo (``length`` 0), exactly like an
  Atari run with ``--game`` and no ``--demo``: the trainer then builds no
  scheduler and every episode starts at the real start (plain PPO).

Observations are a one-hot float32 vector of the position, length N + 1 (index
N = opened), shaped ``(1, 1, N + 1)``: :class:`~curriculum_ppo.ppo.policy.PolicyConfig`
accepts only (C, H, W) observation shapes, and the MLP policy flattens its input
anyway. Values are 0/1, so the trainer's uint8 rollout buffer stores them exactly.
"""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np

from curriculum_ppo.episode_rules import (DemoEpisodeTracker, EpisodeRulesConfig, demo_cumulative_return,
                                         unreachable_message)

REASON_OPENED = "opened"
REASON_WRONG_ACTION = "wrong_action"
OBS_LEAD = (1, 1)
"""Leading observation axes: the one-hot vector travels as a (1, 1, N + 1) "image" (see module doc)."""


def lock_code(length: int, num_actions: int, lock_seed: int = 0) -> np.ndarray:
    """The correct action at each position (the demonstration), int64 [length]."""
    _check(length, num_actions)
    return np.random.default_rng(lock_seed).integers(0, num_actions, size=length).astype(np.int64)


def _check(length: int, num_actions: int) -> None:
    if int(length) < 1:
        raise ValueError(f"toy lock length must be >= 1, got {length}")
    if int(num_actions) < 2:
        raise ValueError(f"toy lock needs >= 2 actions, got {num_actions}")


def reward_positions(length: int, reward_every: int | None = None) -> np.ndarray:
    """The positions whose reaching pays 1, ascending, int64: ``[N]``, or ``K, 2K, ... and N`` for ``reward_every=K``.

    ``None`` (the default) is the original lock, which pays only on opening. A ``K >= N`` pays only at N too.
    """
    if int(length) < 1:
        raise ValueError(f"toy lock length must be >= 1, got {length}")
    if reward_every is None:
        return np.array([int(length)], np.int64)
    if isinstance(reward_every, bool) or not isinstance(reward_every, (int, np.integer)) or reward_every < 1:
        raise ValueError(f"toy reward_every must be a whole number of positions >= 1 (or None: reward only "
                         f"at the end), got {reward_every!r}")
    every = np.arange(int(reward_every), int(length), int(reward_every), dtype=np.int64)
    return np.append(every, np.int64(length))


def toy_demo(length: int, num_actions: int, lock_seed: int = 0, reward_every: int | None = None) -> dict:
    """The demonstration as plain arrays: ``actions`` [N], ``rewards`` [N] and ``cumulative_return`` [N + 1].

    ``rewards[t]`` is what the demo's action ``t`` earned: 1 where it reached a reward position
    (:func:`reward_positions`), i.e. ``rewards[p - 1] = 1``; by default only the last step.
    """
    actions = lock_code(length, num_actions, lock_seed)
    rewards = np.zeros(length, np.float32)
    rewards[reward_positions(length, reward_every) - 1] = 1.0
    return {"actions": actions, "rewards": rewards, "cumulative_return": demo_cumulative_return(rewards)}


def toy_demo_info(length: int, num_actions: int, lock_seed: int = 0, demo: bool = True,
                  rules: dict | None = None, reward_every: int | None = None) -> dict:
    """What :class:`~curriculum_ppo.train.Trainer` needs to know about the demo (see module doc).

    ``reward_frames`` are the frames right after each of the demo's rewards (the reward positions) and
    ``total_return`` their count. ``unreachable`` (the trainer's one-line warning) is present only when
    ``rules`` make some start unable ever to succeed (see :func:`~curriculum_ppo.episode_rules.unreachable_message`).
    ``demo=False``: no demo (length 0), so the trainer runs plain PPO from the real start.
    """
    _check(length, num_actions)
    positions = reward_positions(length, reward_every)
    if not demo:
        return {"length": 0, "reward_frames": [], "total_return": None, "game": "toy"}
    info = {"length": int(length), "reward_frames": [int(p) for p in positions],
            "total_return": float(len(positions)), "game": "toy"}
    cum = toy_demo(length, num_actions, lock_seed, reward_every)["cumulative_return"]
    message = unreachable_message(cum, EpisodeRulesConfig(**rules) if rules else None)
    if message is not None:
        info["unreachable"] = message
    return info


class ToyLockEnv(gym.Env):
    """The combination lock as a Gymnasium env (see module doc)."""

    metadata = {"render_modes": []}

    def __init__(self, length: int, num_actions: int, lock_seed: int = 0, rules: EpisodeRulesConfig | None = None,
                 seed: int = 0, reward_every: int | None = None):
        _check(length, num_actions)
        self.length, self.num_actions = int(length), int(num_actions)
        self.code = lock_code(self.length, self.num_actions, lock_seed)
        demo = toy_demo(self.length, self.num_actions, lock_seed, reward_every)  # also checks reward_every
        self.reward_every = None if reward_every is None else int(reward_every)
        self._demo_cum = demo["cumulative_return"]
        self._pays = np.zeros(self.length + 1, bool)
        """``_pays[p]``: reaching position p pays 1 (the demo's reward of its action p - 1)."""
        self._pays[reward_positions(self.length, reward_every)] = True
        self.rules = rules or EpisodeRulesConfig()
        self.action_space = gym.spaces.Discrete(self.num_actions)
        self.observation_space = gym.spaces.Box(0.0, 1.0, OBS_LEAD + (self.length + 1,), np.float32)
        self._rng = np.random.default_rng(seed)
        self._eye = np.eye(self.length + 1, dtype=np.float32).reshape(-1, *OBS_LEAD, self.length + 1)
        self._position = 0
        self._start_frame: int | None = None
        self._tracker: DemoEpisodeTracker | None = None
        self._score = 0.0
        self._frames = 0
        self._done = False

    @property
    def position(self) -> int:
        return self._position

    def _obs(self) -> np.ndarray:
        return self._eye[self._position].copy()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """``options={"start_frame": t}`` starts at position t (demo state t); ``None`` is position 0."""
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        start = (options or {}).get("start_frame")
        if start is not None:
            start = int(start)
            if not 0 <= start < self.length:
                raise ValueError(f"start frame {start} outside the demo (0..{self.length - 1})")
            self._tracker = DemoEpisodeTracker(self._demo_cum, start, self.rules, self._rng)
        else:
            self._tracker = None
        self._position = 0 if start is None else start
        self._start_frame = start
        self._score, self._frames, self._done = 0.0, 0, False
        return self._obs(), {"start_frame": start, "warmup": False}

    def step(self, action: int):
        if self._done:
            raise RuntimeError("step() after the episode ended; call reset()")
        action = int(action)
        if not 0 <= action < self.num_actions:
            raise ValueError(f"action {action} outside 0..{self.num_actions - 1}")
        self._frames += 1
        wrong = action != self.code[self._position]
        if not wrong:
            self._position += 1
        opened = self._position == self.length
        reward = 1.0 if not wrong and self._pays[self._position] else 0.0
        self._score += reward
        terminated = wrong or opened
        truncated, reason, success = False, None, opened
        if self._tracker is not None:
            verdict = self._tracker.step(self._frames, self._score)
            success, truncated, reason = verdict.success, verdict.truncated, verdict.reason
        if terminated:
            reason, truncated = (REASON_OPENED if opened else REASON_WRONG_ACTION), False
        info = {"raw_reward": reward, "score": self._score, "position": self._position}
        if terminated or truncated:
            self._done = True
            info["episode"] = {"score": self._score, "frames": self._frames, "start_frame": self._start_frame,
                               "success": bool(success), "reason": reason}
        return self._obs(), reward, bool(terminated), bool(truncated), info

    # -- emulator-like state access (the Atari emulator's save_state/restore_state) ------
    def save_state(self) -> bytes:
        """The episode's full state (position, start, score, steps, success bookkeeping) as bytes."""
        tracker = None
        if self._tracker is not None:
            tracker = [self._tracker.success_frame, self._tracker.extra_frames]
        return json.dumps({"position": self._position, "start_frame": self._start_frame, "score": self._score,
                           "frames": self._frames, "done": self._done, "tracker": tracker,
                           "code": self.code.tolist(), "reward_every": self.reward_every}).encode()

    def restore_state(self, state: bytes) -> None:
        """Return to a state from :meth:`save_state` (of a lock with the same code)."""
        s = json.loads(bytes(state).decode())
        if s["code"] != self.code.tolist():
            raise ValueError("this state belongs to a lock with another code")
        if s.get("reward_every") != self.reward_every:
            raise ValueError(f"this state belongs to a lock with reward_every={s.get('reward_every')!r}, "
                             f"not {self.reward_every!r}")
        self._position, self._start_frame = int(s["position"]), s["start_frame"]
        self._score, self._frames, self._done = float(s["score"]), int(s["frames"]), bool(s["done"])
        self._tracker = None
        if self._start_frame is not None:
            self._tracker = DemoEpisodeTracker(self._demo_cum, int(self._start_frame), self.rules, self._rng)
            self._tracker.success_frame, self._tracker.extra_frames = s["tracker"]

    def demo_action(self, t: int) -> int:
        """The demo's action at position ``t``: the one that opens it (``code[t]``)."""
        return int(self.code[t])

    def render(self):
        return None

    def close(self):
        pass


def make_toy_env(seed: int = 0, length: int = 10, num_actions: int = 2, lock_seed: int = 0, demo: bool = True,
                 rules: dict | None = None, reward_every: int | None = None) -> ToyLockEnv:
    """Build the env from ``TrainConfig.toy`` kwargs (``demo`` only matters to :func:`toy_demo_info`)."""
    return ToyLockEnv(length, num_actions, lock_seed=lock_seed,
                      rules=EpisodeRulesConfig(**rules) if rules else None, seed=seed, reward_every=reward_every)


def batch_success_rate(policy_logits, length: int, num_actions: int, lock_seed: int = 0, episodes: int = 256,
                       start: int = 0, deterministic: bool = False, rng: np.random.Generator | None = None) -> float:
    """Fraction of ``episodes`` that open the lock from position ``start`` (0 = the real start).

    All episodes are played in lockstep with one batched call per step:
    ``policy_logits(obs [B, 1, 1, N+1] float32) -> logits [B, A]`` (numpy or torch).
    Same dynamics as :class:`ToyLockEnv`, without per-env Python overhead, so
    an evaluation every PPO update is cheap.
    """
    code = lock_code(length, num_actions, lock_seed)
    rng = rng if rng is not None else np.random.default_rng()
    eye = np.eye(length + 1, dtype=np.float32).reshape(-1, *OBS_LEAD, length + 1)
    pos = np.full(episodes, start, np.int64)
    alive = np.ones(episodes, bool)
    for _ in range(length - start):
        idx = np.flatnonzero(alive)
        if idx.size == 0:
            break
        logits = np.asarray(policy_logits(eye[pos[idx]]), dtype=np.float64)
        if deterministic:
            actions = logits.argmax(-1)
        else:
            p = np.exp(logits - logits.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            actions = (p.cumsum(-1) < rng.random((idx.size, 1))).sum(-1)
            actions = np.minimum(actions, num_actions - 1)
        right = actions == code[pos[idx]]
        pos[idx[right]] += 1
        alive[idx[~right]] = False
        alive &= pos < length
    return float(np.mean(pos == length))
