import math

import numpy as np
import pytest

from curriculum_ppo.episode_rules import (
    DemoEpisodeTracker,
    EpisodeRulesConfig,
    demo_cumulative_return,
)

# A 1000-frame demo scoring 100 at frame 400 and 300 at frame 800.
REWARDS = np.zeros(1000)
REWARDS[400] = 100.0
REWARDS[800] = 300.0
CUM = demo_cumulative_return(REWARDS)


def tracker(start, **overrides):
    config = EpisodeRulesConfig(**{"lag_allowance": 200, "max_episode_frames": 10_000, **overrides})
    return DemoEpisodeTracker(CUM, start, config, np.random.default_rng(0))


def test_cumulative_return_convention():
    assert len(CUM) == 1001
    assert CUM[400] == 0.0 and CUM[401] == 100.0 and CUM[1000] == 400.0


def test_success_on_tie_not_before():
    t = tracker(start=600)  # returns-to-go = 300
    assert t.returns_to_go == 300.0
    v = t.step(100, 0.0)
    assert not v.success and not v.truncated
    v = t.step(104, 299.0)
    assert not v.success
    v = t.step(108, 300.0)
    assert v.success and v.just_succeeded and not v.truncated
    v = t.step(112, 300.0)
    assert v.success and not v.just_succeeded


def test_beating_full_demo_from_frame_zero_is_success():
    t = tracker(start=0)
    assert t.step(40, 500.0).success


def test_extra_frames_then_truncation():
    t = tracker(start=600, extra_frames_scale=3.0)
    v = t.step(300, 300.0)
    assert v.success and not v.truncated
    extra = t.extra_frames
    assert 1 <= extra <= math.exp(3.0)
    frames = 300
    while True:
        frames += 4
        v = t.step(frames, 300.0)
        if v.truncated:
            break
        assert frames - 300 < extra
    assert v.reason == "success_extra_done" and v.success
    assert frames - 300 >= extra


def test_extra_frames_follow_exp_uniform_distribution():
    rng = np.random.default_rng(1)
    extras = []
    for _ in range(400):
        t = DemoEpisodeTracker(CUM, 600, EpisodeRulesConfig(), rng)
        t.step(0, 300.0)
        extras.append(t.extra_frames)
    logs = np.log(np.array(extras) + 0.5)
    assert 0 <= logs.min() and logs.max() <= 7.0 + 1e-9
    assert 3.0 < logs.mean() < 4.0  # mean of U(0, 7) is 3.5


def test_lagging_cut():
    t = tracker(start=300)  # demo scores +100 at frame 400, i.e. 100 frames after the start
    # Behind, but within the allowance: the demo's score 200 frames ago is still 0 until frame 300 elapsed.
    assert not t.step(296, 0.0).truncated
    v = t.step(304, 0.0)
    assert v.truncated and v.reason == "lagging" and not v.success
    # An agent that kept up is not cut.
    t = tracker(start=300)
    assert not t.step(304, 100.0).truncated


def test_score_deficit_allowance():
    t = tracker(start=300, score_deficit_allowance=100.0)
    assert not t.step(304, 0.0).truncated
    assert t.step(304, -1.0).truncated


def test_max_frames():
    t = tracker(start=0, max_episode_frames=1000, lag_allowance=5000)
    assert not t.step(996, 0.0).truncated
    v = t.step(1000, 0.0)
    assert v.truncated and v.reason == "max_frames"


def test_zero_returns_to_go_needs_survival_until_demo_end():
    t = tracker(start=900)  # after the last reward
    assert t.returns_to_go == 0.0
    assert not t.step(0, 0.0).success
    assert not t.step(96, 0.0).success
    v = t.step(100, 0.0)
    assert v.success and v.just_succeeded


def test_start_out_of_range():
    with pytest.raises(ValueError):
        tracker(start=1001)
