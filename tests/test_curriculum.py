import json
import math

import numpy as np
import pytest

from curriculum_ppo.curriculum import (
    CurriculumConfig,
    CurriculumScheduler,
    StallDetector,
    UnstickConfig,
)
from curriculum_ppo.errors import UserError

N = 2000


def make(**overrides):
    config = CurriculumConfig(**{"window": 200, "min_episodes": 20, "collapse_min_episodes": 100, **overrides})
    return CurriculumScheduler(N, config)


def record_many(sched, start, successes, failures):
    for _ in range(successes):
        sched.record(start, True)
    for _ in range(failures):
        sched.record(start, False)


def test_starts_near_the_end_and_samples_in_window():
    sched = make()
    assert sched.start_frame == N - 200 and sched.window_end == N - 1
    rng = np.random.default_rng(0)
    starts = [sched.sample_start(rng) for _ in range(500)]
    assert min(starts) >= N - 200 and max(starts) <= N - 1
    assert all(sched.in_window(s) for s in starts) and not sched.in_window(N - 201)
    assert not sched.done


def test_moves_back_at_threshold_and_not_below():
    sched = make()
    front = sched.start_frame
    record_many(sched, front, successes=3, failures=17)  # 15% < 20%
    assert sched.update() is None and sched.start_frame == front
    sched = make()
    record_many(sched, front, successes=4, failures=16)  # exactly 20%
    assert sched.update() == "back"
    assert sched.start_frame == front - 100  # default step = window // 2
    assert sched.stats()["window_episodes"] == 0  # statistics reset after the move
    assert sched.history == [(0, front), (20, front - 100)]


def test_needs_min_episodes_before_deciding():
    sched = make()
    record_many(sched, sched.start_frame, successes=19, failures=0)
    assert sched.update() is None
    sched.record(sched.start_frame, True)
    assert sched.update() == "back"


def test_starts_behind_the_window_do_not_drive_moves():
    sched = CurriculumScheduler(N, make().config, initial_start=1000)
    record_many(sched, 1500, successes=50, failures=0)  # behind the window [1000, 1199]
    assert sched.update() is None
    assert sched.stats()["behind_success_rate"] == 1.0
    assert math.isnan(sched.stats()["window_success_rate"])


def test_never_below_zero_and_done_after_success_at_zero():
    sched = CurriculumScheduler(N, CurriculumConfig(window=200, min_episodes=5, step=150), initial_start=100)
    record_many(sched, 100, successes=5, failures=0)
    assert sched.update() == "back" and sched.start_frame == 0
    assert not sched.done
    record_many(sched, 0, successes=5, failures=0)
    assert sched.update() == "done" and sched.done and sched.start_frame == 0
    record_many(sched, 0, successes=5, failures=0)
    assert sched.update() is None and sched.start_frame == 0  # done is sticky


def test_moves_forward_on_collapse_but_never_past_initial():
    sched = make()
    initial = sched.start_frame
    record_many(sched, initial, successes=20, failures=0)
    assert sched.update() == "back"
    record_many(sched, sched.start_frame, successes=0, failures=99)
    assert sched.update() is None  # not enough episodes for a collapse verdict
    sched.record(sched.start_frame, False)
    assert sched.update() == "forward" and sched.start_frame == initial
    record_many(sched, sched.start_frame, successes=0, failures=200)
    assert sched.update() is None and sched.start_frame == initial


def test_old_statistics_are_forgotten():
    """Counts are halved past max_window_episodes so the rate follows recent performance."""
    sched = make(max_window_episodes=200)
    record_many(sched, sched.start_frame, successes=0, failures=150)
    assert sched.update() is None  # collapse at the initial start: nowhere to go
    record_many(sched, sched.start_frame, successes=1, failures=59)
    assert sched.update() is None  # 210 episodes -> halved
    assert sched.stats()["window_episodes"] == pytest.approx(105.0)
    # 40 recent successes now outweigh the halved failures: 40.5 / 145 >= 20%.
    # Without forgetting it would be 41 / 250 < 20%.
    record_many(sched, sched.start_frame, successes=40, failures=0)
    assert sched.update() == "back"


def test_random_later_fraction():
    sched = CurriculumScheduler(N, CurriculumConfig(window=200), initial_start=1000)
    rng = np.random.default_rng(123)
    starts = np.array([sched.sample_start(rng) for _ in range(10_000)])
    behind = starts > sched.window_end
    assert 0.18 < behind.mean() < 0.22
    assert starts[behind].max() <= N - 1 and starts.min() >= 1000
    # roughly uniform over the 800 frames behind the window
    assert abs(np.median(starts[behind]) - 1600) < 40


def test_no_room_behind_means_all_in_window():
    sched = make()
    rng = np.random.default_rng(0)
    assert all(sched.sample_start(rng) >= sched.start_frame for _ in range(200))


def test_worker_spreading_covers_window_by_strata():
    sched = CurriculumScheduler(N, CurriculumConfig(window=200, random_start_fraction=0.0), initial_start=1000)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(400):
        for worker in range(8):
            start = sched.sample_start(rng, worker_index=worker, num_workers=8)
            assert 1000 + worker * 25 <= start < 1000 + (worker + 1) * 25
            seen.add(start)
    assert seen == set(range(1000, 1200))


def test_frame_granularity():
    sched = CurriculumScheduler(1001, CurriculumConfig(window=100, min_episodes=1), frame_granularity=4)
    rng = np.random.default_rng(0)
    assert sched.start_frame % 4 == 0
    assert all(sched.sample_start(rng) % 4 == 0 for _ in range(100))
    sched.record(sched.start_frame + 3, True)
    assert sched.update() == "back" and sched.start_frame % 4 == 0


def test_state_dict_round_trip_reproduces_decisions():
    rng = np.random.default_rng(5)
    a = make()
    for _ in range(30):
        a.record(a.sample_start(rng), bool(rng.random() < 0.5))
    a.update()
    a.record(a.start_frame, True)  # pending, not yet applied
    state = json.loads(json.dumps(a.state_dict()))
    b = make()
    b.load_state_dict(state)
    assert b.state_dict() == a.state_dict()
    for _ in range(300):
        start = a.sample_start(rng)
        success = bool(rng.random() < 0.3)
        a.record(start, success)
        b.record(start, success)
        assert a.update() == b.update()
        assert a.start_frame == b.start_frame
    assert a.history == b.history and len(a.history) > 2


def test_load_rejects_other_demo():
    state = make().state_dict()
    with pytest.raises(UserError):
        CurriculumScheduler(N + 1, CurriculumConfig(window=200)).load_state_dict(state)


def test_merged_ranks_decide_like_one_scheduler():
    rng = np.random.default_rng(7)
    ranks = [make(), make()]
    single = make()
    for _ in range(40):
        for rank in ranks:
            for _ in range(3):
                start = rank.sample_start(rng)
                success = bool(rng.random() < 0.6 * (start - 1500) / 500)
                rank.record(start, success)
                single.record(start, success)
        # What torch.distributed.all_reduce(SUM) does, simulated across the two ranks.
        pending = [rank.take_pending_counts() for rank in ranks]
        assert pending[0].shape == (ranks[0].vector_size,) and pending[0].dtype == np.float64
        summed = pending[0] + pending[1]
        moves = [rank.update(all_reduce=lambda _v: summed) for rank in ranks]
        expected = single.update()
        assert moves == [expected, expected]
        assert ranks[0].start_frame == ranks[1].start_frame == single.start_frame
    assert single.moves >= 1


def test_simulated_agent_converges_to_frame_zero():
    """The agent masters frames within `skill` of the demo end; practice near its frontier extends it."""
    rng = np.random.default_rng(0)
    sched = CurriculumScheduler(N, CurriculumConfig(window=100, min_episodes=32, collapse_min_episodes=512))
    skill = 50.0
    for _ in range(3000):
        for worker in range(16):
            start = sched.sample_start(rng, worker, 16)
            distance = N - start
            success = rng.random() < 1.0 / (1.0 + math.exp((distance - skill) / 15.0))
            if abs(distance - skill) < 60:
                skill += 0.3
            sched.record(start, success)
        sched.update()
        if sched.done:
            break
    assert sched.done and sched.start_frame == 0
    frames = [f for _, f in sched.history]
    assert frames[0] == N - 100 and frames[-1] == 0


def test_config_validation():
    with pytest.raises(UserError):
        CurriculumConfig(window=0)
    with pytest.raises(UserError):
        CurriculumConfig(collapse_threshold=0.3)
    with pytest.raises(UserError):
        CurriculumScheduler(10, CurriculumConfig(), initial_start=10)


# ----------------------------------------------------------------- stalls
def test_stall_detector_decays_after_patience_and_respects_min_scale():
    det = StallDetector(UnstickConfig(patience_frames=100, decay=0.5, min_scale=0.2))
    assert det.update(0, 500) is None
    assert det.update(99, 500) is None
    assert det.update(100, 500) == 0.5
    assert det.update(150, 500) is None  # patience restarts after a decay
    assert det.update(200, 500) == 0.25
    assert det.update(300, 500) == 0.2
    assert det.update(400, 500) is None and det.scale == 0.2


def test_stall_detector_resets_on_new_lowest_start():
    det = StallDetector(UnstickConfig(patience_frames=100))
    det.update(0, 500)
    assert det.update(90, 400) is None  # progress at 90
    assert det.update(180, 400) is None
    assert det.update(185, 500) is None  # forward move: no progress, but no reset either
    assert det.update(189, 400) is None  # back to the old best: not new progress...
    assert det.update(190, 400) == 0.5  # ...so patience still counts from the progress at 90


def test_stall_detector_disabled_and_state_round_trip():
    det = StallDetector(UnstickConfig(patience_frames=10, enabled=False))
    det.update(0, 5)
    assert det.update(1000, 5) is None and det.scale == 1.0
    a = StallDetector(UnstickConfig(patience_frames=10))
    a.update(0, 5)
    a.update(10, 5)
    b = StallDetector(UnstickConfig(patience_frames=10))
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.scale == a.scale == 0.5
    assert a.update(20, 5) == b.update(20, 5) == 0.25


def test_easy_back_of_window_does_not_carry_a_failing_front():
    """Regression (bundled demo, 2026-11-26): successes near the window's end must not move it back
    while the hardest starts, at its front, never succeed."""
    sched = make(window=200, min_episodes=20, front_half_life=None)  # plain counts: exact arithmetic below
    front, back = sched.start_frame, sched.start_frame + 180
    record_many(sched, front, 0, 60)
    record_many(sched, back, 60, 0)  # 50% over the whole window
    assert sched.update() is None and sched.start_frame == front
    record_many(sched, front + 10, 20, 40)  # front quarter now at 20/120 < 20%
    assert sched.update() is None
    record_many(sched, front + 10, 10, 0)  # 30/130 = 23% >= 20%
    assert sched.update() == "back"


def test_counts_by_start_are_all_time_and_survive_moves():
    sched = CurriculumScheduler(1000, CurriculumConfig(window=100, min_episodes=4), frame_granularity=4)
    for start, ok in [(950, True), (950, False), (951, True), (980, False)]:  # 951 shares slot 950..953
        sched.record(start, ok)
    for _ in range(4):
        sched.record(sched.start_frame, True)
    front = sched.start_frame
    assert sched.update() is not None  # the window moved back; the counts stay
    starts, attempts, successes = sched.counts_by_start()
    counts = {int(s): (int(a), int(k)) for s, a, k in zip(starts, attempts, successes)}
    assert counts[948] == (3, 2) and counts[980] == (1, 0)
    assert front % 4 == 0 and counts[front] == (4, 4)


# ------------------------------------------------------- recency of the front
def test_front_rate_weighs_recent_episodes_by_half_life():
    """An episode's weight halves after `front_half_life` newer front episodes; the window's
    collapse statistics stay plain counts since the last move."""
    sched = make(min_episodes=20, front_half_life=64.0, success_threshold=0.9)
    front = sched.start_frame
    record_many(sched, front, successes=0, failures=64)
    assert sched.update() is None
    record_many(sched, front, successes=64, failures=0)
    assert sched.update() is None  # 64 / (32 + 64) = 67% < 90%
    stats = sched.stats()
    assert stats["front_success_rate"] == pytest.approx(64 / 96)
    assert stats["window_success_rate"] == pytest.approx(0.5)  # since the last move, unweighted
    assert stats["window_bin_success_rates"][0] == pytest.approx(64 / 96)
    record_many(sched, front, successes=128, failures=0)  # weights: 16 + 128 successes vs 8 failures
    assert sched.update() == "back"


def test_long_failing_history_does_not_hold_back_a_learned_front():
    """Regression (bundled demo, 2026-11-26): the front's failures from before the agent learned the
    skull jump kept the plain since-move rate at 4.95% of 2,443 episodes while its last 212 episodes
    had succeeded 53% of the time. Here: 2,061 failures, then 48%, fed in rollout-sized batches; the
    recency-weighted front moves back within ~2 half-lives, plain counts never would on this evidence."""
    rng = np.random.default_rng(3)
    runs = {}
    for half_life in (64.0, None, 0):  # 0 = no forgetting, as None
        sched = make(min_episodes=32, collapse_min_episodes=100_000, max_window_episodes=None,
                     front_half_life=half_life)
        front = sched.start_frame
        for _ in range(2061 // 3):
            record_many(sched, front, successes=0, failures=3)
            assert sched.update() is None
        moved_after = None
        for batch in range(100):  # 400 episodes at 48%
            for _ in range(4):
                sched.record(front, bool(rng.random() < 0.48))
            if sched.update() == "back":
                moved_after = 4 * (batch + 1)
                break
        runs[half_life] = moved_after
    assert runs[None] is None and runs[0] is None
    assert runs[64.0] is not None and runs[64.0] <= 128


def test_min_episodes_counts_real_front_episodes_and_move_resets_recency():
    sched = make(min_episodes=20)  # default half-life
    front = sched.start_frame
    for batch in (10, 9):
        record_many(sched, front, successes=batch, failures=0)
        assert sched.update() is None  # 19 episodes < 20
    record_many(sched, front + 60, successes=50, failures=0)  # outside the front: not evidence
    assert sched.update() is None
    sched.record(front, True)
    sched.apply_global_counts(sched.take_pending_counts())  # update() in two halves, to look in between
    # Decayed, the 20 front episodes weigh < 20; what counts for min_episodes is the real number.
    assert sched._front_counts()[0] < 19.9
    assert sched._decide() == "back"
    assert math.isnan(sched.stats()["front_success_rate"])  # fresh statistics for the new front
    record_many(sched, sched.start_frame, successes=19, failures=0)
    assert sched.update() is None


def test_checkpoint_without_recency_starts_the_front_statistics_afresh():
    """Checkpoints written before front_half_life existed hold only plain counts."""
    old = make(min_episodes=20, front_half_life=None)
    record_many(old, old.start_frame, successes=0, failures=500)
    old.update()
    state = old.state_dict()
    del state["recent"], state["front_episodes"]
    new = make(min_episodes=20)
    new.load_state_dict(state)
    assert new.stats()["window_episodes"] == 500  # the collapse statistics are kept
    record_many(new, new.start_frame, successes=19, failures=0)
    assert new.update() is None  # 19 new episodes are not enough evidence yet
    new.record(new.start_frame, True)
    assert new.update() == "back"  # 20 of 20 recent successes; the 500 old failures are not in the rate


def test_front_half_life_validation():
    with pytest.raises(UserError):
        CurriculumConfig(front_half_life=-1.0)
    assert CurriculumConfig(front_half_life=None).front_half_life is None
    assert CurriculumConfig(front_half_life=0).front_half_life == 0  # no forgetting, as None (see above)


def test_counts_between_two_states_of_one_run():
    from curriculum_ppo.curriculum import counts_between

    sched = make()
    record_many(sched, N - 10, successes=1, failures=1)
    sched.update()
    older = json.loads(json.dumps(sched.state_dict()))
    record_many(sched, N - 10, successes=2, failures=1)
    record_many(sched, N - 50, successes=0, failures=4)
    sched.update()
    starts, attempts, successes = counts_between(older, sched.state_dict())
    assert starts.tolist() == [N - 50, N - 10] and attempts.tolist() == [4, 3] and successes.tolist() == [0, 2]
    with pytest.raises(UserError, match="more episodes than the newer"):
        counts_between(sched.state_dict(), older)
    with pytest.raises(UserError, match="differ in demo_length"):
        counts_between(CurriculumScheduler(N + 1, CurriculumConfig(window=200)).state_dict(), older)


def test_state_summary_reads_a_saved_state_as_the_scheduler_does():
    """Checkpoint readers (evaluate, inspect --since) get the start frame from ``state_summary``, not the slots."""
    from curriculum_ppo.curriculum import state_summary

    sched = CurriculumScheduler(N, CurriculumConfig(window=200, min_episodes=20), frame_granularity=7)
    record_many(sched, sched.start_frame, 20, 0)
    assert sched.update() == "back"
    summary = state_summary(json.loads(json.dumps(sched.state_dict())))
    assert summary == {"demo_length": N, "window_start": sched.start_frame, "done": False,
                       "start_frame": sched.start_frame}
    assert summary["start_frame"] % 7 == 0 and summary["start_frame"] < N - 200
    while not sched.done:  # succeed everywhere until the window reached frame 0
        for _ in range(20):
            sched.record(sched.start_frame, True)
        sched.update()
    summary = state_summary(sched.state_dict())
    assert summary["done"] and summary["start_frame"] == 0 == sched.start_frame == summary["window_start"]


# ---------------------------------------------------------- adaptive step
def _simulated_moves(**config) -> list[list]:
    """``[update, move, start frame after it]`` of a seeded simulated agent whose skill (frames from the
    demo end it masters) grows, and collapses by 40% every 400 updates until update 2000: moves back,
    forward (collapses) and done, with frame granularity 2 and the collapse statistics' forgetting."""
    rng = np.random.default_rng(11)
    cfg = CurriculumConfig(**{"window": 200, "min_episodes": 20, "collapse_min_episodes": 100,
                              "max_window_episodes": 400, **config})
    sched = CurriculumScheduler(1200, cfg, frame_granularity=2)
    skill, moves = 120.0, []
    for update in range(3000):
        for worker in range(8):
            start = sched.sample_start(rng, worker, 8)
            sched.record(start, bool(rng.random() < 1.0 / (1.0 + math.exp((1200 - start - skill) / 25.0))))
        if update % 400 == 399 and update < 2000:
            skill *= 0.6
        skill += 1.2
        move = sched.update()
        if move is not None:
            moves.append([update, move, sched.start_frame])
        if sched.done:
            break
    return moves


# _simulated_moves() recorded on the scheduler before the adaptive step existed.
MOVES_BEFORE_ADAPTIVE_STEP = [
    [9, "back", 900], [124, "back", 800], [203, "back", 700], [294, "back", 600], [361, "back", 500],
    [663, "back", 400], [741, "back", 300], [1107, "back", 200], [1179, "back", 100], [1319, "forward", 200],
    [1335, "forward", 300], [1432, "back", 200], [1530, "back", 100], [1760, "forward", 200], [1873, "back", 100],
    [1960, "back", 0], [2144, "forward", 100], [2339, "back", 0], [2408, "done", 0],
]


def test_without_the_adaptive_step_every_decision_is_as_before():
    assert not CurriculumConfig().adaptive_step  # off by default
    assert _simulated_moves() == MOVES_BEFORE_ADAPTIVE_STEP
    assert _simulated_moves(adaptive_step=False) == MOVES_BEFORE_ADAPTIVE_STEP


def test_adaptive_step_grows_with_the_front_rate_over_the_threshold_capped_at_the_window():
    """Window 200, step 100, threshold 20%: the step scales by rate / threshold, within [100, 200]."""
    for successes, moved in ((4, 100), (5, 125), (6, 150), (8, 200), (20, 200)):
        sched = make(adaptive_step=True)
        front = sched.start_frame
        record_many(sched, front, successes=successes, failures=20 - successes)
        assert sched.update() == "back" and sched.start_frame == front - moved, successes
        assert sched.history == [(0, front), (20, front - moved)]
    sched = make(adaptive_step=True)
    record_many(sched, sched.start_frame, successes=3, failures=17)  # below the threshold: no move at all
    assert sched.update() is None
    # A step configured above the window is never shortened by the cap.
    sched = CurriculumScheduler(N, CurriculumConfig(window=100, step=150, min_episodes=20, adaptive_step=True))
    record_many(sched, sched.start_frame, successes=4, failures=16)
    assert sched.update() == "back" and sched.start_frame == N - 100 - 150


def test_adaptive_step_uses_the_recency_weighted_front_rate():
    """The rate that scales the step is the one that triggered the move: the decayed front rate, not the
    plain rate since the last move (here 50% plain, 64/96 decayed)."""
    sched = make(adaptive_step=True, min_episodes=20, front_half_life=64.0, success_threshold=0.5)
    front = sched.start_frame
    record_many(sched, front, successes=0, failures=64)
    assert sched.update() is None
    record_many(sched, front, successes=64, failures=0)
    assert sched.update() == "back"
    assert sched.start_frame == front - round(100 * (64 / 96) / 0.5)  # 133, not the plain rate's 100


def test_adaptive_step_never_moves_past_frame_zero_and_then_finishes_as_before():
    sched = CurriculumScheduler(N, CurriculumConfig(window=200, min_episodes=5, adaptive_step=True), initial_start=150)
    record_many(sched, 150, successes=5, failures=0)  # 100%: a 200-frame move, clipped at frame 0
    assert sched.update() == "back" and sched.start_frame == 0 and not sched.done
    record_many(sched, 0, successes=5, failures=0)
    assert sched.update() == "done" and sched.done and sched.start_frame == 0
    assert sched.history == [(0, 150), (5, 0)]


def test_after_an_adaptive_move_a_collapse_moves_forward_by_the_plain_step():
    """The long move resets the statistics like any move; a collapse then comes back by the plain step,
    never past the initial start; the history records every start frame."""
    sched = make(adaptive_step=True)
    initial = sched.start_frame
    record_many(sched, initial, successes=20, failures=0)
    assert sched.update() == "back" and sched.start_frame == initial - 200
    stats = sched.stats()
    assert stats["window_episodes"] == 0 and math.isnan(stats["front_success_rate"])
    record_many(sched, sched.start_frame, successes=0, failures=99)
    assert sched.update() is None  # the collapse rule counts from the move: 99 < 100 episodes
    sched.record(sched.start_frame, False)
    assert sched.update() == "forward" and sched.start_frame == initial - 100
    record_many(sched, sched.start_frame, successes=0, failures=100)
    assert sched.update() == "forward" and sched.start_frame == initial
    record_many(sched, sched.start_frame, successes=0, failures=200)
    assert sched.update() is None and sched.start_frame == initial
    record_many(sched, initial, successes=200, failures=0)  # the 200 failures are mostly forgotten by now
    assert sched.update() == "back" and sched.start_frame == initial - 200
    assert sched.history == [(0, initial), (20, initial - 200), (120, initial - 100), (220, initial),
                             (620, initial - 200)]


def test_adaptive_moves_stay_within_the_step_and_the_window_in_a_simulated_run():
    moves = _simulated_moves(adaptive_step=True)
    assert moves != MOVES_BEFORE_ADAPTIVE_STEP and moves[-1][1] == "done"
    before, longest_back = 1000, 0  # the initial window's front: the demo's 1200 frames minus the window
    for _, move, after in moves:
        if move == "back":
            assert 100 <= before - after <= 200 or (after == 0 and before <= 200)
            longest_back = max(longest_back, before - after)
        elif move == "forward":
            assert after - before == 100
        before = after
    assert longest_back > 100


def test_adaptive_step_state_round_trips_and_old_states_load():
    """The rule keeps no state of its own: a checkpoint written before the option existed (no
    ``adaptive_step`` in its config) loads, and the scheduler decides with the config in use."""
    rng = np.random.default_rng(9)
    a = make(adaptive_step=True)
    for _ in range(200):
        a.record(a.sample_start(rng), bool(rng.random() < 0.6))
        a.update()
    state = json.loads(json.dumps(a.state_dict()))
    assert state["config"]["adaptive_step"] is True
    b = make(adaptive_step=True)
    b.load_state_dict(state)
    assert b.state_dict() == a.state_dict()
    del state["config"]["adaptive_step"]
    c = make(adaptive_step=True)
    c.load_state_dict(state)
    for _ in range(300):
        start, success = a.sample_start(rng), bool(rng.random() < 0.6)
        for sched in (a, c):
            sched.record(start, success)
        assert a.update() == c.update() and a.start_frame == c.start_frame
    assert a.history == c.history and len(a.history) > 3
