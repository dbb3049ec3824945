"""The evaluation protocols take effect on the real emulator: counted, not read back from a config.

Each test builds the evaluation's envs with :func:`curriculum_ppo.evaluate.build_plan` from a
checkpoint's default Atari settings (frameskip 4), exactly as ``evaluate`` does, and plays them
through :class:`~curriculum_ppo.evaluate.EvalEnv`, the env the worker pool runs, started with the
reset options the pool hands it. What the
emulator really did is read from Montezuma's Revenge itself:

* RAM byte 102 holds the joystick direction of the frame just emulated (active-low bits:
  right 0x80, left 0x40, down 0x20, up 0x10), so it shows which action ALE applied;
* RAM byte 42 is the player's x position, which moves exactly one pixel per frame of RIGHT or
  LEFT on the starting platform, so an agent step's displacement tells how many of its four
  frames went each way;
* ALE's episode frame number counts the frames played since the reset.

The first test checks these readings on a bare emulator, so a ROM or emulator change that broke
them fails there and not as a wrong rate.
"""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pytest

from curriculum_ppo.emulator import Emulator
from curriculum_ppo.envs.atari import AtariConfig
from curriculum_ppo.episode_rules import EpisodeRulesConfig
from curriculum_ppo.evaluation.plan import build_plan
from curriculum_ppo.evaluation.protocols import EvalSettings

GAME = "montezuma_revenge"
JOYSTICK, PLAYER_X = 102, 42
NOOP, FIRE, RIGHT, LEFT = 0, 1, 3, 4
TRAINED_ATARI = asdict(AtariConfig())  # what a checkpoint trained with the defaults holds
TRAINED_RULES = asdict(EpisodeRulesConfig())


def joystick_code(name: str) -> int:
    """RAM byte 102 after a frame of action ``name`` (the console's joystick port, active low)."""
    code = 0xFF
    for direction, bit in (("RIGHT", 0x80), ("LEFT", 0x40), ("DOWN", 0x20), ("UP", 0x10)):
        if direction in name:
            code &= ~bit
    return code


def step_dx(action: int) -> int:
    return {RIGHT: 1, LEFT: -1}.get(action, 0)


class JobEnv:
    """An evaluation env with its plan: ``play(job)`` starts job ``job`` the way the pool does."""

    def __init__(self, plan, env):
        self.plan, self.env, self.inner = plan, env, env.inner

    def play(self, job: int):
        return self.env.reset(options=self.plan.options(job))

    def step(self, action: int):
        return self.env.step(action)


def protocol_env(protocol: str, episodes: int, **settings) -> JobEnv:
    """The env ``evaluate --protocol PROTOCOL`` plays, from the game start."""
    plan = build_plan(EvalSettings(episodes=episodes, protocols=(protocol,), **settings),
                      GAME, TRAINED_ATARI, TRAINED_RULES)
    assert plan.protocols == [protocol] and len(plan.jobs) == episodes
    return JobEnv(plan, plan.factory(3))


def binomial_bounds(n: int, p: float, tail: float = 1e-6) -> tuple[int, int]:
    """The smallest and largest counts of ``n`` trials with probability ``p`` outside which each tail
    holds less than ``tail``."""
    logs = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p)
            + (n - k) * math.log1p(-p) for k in range(n + 1)]
    pmf = [math.exp(v) for v in logs]
    low, acc = 0, 0.0
    while acc + pmf[low] < tail:
        acc += pmf[low]
        low += 1
    high, acc = n, 0.0
    while acc + pmf[high] < tail:
        acc += pmf[high]
        high -= 1
    return low, high


def test_the_readings_show_what_the_emulator_did():
    emu = Emulator(GAME)
    rng = np.random.default_rng(5)
    codes = [joystick_code(name) for name in emu.action_names]
    for action in rng.integers(0, emu.num_actions, 3000):  # through deaths and game overs
        emu.step(int(action))
        assert emu.ram()[JOYSTICK] == codes[action]
        if emu.game_over():
            emu.reset()
    emu.reset()
    assert emu.frame_number() == 0
    x = int(emu.ram()[PLAYER_X])
    for action in [RIGHT] * 4 + [LEFT] * 8 + [RIGHT, LEFT] * 20 + [NOOP] * 5:
        emu.step(action)
        assert int(emu.ram()[PLAYER_X]) - x == step_dx(action)
        x = int(emu.ram()[PLAYER_X])
    assert emu.frame_number() == 4 + 8 + 40 + 5


def sticky_counts(env, steps: int) -> tuple[int, int, list[int]]:
    """Walk left and right around the start position; count the frames that repeated the previous action.

    Within an agent step the previous action persists for ``j`` frames, then the new one plays to the
    end of the step: each frame that still plays the old action is one draw that repeated it, and the
    first frame that plays the new one is one that did not. Returns (repeats, draws, j of every step
    that changed the action).
    """
    env.play(0)
    emu = env.inner.emulator
    home = x = int(emu.ram()[PLAYER_X])
    applied = NOOP  # the emulator's previous action after a reset
    repeats = draws = 0
    runs = []
    for _ in range(steps):
        action = LEFT if x > home else RIGHT
        _, _, terminated, truncated, _ = env.step(action)
        assert not (terminated or truncated)
        ram = emu.ram()
        moved, x = int(ram[PLAYER_X]) - x, int(ram[PLAYER_X])
        if action == applied:
            assert moved == 4 * step_dx(action), "a step that kept its action played frames of another one"
            continue
        j, rest = divmod(4 * step_dx(action) - moved, step_dx(action) - step_dx(applied))
        assert rest == 0 and 0 <= j <= 4, (action, applied, moved)
        # the last frame's joystick agrees: the old action only if it persisted through the whole step
        assert ram[JOYSTICK] == joystick_code(env.inner.emulator.action_names[applied if j == 4 else action])
        runs.append(j)
        repeats += j
        draws += min(j + 1, 4)
        if j < 4:
            applied = action
    return repeats, draws, runs


def test_sticky_protocol_repeats_the_previous_action_a_quarter_of_the_frames():
    env = protocol_env("sticky", episodes=1)
    repeats, draws, runs = sticky_counts(env, 1500)
    rate = repeats / draws
    # 1,500 direction changes give ~2,000 draws: the standard error is ~0.01, the band is 5 of them.
    assert draws > 1500
    assert abs(rate - 0.25) < 0.05, (repeats, draws)
    # per frame, as in ALE v5, not per agent step: a step often switches after one or two old frames
    assert {1, 2, 3} <= set(runs)
    assert abs(runs.count(0) / len(runs) - 0.75) < 0.05


def test_plain_protocol_never_repeats_an_action():
    env = protocol_env("plain", episodes=1)
    repeats, draws, runs = sticky_counts(env, 300)
    assert repeats == 0 and draws == len(runs) > 250


def test_noops_protocol_plays_1_to_30_noops_before_the_first_decision():
    episodes = 200
    reference = Emulator(GAME)
    after = [reference.ram()]  # RAM after k NOOP frames from the reset; all 31 differ
    for _ in range(30):
        reference.step(NOOP)
        after.append(reference.ram())
    assert len({r.tobytes() for r in after}) == 31
    env = protocol_env("noops", episodes=episodes)
    counts = []
    for job in range(episodes):
        env.play(job)
        emu = env.inner.emulator
        n = emu.frame_number()  # ALE's own count of the frames played since the reset
        assert 1 <= n <= 30, (job, n)
        assert np.array_equal(emu.ram(), after[n]), f"job {job}: the {n} frames before the first decision " \
                                                    "were not all NOOPs"
        counts.append(n)
    assert len(set(counts)) >= 25  # 1..30 drawn per episode seed, not one fixed count
    assert abs(np.mean(counts) - 15.5) < 2.0  # uniform on 1..30: the mean's standard error is ~0.6
    plain = protocol_env("plain", episodes=20)
    for job in range(20):
        plain.play(job)
        assert plain.inner.emulator.frame_number() == 0


def test_noops_count_follows_noop_max():
    env = protocol_env("noops", episodes=60, noop_max=3)
    counts = []
    for job in range(60):
        env.play(job)
        counts.append(env.inner.emulator.frame_number())
    assert set(counts) == {1, 2, 3}


def epsilon_replacements(env, steps: int) -> tuple[int, int, set[int]]:
    """The agent always asks for NOOP; count the steps whose frames the emulator played another direction.

    Returns (visible replacements, steps, the joystick codes seen)."""
    job, replaced, seen = 0, 0, set()
    env.play(job)
    emu = env.inner.emulator
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(NOOP)
        code = int(emu.ram()[JOYSTICK])
        seen.add(code)
        replaced += code != joystick_code("NOOP")
        if terminated or truncated:
            job += 1
            env.play(job)
    return replaced, steps, seen


def test_epsilon_protocol_replaces_one_action_in_a_hundred():
    epsilon, steps = 0.01, 5000
    env = protocol_env("epsilon", episodes=5, epsilon=epsilon)
    replaced, steps, seen = epsilon_replacements(env, steps)
    # A replacement is uniform over the 18 actions; NOOP and FIRE leave the joystick centred, so
    # 16 in 18 replacements show. Expected 44 of 5,000 steps; ±1e-6 tails are about 18..80.
    low, high = binomial_bounds(steps, epsilon * 16 / 18)
    assert low <= replaced <= high, (replaced, low, high)
    assert len(seen - {joystick_code("NOOP")}) >= 6  # replacements point in many directions


@pytest.mark.parametrize("protocol", ["plain", "sticky", "noops"])
def test_other_protocols_never_replace_the_agents_action(protocol):
    env = protocol_env(protocol, episodes=2)
    replaced, _, _ = epsilon_replacements(env, 400)
    assert replaced == 0
