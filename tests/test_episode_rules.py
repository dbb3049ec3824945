import math

import numpy as np
import pytest

from curriculum_ppo.episode_rules import (
    DemoEpisodeTracker,
    EpisodeRulesConfig,
    demo_cumulative_return,
    success_targets,
    unreachable_message,
    unreachable_starts,
)
from curriculum_ppo.errors import UserError

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
    assert v.success and not v.truncated and t.success_frame == 108  # flips to success exactly at the tie
    v = t.step(112, 300.0)
    assert v.success and t.success_frame == 108  # stays a success; the moment of success is kept


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
    assert v.success and t.success_frame == 100


def test_start_out_of_range():
    with pytest.raises(ValueError):
        tracker(start=1001)


# --- the horizon rule: bounded cost per episode on long demos ---------------------------------------

# A 30,000-frame demo: +100 at frames 1,000 and 2,000, then a reward-free stretch of 15,000 frames that
# ends in +300 at frame 17,000, a -1 at 20,000, +500 at 29,000 and a reward-free tail.
LONG = np.zeros(30_000)
LONG[[1_000, 2_000, 17_000, 20_000, 29_000]] = [100.0, 100.0, 300.0, -1.0, 500.0]
LONG_CUM = demo_cumulative_return(LONG)


def long_tracker(start, rule="horizon", horizon=500, **overrides):
    config = EpisodeRulesConfig(success_rule=rule, success_horizon=horizon,
                                **{"lag_allowance": 100_000, "max_episode_frames": 100_000, **overrides})
    return DemoEpisodeTracker(LONG_CUM, start, config, np.random.default_rng(0))


def test_success_targets_pick_the_first_positive_event_after_the_horizon():
    config = EpisodeRulesConfig(success_rule="horizon", success_horizon=500)
    target = success_targets(LONG_CUM, config)
    assert len(target) == 30_001
    assert target[0] == 1_001  # the +100 at 1,000 is the first event at or after 0 + 500
    assert target[500] == 1_001 and target[501] == 2_001  # event exactly at start + H counts, one later does not
    assert target[3_000] == 17_001  # across the reward-free stretch: the next reward, not 3,500
    assert target[19_700] == 29_001  # the -1 at 20,000 is not a target
    assert target[29_000] == 29_500 and target[29_800] == 30_000  # reward-free tail: start + H, clipped to N
    assert (success_targets(LONG_CUM, EpisodeRulesConfig(success_rule="demo_end")) == 30_000).all()


def test_horizon_before_after_and_at_a_reward_event():
    t = long_tracker(1_200)  # target: the +100 at 2,000 (received on frame 2,001), so 100 points to tie
    assert t.target_frame == 2_001 and t.target_score == 100.0
    assert not t.step(799, 99.0).success  # before the event, one point short
    v = t.step(801, 100.0)  # at the event: tied
    assert v.success and not v.truncated and t.success_frame == 801
    # from before the first event, both events are needed
    assert long_tracker(600).target_score == 200.0
    # after the event, a late agent that ties is still a success
    late = long_tracker(1_200)
    assert late.step(5_000, 100.0).success


def test_horizon_success_costs_a_bounded_stretch_while_the_original_rule_needs_the_rest_of_the_demo():
    horizon, original = long_tracker(1_500), long_tracker(1_500, rule="demo_end")
    assert horizon.target_score == 100.0 and original.target_score == 899.0
    assert horizon.step(501, 100.0).success  # the demo's +100 at 2,000 is 500 frames on
    v = horizon.step(501 + horizon.extra_frames, 100.0)
    assert v.truncated and v.reason == "horizon"  # a truncation (bootstrapped), named apart from the demo's end
    assert not original.step(501, 100.0).success and not original.step(27_000, 898.0).success
    assert original.step(27_501, 899.0).success


def test_standing_still_never_succeeds_across_a_reward_free_stretch_that_ends_in_a_reward():
    for start in range(2_001, 16_501, 250):  # every start with start + H inside the stretch needs the +300
        t = long_tracker(start)
        assert t.target_frame == 17_001 and t.target_score == 300.0
        for frames in range(0, 40_000, 4):
            assert not t.step(frames, 0.0).success
        assert t.step(17_001 - start, 300.0).success


def test_horizon_with_nothing_left_to_score_means_surviving_the_horizon_only():
    t = long_tracker(29_100, horizon=500)  # after the last reward; the demo has 900 frames left
    assert t.target_frame == 29_600 and t.target_score == 0.0
    assert not t.step(496, 0.0).success
    assert t.step(500, 0.0).success
    assert not long_tracker(29_100).step(500, -1.0).success  # a loss of points is not a tie


def test_horizon_longer_than_the_demo_is_the_original_rule():
    for start in (0, 400, 600, 900, 1_000):
        a = DemoEpisodeTracker(CUM, start, EpisodeRulesConfig(success_rule="horizon", success_horizon=1_001))
        b = DemoEpisodeTracker(CUM, start, EpisodeRulesConfig(success_rule="demo_end"))
        assert (a.target_frame, a.target_score) == (b.target_frame, b.target_score)
        for frames, gain in ((0, 0.0), (100, 0.0), (400, 100.0), (1000, 300.0), (1000, 400.0)):
            assert a._ties_demo(frames, gain) == b._ties_demo(frames, gain)


def test_unreachable_starts_and_the_stall_message():
    capped = {"max_episode_frames": 18_000}
    original = EpisodeRulesConfig(success_rule="demo_end", **capped)
    bad = unreachable_starts(LONG_CUM, original)
    assert bad.min() == 0 and bad.max() == 29_001 - 18_001  # 29,001 - t > 18,000
    message = unreachable_message(LONG_CUM, original)
    assert "0..11000" in message and "--max-episode-frames" in message and "--success-rule horizon" in message
    # the horizon rule's longest stretch is H plus the longest gap, here 2,001 -> 17,001: within the cap
    horizon = EpisodeRulesConfig(success_rule="horizon", success_horizon=500, **capped)
    assert len(unreachable_starts(LONG_CUM, horizon)) == 0 and unreachable_message(LONG_CUM, horizon) is None
    tight = EpisodeRulesConfig(success_rule="horizon", success_horizon=500, max_episode_frames=10_000)
    assert "--success-horizon" in unreachable_message(LONG_CUM, tight)


def test_rule_config_is_validated():
    with pytest.raises(UserError, match="--success-rule must be one of horizon, demo_end"):
        EpisodeRulesConfig(success_rule="sometimes")
    with pytest.raises(UserError, match="--success-horizon must be >= 1 frame"):
        EpisodeRulesConfig(success_horizon=0)
    with pytest.raises(UserError, match="--lag-allowance must be >= 0 frames"):
        EpisodeRulesConfig(lag_allowance=-1)
    with pytest.raises(UserError, match="--max-episode-frames must be >= 1"):
        EpisodeRulesConfig(max_episode_frames=0)
