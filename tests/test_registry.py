"""The env registry: every kind builds, its factories pickle and rebuild the same env, and its demo info
is what the demo file says."""

from __future__ import annotations

import pickle
from dataclasses import asdict

import numpy as np
import pytest

from curriculum_ppo.envs.registry import KINDS, EnvFactory, EnvKind, demo_info, make_env
from curriculum_ppo.errors import UserError

TOY = {"length": 6, "num_actions": 3, "lock_seed": 2}


def kind_kwargs(demo_path: str) -> dict:
    """Keyword arguments for one env of every registered kind (a new kind needs a line here)."""
    return {"atari": {"demo_path": demo_path, "atari": {"frame_stack": 2, "sticky_prob": 0.25},
                      "rules": {"success_rule": "demo_end"}},
            "toy": dict(TOY)}


def trajectory(env, start, actions) -> list:
    """Everything the env shows from ``reset(options={"start_frame": start})`` through ``actions``."""
    obs, info = env.reset(options={"start_frame": start})
    out = [obs.copy(), info.get("warmup")]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(int(a))
        out += [obs.copy(), reward, terminated, truncated, info.get("episode")]
        if terminated or truncated:
            break
    return out


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y
                                    for x, y in zip(a, b))


def test_every_kind_is_tested():
    assert set(kind_kwargs("x")) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_pickled_factory_builds_the_same_env(bundled_demo_path, kind):
    """Each kind builds through ``make_env`` and through a factory that went through pickle (as it
    does to a worker process): same spaces, and from the same seed, start and actions the same
    observations, rewards and episode ends (with sticky actions, so the seed matters)."""
    kwargs = kind_kwargs(str(bundled_demo_path))[kind]
    factory = EnvFactory(kind, **kwargs)
    copy = pickle.loads(pickle.dumps(factory))
    assert copy == factory and copy.kind == kind and copy.kwargs == kwargs
    a, b = make_env(kind, 4, **kwargs), copy(4)
    try:
        assert a.observation_space == b.observation_space and a.action_space == b.action_space
        actions = np.random.default_rng(0).integers(0, a.action_space.n, 40)
        start = 600 if kind == "atari" else 2
        first = trajectory(a, start, actions)
        assert same(first, trajectory(b, start, actions))
        assert len(first) > 5
        if kind == "atari":  # the seed reaches the env: sticky actions draw otherwise from another one
            other = copy(5)
            assert not same(first, trajectory(other, start, actions))
            other.close()
    finally:
        a.close()
        b.close()


def test_the_factorys_arguments_reach_the_env(bundled_demo_path):
    env = EnvFactory("atari", **kind_kwargs(str(bundled_demo_path))["atari"])(0)
    assert env.observation_space.shape == (2, 84, 84) and env.rules.success_rule == "demo_end"
    assert env.demo is not None and len(env.demo) == 635
    toy = EnvFactory("toy", **TOY)(0)
    assert toy.num_actions == 3 and toy.length == 6


def test_atari_demo_info_is_what_the_demo_says(bundled_demo_path):
    from curriculum_ppo.demo.store import load_demo
    from curriculum_ppo.episode_rules import EpisodeRulesConfig, unreachable_message

    demo = load_demo(bundled_demo_path)
    rewards = np.flatnonzero(np.asarray(demo.rewards))
    info = demo_info("atari", demo_path=str(bundled_demo_path), game="MontezumaRevenge")
    assert info == {"length": len(demo), "reward_frames": [int(t) + 1 for t in rewards],
                    "total_return": float(np.sum(demo.rewards, dtype=np.float64)), "game": "montezuma_revenge",
                    "rom_md5": demo.attrs.get("rom_md5"), "unreachable": None}
    assert info["length"] == 635 and info["total_return"] == 400 and info["reward_frames"] and info["rom_md5"]
    tight = asdict(EpisodeRulesConfig(max_episode_frames=40))
    message = demo_info("atari", demo_path=str(bundled_demo_path), rules=tight)["unreachable"]
    assert message and message == unreachable_message(demo.cumulative_return, EpisodeRulesConfig(**tight))
    assert EnvFactory("atari", demo_path=str(bundled_demo_path)).demo_info() == {**info, "game": demo.game}
    assert demo_info("atari", game="Breakout") == {"length": 0, "reward_frames": [], "total_return": None,
                                                   "game": "Breakout"}


def test_toy_demo_info_comes_from_the_toy_module():
    from curriculum_ppo.envs.toy import toy_demo_info

    assert demo_info("toy", **TOY) == toy_demo_info(**TOY) == EnvFactory("toy", **TOY).demo_info()
    assert demo_info("toy", **TOY, demo=False)["length"] == 0


def test_mistakes_are_caught_where_the_factory_is_made(bundled_demo_path):
    with pytest.raises(UserError, match="unknown env kind 'pong'; choose from atari, toy"):
        EnvFactory("pong")
    with pytest.raises(UserError, match="unknown env kind"):
        make_env("pong", 0)
    with pytest.raises(TypeError, match="env kind 'toy'.*'lenght'"):
        EnvFactory("toy", lenght=4, num_actions=2)
    with pytest.raises(UserError, match="--game Breakout does not match the demo, which is a montezuma_revenge"):
        demo_info("atari", demo_path=str(bundled_demo_path), game="Breakout")
    with pytest.raises(UserError, match="give --demo FILE.h5"):
        demo_info("atari")


def test_a_new_kind_is_one_entry(monkeypatch):
    """An entry naming two functions is all a pool needs to run a new kind."""
    from curriculum_ppo.vec.pool import InProcessEnvPool

    monkeypatch.setitem(KINDS, "lock", EnvKind(make="curriculum_ppo.envs.toy:make_toy_env",
                                               demo_info="curriculum_ppo.envs.toy:toy_demo_info"))
    factory = pickle.loads(pickle.dumps(EnvFactory("lock", **TOY)))
    assert factory.demo_info()["length"] == 6
    with InProcessEnvPool(factory, 2, seed=0) as pool:
        pool.set_options([{"start_frame": 1}, {"start_frame": 4}])
        pool.reset()
        assert [int(pool.obs[i].argmax()) for i in range(2)] == [1, 4]


def test_a_factory_given_only_the_demo_and_atari_options_builds_the_defaults(bundled_demo_path):
    """A factory given only the demo and some Atari options (as the benchmark scripts make it) builds
    the env of one that spells out the rest (no game, the default episode rules, as the Trainer
    does): same config, rules and play from the same seed, start and actions; and the pools' probe
    sees the options (two stacked frames) and the game's 18 actions. The toy is probed the same way."""
    from curriculum_ppo.episode_rules import EpisodeRulesConfig
    from curriculum_ppo.vec import probe

    path = str(bundled_demo_path)
    atari = {"frame_stack": 2, "sticky_prob": 0.25}
    short = EnvFactory("atari", demo_path=path, atari=atari)
    full = EnvFactory("atari", game=None, demo_path=path, atari=atari, rules=asdict(EpisodeRulesConfig()))
    assert probe(short) == ((2, 84, 84), np.dtype(np.uint8), 18)
    a, b = short(3), full(3)
    try:
        assert a.config == b.config and a.config.frame_stack == 2 and a.rules == b.rules == EpisodeRulesConfig()
        actions = np.random.default_rng(1).integers(0, 18, 40)
        assert same(trajectory(a, 600, actions), trajectory(b, 600, actions))
    finally:
        a.close()
        b.close()
    assert probe(EnvFactory("toy", **TOY)) == ((1, 1, TOY["length"] + 1), np.dtype(np.float32), TOY["num_actions"])
