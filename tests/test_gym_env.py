"""The registered ``curriculum_ppo:DemoStart-v0`` env, made the way another library's user makes it."""

import warnings
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from curriculum_ppo.errors import UserError

DEMO = str(Path(__file__).resolve().parent.parent / "demos" / "MontezumaRevenge-room1.h5")


def test_make_by_module_and_id_passes_the_env_checker():
    env = gymnasium.make("curriculum_ppo:DemoStart-v0", demo=DEMO, start_frame=600, render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker's warnings are failures here
        check_env(env.unwrapped)
    assert env.spec.id == "DemoStart-v0"
    assert env.observation_space.shape == (4, 84, 84) and env.action_space.n == 18
    env.reset(seed=0)
    assert env.render().shape == (210, 160, 3)
    env.close()


def test_demo_start_reset_options_and_rules_in_info():
    env = gymnasium.make("curriculum_ppo:DemoStart-v0", demo=DEMO, start_frame=600, sticky_prob=0.0,
                         success_rule="demo_end")
    obs, info = env.reset(seed=1)
    assert info["start_frame"] == 600 and info["demo"] == {
        "start_frame": 600, "target_frame": 635, "target_score": 300.0, "success": False}
    # the demo's own actions from frame 600 reach the door: success, then a truncation, never a termination
    demo = env.unwrapped.demo
    frame, done, last = 600, False, None
    while not done:
        action = int(demo.actions[min(frame, len(demo) - 1)])
        obs, reward, terminated, truncated, last = env.step(action)
        frame += 4
        done = terminated or truncated
        assert not terminated
    assert truncated and last["demo"]["success"] and last["episode"]["reason"] == "success_extra_done"
    assert last["episode"]["score"] >= 300
    obs, info = env.reset(options={"start_frame": None})  # the real game start
    assert info["start_frame"] is None and "demo" not in info
    obs, info = env.reset(options={"start_frame": 290})
    assert info["demo"]["target_score"] == 400.0
    env.close()


def test_bad_settings_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="no setting lr"):
        gymnasium.make("curriculum_ppo:DemoStart-v0", demo=DEMO, lr=1e-3)
    with pytest.raises(UserError, match="outside the demo"):
        gymnasium.make("curriculum_ppo:DemoStart-v0", demo=DEMO, start_frame=5000)
    with pytest.raises(UserError, match="not found"):
        gymnasium.make("curriculum_ppo:DemoStart-v0", demo=str(tmp_path / "none.h5"))
