"""The agent's Atari env on the real emulator: demo starts, frame stacks, episode rules."""

import numpy as np
import pytest

from curriculum_ppo.demo.store import load_demo
from curriculum_ppo.envs.atari import AtariConfig, AtariEnv
from curriculum_ppo.episode_rules import EpisodeRulesConfig

DEMO = "demos/MontezumaRevenge-room1.h5"


@pytest.fixture(scope="module")
def demo():
    return load_demo(DEMO)


def test_demo_start_observation_equals_replaying_the_demo_up_to_it(demo):
    """Restoring frame t must show exactly what replaying the demo's own frames up to t shows.

    With ``warmup_steps=k`` the env restores t - 4k and replays the demo's actions frame by
    frame through its normal step path; without, it fills the stack directly. Both must agree.
    """
    direct = AtariEnv(demo=demo)
    warm = AtariEnv(demo=demo, config=AtariConfig(warmup_steps=10))
    for t in (57, 100, 252, 400, 635):
        expected, _ = direct.reset(options={"start_frame": t})
        obs, info = warm.reset(options={"start_frame": t})
        assert info["warmup"]  # the next step replays the demo
        for i in range(10):  # the agent's actions are ignored while the demo is replayed
            obs, reward, _, _, info = warm.step(5)
            assert info["replayed"] and reward == 0.0
            assert info["warmup"] == (i < 9)  # after the 10th, the agent decides (at frame t)
        np.testing.assert_array_equal(obs, expected)
        assert np.array_equal(warm.emulator.ram(), demo.ram[t])
        assert np.array_equal(direct.emulator.ram(), demo.ram[t])


def test_replaying_the_demo_from_a_late_start_succeeds(demo):
    env = AtariEnv(demo=demo, rules=EpisodeRulesConfig(extra_frames_scale=0.0))
    env.reset(options={"start_frame": 600})
    rewards, raw = [], []
    for t in range(600, 700, 4):
        _, reward, terminated, truncated, info = env.step(int(demo.actions[min(t, len(demo) - 1)]))
        rewards.append(reward)
        raw.append(info["raw_reward"])
        if truncated or terminated:
            break
    assert truncated and info["episode"]["success"] is True
    assert info["episode"]["score"] == 300.0 and info["episode"]["reason"] == "success_extra_done"
    assert 1.0 in rewards and 300.0 in raw  # clipped for the learner, raw score tracked separately


def test_an_agent_that_idles_is_cut_for_lagging(demo):
    env = AtariEnv(demo=demo, rules=EpisodeRulesConfig(lag_allowance=40))
    env.reset(options={"start_frame": 560})
    for steps in range(1, 200):
        _, _, terminated, truncated, info = env.step(0)
        if truncated or terminated:
            break
    assert truncated and not terminated
    assert info["episode"]["reason"] == "lagging" and not info["episode"]["success"]
    # The demo scores at frame 635; with 40 frames of allowance the cut comes right after 635 + 40 - 560.
    assert info["episode"]["frames"] == pytest.approx(635 - 560 + 40, abs=4)


def test_real_start_with_noops_and_life_loss_ends_training_episode():
    env = AtariEnv(game="MontezumaRevenge", config=AtariConfig(noop_max=30), seed=3)
    obs, info = env.reset(seed=3)
    assert obs.shape == (4, 84, 84) and info["start_frame"] is None
    # Walking left off the start platform kills Panama Joe: the training episode ends on the life loss.
    for _ in range(200):
        _, _, terminated, truncated, info = env.step(4)  # LEFT
        if terminated or truncated:
            break
    assert terminated and info["episode"]["reason"] == "life_lost"


def test_rgb_observation_mode_and_warmup_steps(demo):
    """``info["warmup"]`` flags the observations whose step is replayed: exactly 5 of them, the
    reset's included; the 5th replayed step hands over at the start frame, so the next is the agent's."""
    env = AtariEnv(demo=demo, config=AtariConfig(obs_mode="rgb105x80", warmup_steps=5))
    obs, info = env.reset(options={"start_frame": 300})
    assert obs.shape == (12, 105, 80) and info["warmup"]
    flagged, replayed = 1, 0
    while info.get("warmup"):
        obs, reward, terminated, truncated, info = env.step(0)
        replayed += bool(info.get("replayed"))
        flagged += bool(info.get("warmup"))
        assert reward == 0.0
    assert flagged == replayed == 5
    assert np.array_equal(env.emulator.ram(), demo.ram[300])  # at the start frame, the agent's turn
    _, _, _, _, info = env.step(0)
    assert "replayed" not in info and not info.get("warmup")


@pytest.mark.parametrize("settings", [{}, {"frameskip": 1}, {"obs_mode": "rgb105x80", "warmup_steps": 3}],
                         ids=["default", "frameskip1", "rgb_warmup"])
def test_cached_demo_start_is_identical_to_a_fresh_one(demo, settings):
    """A repeated start comes from the start cache; observation, emulator state (RNG included) and every
    later step must be exactly those of a start replayed from the demo."""
    cached = AtariEnv(demo=demo, config=AtariConfig(**settings))
    fresh = AtariEnv(demo=demo, config=AtariConfig(start_cache_size=0, **settings))
    for t in (120, 333, 2, 120, 333, 2):
        a, info_a = cached.reset(options={"start_frame": t})
        b, info_b = fresh.reset(options={"start_frame": t})
        np.testing.assert_array_equal(a, b)
        assert info_a == info_b
        assert cached.emulator.save_state() == fresh.emulator.save_state()
        np.testing.assert_array_equal(cached.render(), fresh.render())  # the start's screen, not the last one drawn
        assert cached.emulator.save_state() == fresh.emulator.save_state()
        for action in (3, 3, 1, 5, 0, 4, 11, 2):
            sa, ra, ta, ua, ia = cached.step(action)
            sb, rb, tb, ub, ib = fresh.step(action)
            np.testing.assert_array_equal(sa, sb)
            assert (ra, ta, ua) == (rb, tb, ub) and ia == ib
        assert cached.emulator.save_state() == fresh.emulator.save_state()
    assert len(cached._start_cache) == 3 and not fresh._start_cache


def test_start_cache_keeps_the_most_recently_used_starts_up_to_its_bound(demo):
    """The cache is an LRU of ``start_cache_size`` starts, so an env's memory does not grow with the demo:
    many different starts leave at most that many entries, the ones used last."""
    env = AtariEnv(demo=demo, config=AtariConfig(start_cache_size=4))
    for t in (10, 20, 30, 40):
        env.reset(options={"start_frame": t})
    env.reset(options={"start_frame": 10})  # used again: now the most recent
    env.reset(options={"start_frame": 50})  # a fifth start drops the least recently used, 20
    assert list(env._start_cache) == [30, 40, 10, 50]
    starts = list(range(100, 400, 7))
    for t in starts:
        env.reset(options={"start_frame": t})
    assert list(env._start_cache) == starts[-4:]
    state, stack = env._start_cache[starts[-1]]
    assert stack.shape == env.observation_space.shape  # a state and a stack: no screens kept
    restored, _ = env.reset(options={"start_frame": starts[-2]})
    np.testing.assert_array_equal(restored, env._start_cache[starts[-2]][1])


def test_default_start_cache_holds_a_default_curriculum_window_twice_for_one_env():
    from curriculum_ppo.curriculum import CurriculumConfig

    assert AtariConfig().start_cache_size >= 2 * CurriculumConfig().window
