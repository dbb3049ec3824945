"""The env worker pools on the real emulator: every variant, in-process included, steps exactly what one batch would."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
import pytest

from curriculum_ppo.errors import UserError
from curriculum_ppo.envs.registry import EnvFactory
from curriculum_ppo.vec.pool import EnvPool, InProcessEnvPool, WorkerError, group_slices
from curriculum_ppo.vec.shared import FIELDS, layout
from curriculum_ppo.vec.worker import spin_until_ready as _spin_until_ready

TOY = {"length": 4, "num_actions": 2, "lock_seed": 0}


def test_group_slices_cover_every_env_once():
    slices = group_slices(8, 3)
    assert [(s.start, s.stop) for s in slices] == [(0, 2), (2, 5), (5, 8)]
    assert [(s.start, s.stop) for s in group_slices(4, 1)] == [(0, 4)]
    with pytest.raises(UserError, match="env groups must be in 1..4"):
        group_slices(4, 5)
    with pytest.raises(UserError, match="env groups must be in 1..4"):
        group_slices(4, 0)


def _play(pool, actions_per_step, starts, grouped: bool):
    """Step ``pool`` through ``actions_per_step``; record everything it publishes after each step."""
    pool.set_options([{"start_frame": int(t)} for t in starts])
    pool.reset()
    record = []
    for step, actions in enumerate(actions_per_step):
        if grouped:  # both groups in flight at once, as the Trainer pipelines them
            for g, sl in enumerate(pool.group_slices):
                pool.step_async(actions[sl], group=g)
            episodes = [e for g in range(pool.num_groups) for e in pool.step_wait(group=g)]
        else:
            episodes = pool.step(actions)
        for e in episodes:  # restart finished envs somewhere else, identically in both pools
            pool.set_options({"start_frame": int((starts[e["env"]] + 37 * (step + 1)) % 600)}, e["env"])
        record.append((pool.obs.copy(), pool.rewards.copy(), pool.terminated.copy(), pool.truncated.copy(),
                       sorted((e["env"], e["score"], e["reason"]) for e in episodes)))
    return record


@pytest.mark.parametrize("groups,learner_is_worker,by_worker,spin",
                         [(2, False, False, 0), (1, True, False, 0), (2, True, False, 0), (2, False, True, 0),
                          (2, True, True, 0), (4, False, True, 0), (1, True, False, 2e-3), (2, True, False, 2e-3),
                          (1, False, False, 2e-3)],
                         ids=["2-groups", "learner-is-worker", "both", "groups-by-worker", "by-worker-learner",
                              "4-groups-by-2-workers", "learner-is-worker-spin", "both-spin", "spin-two-pipes"])
def test_pool_variants_step_exactly_what_one_batch_steps(bundled_demo_path, groups, learner_is_worker, by_worker,
                                                         spin):
    """Same seeds, starts and actions: a pool with 2 groups in flight (spread over the workers or one
    per worker) and/or the learner process stepping worker 0's envs, and/or polling its pipes before
    blocking, publishes the same observations, rewards and episode ends as the plain pool, step for
    step (ALE is deterministic without sticky actions), autoresets included."""
    spec = EnvFactory("atari", demo_path=str(bundled_demo_path))
    starts = np.array([250, 400, 560, 620])
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 18, size=(60, 4))
    with EnvPool(spec, 4, num_workers=2, seed=5) as one, \
            EnvPool(spec, 4, num_workers=2, seed=5, num_groups=groups, learner_is_worker=learner_is_worker,
                    groups_by_worker=by_worker, spin_seconds=spin) as two:
        if groups == 2:
            assert [(s.start, s.stop) for s in two.group_slices] == [(0, 2), (2, 4)]
            if by_worker:  # group g lives in worker g alone
                assert two.worker_groups == [[(0, 2), (2, 2)], [(0, 0), (2, 4)]]
            else:  # each group over both workers
                assert two.worker_groups == [[(0, 1), (2, 3)], [(1, 2), (3, 4)]]
        if groups == 4:  # two groups per worker, so each worker has two steps queued on its pipe
            assert two.worker_groups == [[(0, 1), (1, 1), (2, 3), (3, 3)], [(0, 0), (1, 2), (2, 2), (3, 4)]]
        assert len(two.processes) == (1 if learner_is_worker else 2)
        a = _play(one, actions, starts, grouped=False)
        b = _play(two, actions, starts, grouped=groups > 1)
    assert sum(len(r[4]) for r in a) >= 3  # episodes ended and restarted along the way
    for (obs_a, rew_a, term_a, trunc_a, eps_a), (obs_b, rew_b, term_b, trunc_b, eps_b) in zip(a, b):
        assert np.array_equal(obs_a, obs_b)
        assert np.array_equal(rew_a, rew_b) and np.array_equal(term_a, term_b) and np.array_equal(trunc_a, trunc_b)
        assert eps_a == eps_b


@pytest.mark.parametrize("groups", [1, 2], ids=["one-batch", "2-groups"])
def test_the_in_process_pool_steps_exactly_what_the_worker_pool_steps(bundled_demo_path, groups):
    """The same factory, seeds, reset options and actions: the in-process pool publishes what the
    worker processes publish, step for step, autoresets included."""
    factory = EnvFactory("atari", demo_path=str(bundled_demo_path))
    starts = np.array([250, 400, 560, 620])
    actions = np.random.default_rng(1).integers(0, 18, size=(60, 4))
    with EnvPool(factory, 4, num_workers=2, seed=5) as workers:
        a = _play(workers, actions, starts, grouped=False)
    with InProcessEnvPool(factory, 4, seed=5, num_groups=groups) as here:
        b = _play(here, actions, starts, grouped=groups > 1)
    assert sum(len(r[4]) for r in a) >= 3
    for ra, rb in zip(a, b):
        for x, y in zip(ra[:4], rb[:4]):
            assert x.dtype == y.dtype and np.array_equal(x, y)
        assert ra[4] == rb[4]


def _position(pool, i: int) -> int:
    return int(np.asarray(pool.obs[i]).argmax())


def _wrong(pool, code) -> np.ndarray:
    """For every env the action that ends its toy episode at once (not the lock's code at its position)."""
    return np.array([1 - code[_position(pool, i)] for i in range(pool.num_envs)])


@pytest.mark.parametrize("in_process", [True, False], ids=["in-process", "worker-process"])
def test_reset_options_reach_the_env_with_the_next_command_and_stay(in_process):
    """Options set while a step is in flight apply from the next command on (in both pools alike);
    an env keeps its options for every later autoreset until they are replaced; the arrays have
    the one layout with the env's own observation dtype."""
    from curriculum_ppo.envs.toy import lock_code

    code = lock_code(**TOY)
    factory = EnvFactory("toy", **TOY)
    pool = InProcessEnvPool(factory, 2, seed=0) if in_process else EnvPool(factory, 2, num_workers=1, seed=0)
    with pool:
        want = layout(2, (1, 1, 5), np.float32)
        assert {k: (getattr(pool, k).shape, getattr(pool, k).dtype) for k in FIELDS} == want
        pool.set_options({"start_frame": 1}, 0)
        pool.set_options([{"start_frame": 3}], [1])
        pool.reset()
        assert [_position(pool, 0), _position(pool, 1)] == [1, 3]
        pool.step_async(_wrong(pool, code))
        pool.set_options({"start_frame": 2}, 0)  # too late for this step's autoreset
        assert sorted(e["env"] for e in pool.step_wait()) == [0, 1]
        assert [_position(pool, 0), _position(pool, 1)] == [1, 3]
        for _ in range(2):  # from now on env 0 restarts at 2, env 1 still at 3
            assert len(pool.step(_wrong(pool, code))) == 2
            assert [_position(pool, 0), _position(pool, 1)] == [2, 3]
        pool.set_options({})  # the env's own default: the lock's real start
        pool.reset()
        assert [_position(pool, 0), _position(pool, 1)] == [0, 0]
        with pytest.raises(ValueError, match="2 reset options for 1 envs"):
            pool.set_options([{}, {}], [0])
        with pytest.raises(IndexError, match="env 2 not in 0..1"):
            pool.set_options({}, 2)


def test_reset_options_wait_for_a_worker_that_the_step_does_not_message():
    """Groups by worker: options for an env of group 1 set before a step of group 0 alone (which
    messages only worker 0) still reach worker 1 with its next step."""
    from curriculum_ppo.envs.toy import lock_code

    code = lock_code(**TOY)
    with EnvPool(EnvFactory("toy", **TOY), 4, num_workers=2, seed=0, num_groups=2, groups_by_worker=True) as pool:
        pool.reset()
        pool.set_options({"start_frame": 2}, 3)
        pool.step(np.zeros(2, int), group=0)
        pool.step(_wrong(pool, code)[2:], group=1)
        assert [_position(pool, 2), _position(pool, 3)] == [0, 2]


def test_groups_must_be_waited_for_in_the_order_they_were_started():
    spec = EnvFactory("toy", **TOY)
    pool = InProcessEnvPool(spec, num_envs=4, seed=0, num_groups=2)
    pool.reset()
    pool.step_async(np.zeros(2, int), group=0)
    with pytest.raises(RuntimeError, match="group 0 started again"):
        pool.step_async(np.zeros(2, int), group=0)
    pool.step_async(np.zeros(2, int), group=1)
    with pytest.raises(RuntimeError, match="waited for env group 1, but the next one to finish is 0"):
        pool.step_wait(group=1)
    pool.step_wait(group=0)
    pool.step_wait(group=1)
    with pytest.raises(ValueError, match="group 2 not in 0..1"):
        pool.step_async(np.zeros(2, int), group=2)
    with pytest.raises(RuntimeError, match="next one to finish is nothing"):
        pool.step_wait(group=0)


@pytest.mark.parametrize("spin", [0.0, 2e-3], ids=["blocking", "spinning"])
def test_a_dead_worker_is_named_when_the_learner_is_worker_0(bundled_demo_path, spin):
    """Also while the pool spins: polling a dead worker's pipe reports it (EOF counts as ready)."""
    spec = EnvFactory("atari", demo_path=str(bundled_demo_path))
    with EnvPool(spec, 4, num_workers=2, seed=0, learner_is_worker=True, spin_seconds=spin) as pool:
        pool.set_options({"start_frame": 600})
        pool.reset()
        victim = pool.processes[0]
        victim.kill()
        victim.join()
        with pytest.raises(WorkerError, match=r"env worker 1 \(pid \d+, envs 2\.\.3\) died"):
            pool.step(np.zeros(4, int))


def test_spin_until_ready_polls_then_gives_up():
    """The bounded poll that precedes blocking: True as soon as a message waits, False after the
    spin time without one, and no polling at all when the spin time is 0."""
    here, there = mp.Pipe()
    try:
        start = time.perf_counter()
        assert _spin_until_ready([here], 0.05) is False
        assert time.perf_counter() - start >= 0.05
        start = time.perf_counter()
        assert _spin_until_ready([here], 0.0) is False
        assert time.perf_counter() - start < 0.5
        there.send("step")
        start = time.perf_counter()
        assert _spin_until_ready([here], 5.0) is True
        assert time.perf_counter() - start < 1.0
        assert here.recv() == "step"
        there.close()  # a dead peer: end-of-file counts as ready, so the caller's recv() sees it at once
        start = time.perf_counter()
        assert _spin_until_ready([here], 5.0) is True
        assert time.perf_counter() - start < 1.0
        with pytest.raises(EOFError):
            here.recv()
    finally:
        here.close()
        there.close()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads CPU time from /proc")
def test_a_spinning_worker_spins_then_blocks_when_idle(bundled_demo_path):
    """The worker really spins after answering (it burns CPU while the learner is away), and only for
    ``spin_seconds``: then it blocks on its pipe instead of burning its core (an idle pool costs
    nothing, e.g. while a checkpoint is written)."""
    spec = EnvFactory("atari", demo_path=str(bundled_demo_path))
    with EnvPool(spec, 2, num_workers=1, seed=0, spin_seconds=1.0) as pool:
        pool.set_options({"start_frame": 600})
        pool.reset()
        pool.step(np.zeros(2, int))
        pid = pool.processes[0].pid
        before = _cpu_seconds(pid)
        time.sleep(0.5)  # inside the spin
        assert _cpu_seconds(pid) - before > 0.05  # a blocked worker gets ~0; a spinning one, its share of a core
        time.sleep(0.7)  # past it: the worker now blocks on its pipe
        before = _cpu_seconds(pid)
        time.sleep(1.0)
        assert _cpu_seconds(pid) - before < 0.2
        pool.step(np.zeros(2, int))  # and still answers


def test_groups_by_worker_need_a_multiple_of_the_workers(bundled_demo_path):
    with pytest.raises(UserError, match="need a multiple of the 2 workers as groups, got 3"):
        EnvPool(EnvFactory("atari", demo_path=str(bundled_demo_path)), 6, num_workers=2, num_groups=3, groups_by_worker=True)


def test_a_dead_worker_is_named_when_groups_are_by_worker(bundled_demo_path):
    """Only the owner of a group is messaged: with worker 1 dead, group 0 (worker 0's) still steps,
    and group 1's step reports the dead worker by name instead of hanging."""
    spec = EnvFactory("atari", demo_path=str(bundled_demo_path))
    with EnvPool(spec, 4, num_workers=2, seed=0, num_groups=2, groups_by_worker=True) as pool:
        pool.set_options({"start_frame": 600})
        pool.reset()
        victim = pool.processes[1]
        victim.kill()
        victim.join()
        before = pool.obs[:2].copy()
        for _ in range(3):
            pool.step(np.full(2, 3), group=0)  # RIGHT: the picture changes
        assert not np.array_equal(pool.obs[:2], before)
        with pytest.raises(WorkerError, match=r"env worker 1 \(pid \d+, envs 2\.\.3\) died"):
            pool.step(np.zeros(2, int), group=1)
