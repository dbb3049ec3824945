"""The toy combination lock, the MLP policy, and the scaling claim in miniature.

The last test trains through the real :class:`~curriculum_ppo.train.Trainer`
(``scripts/toy_scaling.py``'s ``run_one``): with the same small budget, the
backward curriculum solves a lock that plain PPO from the start cannot.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from curriculum_ppo.envs.registry import EnvFactory
from curriculum_ppo.envs.toy import (ToyLockEnv, batch_success_rate, lock_code, make_toy_env, toy_demo,
                                     toy_demo_info)
from curriculum_ppo.ppo.learner import PPOConfig, PPOLearner, RolloutBatch
from curriculum_ppo.ppo.policy import PolicyConfig
from curriculum_ppo.train import Trainer, build_policy, load_checkpoint
from curriculum_ppo.vec import InProcessEnvPool

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _play(env: ToyLockEnv, actions):
    out = None
    for a in actions:
        out = env.step(int(a))
        if out[2] or out[3]:
            break
    return out


# -- env -----------------------------------------------------------------------------------
def test_correct_sequence_opens_the_lock():
    env = make_toy_env(seed=0, length=6, num_actions=4, lock_seed=3)
    obs, info = env.reset()
    assert obs.dtype == np.float32 and obs.shape == (1, 1, 7) and obs.ravel()[0] == 1.0 and obs.sum() == 1.0
    assert info["start_frame"] is None and info["warmup"] is False
    rewards = []
    for p, a in enumerate(env.code):
        obs, reward, terminated, truncated, info = env.step(int(a))
        rewards.append(reward)
        assert obs.argmax() == p + 1 and not truncated
        assert terminated == (p == 5)
    assert rewards == [0.0] * 5 + [1.0]
    assert info["episode"] == {"score": 1.0, "frames": 6, "start_frame": None, "success": True, "reason": "opened"}


def test_wrong_action_terminates_without_reward():
    env = make_toy_env(seed=0, length=5, num_actions=2, lock_seed=1)
    env.reset()
    env.step(int(env.code[0]))
    wrong = 1 - int(env.code[1])
    obs, reward, terminated, truncated, info = env.step(wrong)
    assert reward == 0.0 and terminated and not truncated
    assert obs.argmax() == 1  # still at position 1
    assert info["episode"]["success"] is False and info["episode"]["reason"] == "wrong_action"
    assert info["episode"]["frames"] == 2
    with pytest.raises(RuntimeError):
        env.step(0)


def test_start_frame_is_the_demo_state():
    env = make_toy_env(seed=0, length=8, num_actions=3, lock_seed=2)
    obs, info = env.reset(options={"start_frame": 5})
    assert obs.argmax() == 5 and info["start_frame"] == 5 and env.position == 5
    out = _play(env, env.code[5:])
    assert out[1] == 1.0 and out[2]
    assert out[4]["episode"] == {"score": 1.0, "frames": 3, "start_frame": 5, "success": True, "reason": "opened"}
    env.reset(options={"start_frame": 7})
    out = env.step((int(env.code[7]) + 1) % 3)
    assert out[4]["episode"]["success"] is False and out[4]["episode"]["start_frame"] == 7
    env.reset(options={"start_frame": None})
    assert env.position == 0
    for bad in (-1, 8):
        with pytest.raises(ValueError):
            env.reset(options={"start_frame": bad})


def test_save_and_restore_state():
    env = make_toy_env(seed=0, length=6, num_actions=2, lock_seed=4)
    env.reset(options={"start_frame": 1})
    env.step(int(env.code[1]))
    saved = env.save_state()
    assert isinstance(saved, bytes)
    # diverge: fail
    env.step(1 - int(env.code[2]))
    env.restore_state(saved)
    assert env.position == 2
    out = _play(env, env.code[2:])
    assert out[4]["episode"] == {"score": 1.0, "frames": 5, "start_frame": 1, "success": True, "reason": "opened"}
    other = make_toy_env(seed=0, length=6, num_actions=2, lock_seed=5)
    if not np.array_equal(other.code, env.code):
        with pytest.raises(ValueError):
            other.restore_state(saved)


def test_demo_info_and_demo():
    info = toy_demo_info(length=7, num_actions=3, lock_seed=1)
    assert info == {"length": 7, "reward_frames": [7], "total_return": 1.0, "game": "toy"}
    assert toy_demo_info(length=7, num_actions=3, demo=False)["length"] == 0
    demo = toy_demo(7, 3, lock_seed=1)
    assert np.array_equal(demo["actions"], lock_code(7, 3, 1))
    assert demo["rewards"].sum() == 1.0 and demo["rewards"][-1] == 1.0
    assert list(demo["cumulative_return"]) == [0.0] * 7 + [1.0]
    assert not np.array_equal(lock_code(20, 4, 0), lock_code(20, 4, 1))
    with pytest.raises(ValueError):
        toy_demo_info(length=0, num_actions=2)


def test_in_process_pool_autoresets_at_the_start_frames_set():
    factory = EnvFactory("toy", length=4, num_actions=2, lock_seed=0)
    pool = InProcessEnvPool(factory, num_envs=2, seed=0)
    code = pool.envs[0].code
    pool.set_options([{"start_frame": 3}, {"start_frame": None}])
    pool.reset()
    assert pool.obs[0].argmax() == 3 and pool.obs[1].argmax() == 0
    pool.set_options([{"start_frame": 1}, {"start_frame": 2}])
    episodes = pool.step(np.array([code[3], 1 - code[0]]))
    assert {e["env"]: e["success"] for e in episodes} == {0: True, 1: False}
    assert pool.obs[0].argmax() == 1 and pool.obs[1].argmax() == 2  # autoreset at the start frames set
    assert pool.final_obs[0].argmax() == 4


def test_batch_success_rate_matches_the_env():
    length, A = 5, 3
    code = lock_code(length, A, 7)
    def perfect(obs):
        position = np.minimum(obs.reshape(len(obs), -1).argmax(-1), length - 1)
        return np.eye(A)[code[position]] * 50.0
    assert batch_success_rate(perfect, length, A, 7, episodes=50) == 1.0
    assert batch_success_rate(perfect, length, A, 7, episodes=50, deterministic=True) == 1.0
    uniform = lambda obs: np.zeros((len(obs), A))  # noqa: E731
    rate = batch_success_rate(uniform, 2, A, 7, episodes=20_000, rng=np.random.default_rng(0))
    assert abs(rate - 1 / 9) < 0.01


# -- MLP policy ------------------------------------------------------------------------------
def test_mlp_policy_interface_and_learner():
    cfg = PolicyConfig(num_actions=3, arch="mlp", obs_shape=(1, 1, 6))
    policy = build_policy(cfg)
    assert policy.recurrent is False and policy.initial_state(4, "cpu") is None
    obs = torch.eye(6)[torch.randint(0, 6, (4,))].to(torch.uint8).view(4, 1, 1, 6)
    logits, value, state = policy(obs)
    assert logits.shape == (4, 3) and value.shape == (4,) and state is None
    action, logprob, value, state = policy.act(obs, None, None)
    assert action.shape == (4,) and action.dtype == torch.int64 and state is None
    assert torch.allclose(logprob, torch.full((4,), -np.log(3.0)), atol=0.05)  # near-uniform at init
    seq_logits, seq_values, _ = policy(obs.view(2, 2, 1, 1, 6), sequence=True)
    assert torch.allclose(seq_logits.view(4, 3), logits, atol=1e-6)
    assert torch.allclose(policy.forward_sequence(obs.view(2, 2, 1, 1, 6), None, None)[1].view(4), value, atol=1e-6)
    with pytest.raises(Exception):
        build_policy(PolicyConfig(num_actions=3, arch="mlp", obs_shape=(1, 1, 6), recurrent=True))

    learner = PPOLearner(policy, PPOConfig(num_epochs=2, num_minibatches=2))
    T, B = 4, 3
    batch = RolloutBatch(obs=torch.eye(6)[torch.randint(0, 6, (T, B))].to(torch.uint8).view(T, B, 1, 1, 6),
                         actions=torch.randint(0, 3, (T, B)), logprobs=torch.full((T, B), -np.log(3.0)),
                         values=torch.zeros(T, B), advantages=torch.randn(T, B), returns=torch.randn(T, B),
                         episode_starts=torch.zeros(T, B), loss_mask=torch.ones(T, B))
    before = [p.detach().clone() for p in policy.parameters()]
    stats = learner.update(batch)
    assert np.isfinite(stats["policy_loss"]) and stats["num_gradient_steps"] == 4
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))


# -- the claim, in miniature -----------------------------------------------------------------
def _toy_scaling():
    spec = importlib.util.spec_from_file_location("toy_scaling", ROOT / "scripts" / "toy_scaling.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("toy_scaling", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_curriculum_solves_what_plain_ppo_cannot(tmp_path):
    """A=4, N=10: a random policy opens the lock once in 4**10 ~ 1e6 episodes, i.e. about
    1.4e6 env steps; the budget is 20,000 steps (70 times less), so plain PPO essentially
    never even sees the reward. The curriculum needs about 5,000-7,000 (measured for
    several seeds), and at least one of two seeds must solve."""
    ts = _toy_scaling()
    s = ts.Settings(budget=20_000)
    plain = ts.run_one("plain", 10, 4, 1, s)
    assert not plain["solved"] and plain["steps_used"] >= s.budget
    assert plain["final_eval"] < 0.1
    curriculum = ts.run_one("curriculum", 10, 4, 1, s)
    if not curriculum["solved"]:  # a second seed, so one unlucky run does not fail the test
        curriculum = ts.run_one("curriculum", 10, 4, 2, s)
    assert curriculum["solved"], curriculum
    assert curriculum["steps"] <= s.budget and curriculum["curriculum_done_at"] is not None


def test_training_stops_once_the_game_start_beats_the_demo(tmp_path):
    """``stop_at_success``: the run ends (with a checkpoint) as soon as the curriculum has reached the
    game start and half of the recent game-start episodes open the lock; the same run without the
    rule goes on to its frame budget."""
    ts = _toy_scaling()
    s = ts.Settings(budget=40_000)

    def run(stop_at_success, name, budget):
        cfg = ts.train_config("curriculum", 3, 2, 1, s)
        cfg.stop_at_success, cfg.total_frames = stop_at_success, budget
        trainer = Trainer(cfg, tmp_path / name, quiet=True)
        assert trainer.train() == 0
        return trainer

    stopped = run(0.5, "stops", s.budget)
    assert stopped.frames < s.budget
    assert stopped.scheduler.start_frame == 0  # not before the curriculum reached the game start
    assert len(stopped.stats.from_start_success) >= 20 and stopped.stats.from_start_success_rate() >= 0.5
    assert load_checkpoint(tmp_path / "stops" / "checkpoints" / "latest.pt")["frames"] == stopped.frames
    per_update = stopped.frames // stopped.updates
    full = run(None, "full", stopped.frames + 3 * per_update)
    assert full.frames == stopped.frames + 3 * per_update


# -- a lock with several rewards (reward_every) and the two success rules ----------------------------
def _until_end(env: ToyLockEnv, actions):
    """Play ``actions`` until the episode ends; every step's (reward, terminated, truncated, info)."""
    steps = []
    for a in actions:
        _, reward, terminated, truncated, info = env.step(int(a))
        steps.append((reward, terminated, truncated, info))
        if terminated or truncated:
            break
    return steps


def test_intermediate_rewards_are_the_demos_and_do_not_end_the_episode():
    """reward_every=K pays on reaching K, 2K, ... and N; the env pays, from any start, exactly the demo's rewards
    of the actions it replays (the demo's reward of action t arrives at frame t + 1), and only the lock's
    opening ends the episode."""
    n, k, a = 20, 6, 3
    demo = toy_demo(n, a, lock_seed=2, reward_every=k)
    assert np.flatnonzero(demo["rewards"]).tolist() == [5, 11, 17, 19]  # actions t whose reward arrives at t + 1
    assert toy_demo_info(length=n, num_actions=a, lock_seed=2, reward_every=k) == {
        "length": n, "reward_frames": [6, 12, 18, 20], "total_return": 4.0, "game": "toy"}
    for start in (None, 0, 5, 6, 13, 19):
        env = make_toy_env(seed=0, length=n, num_actions=a, lock_seed=2, reward_every=k,
                           rules={"success_rule": "demo_end"})
        env.reset(options={"start_frame": start})
        t0 = start or 0
        steps = _until_end(env, demo["actions"][t0:])
        assert [r for r, *_ in steps] == demo["rewards"][t0:].tolist()
        assert [te for _, te, _, _ in steps] == [False] * (n - t0 - 1) + [True]
        assert not any(tr for _, _, tr, _ in steps)
        assert steps[-1][3]["episode"] == {"score": float(demo["cumulative_return"][n] - demo["cumulative_return"][t0]),
                                           "frames": n - t0, "start_frame": start, "success": True, "reason": "opened"}
    # A wrong action at a reward position (reached, paid, now to be left) pays nothing.
    env = make_toy_env(seed=0, length=n, num_actions=a, lock_seed=2, reward_every=k)
    env.reset(options={"start_frame": 6})
    reward, terminated, truncated, info = _until_end(env, [(int(env.code[6]) + 1) % a])[-1]
    assert reward == 0.0 and terminated and not truncated and info["episode"]["reason"] == "wrong_action"


def test_reward_every_off_large_or_bad():
    """Off (None) and K >= N are the original lock; a K that is not a whole number >= 1 is refused."""
    original = toy_demo(9, 2, lock_seed=4)
    for k in (None, 9, 50):
        d = toy_demo(9, 2, lock_seed=4, reward_every=k)
        assert np.array_equal(d["rewards"], original["rewards"]) and d["rewards"].sum() == 1.0
        assert toy_demo_info(length=9, num_actions=2, reward_every=k)["reward_frames"] == [9]
    assert toy_demo_info(length=9, num_actions=2, reward_every=1)["reward_frames"] == list(range(1, 10))
    assert toy_demo_info(length=9, num_actions=2, reward_every=3)["reward_frames"] == [3, 6, 9]
    assert toy_demo_info(length=9, num_actions=2, reward_every=3, demo=False)["reward_frames"] == []
    for bad in (0, -2, 2.5, True, "3"):
        with pytest.raises(ValueError, match="reward_every"):
            make_toy_env(length=9, num_actions=2, reward_every=bad)


def _first_reward_position_at_or_after(frame: int, n: int, k: int) -> int:
    """The lock's first reward position p whose paying action p - 1 is at or after ``frame`` (else N)."""
    p = next((p for p in list(range(k, n, k)) + [n] if p - 1 >= frame), n)
    return p


@pytest.mark.parametrize("start", [0, 3, 5, 6, 10, 21, 22, 29, 30, 39])
def test_horizon_rule_succeeds_at_the_first_reward_at_or_after_start_plus_h_then_truncates(start):
    """Horizon H=10, rewards every 8 on a 40-lock: from ``start`` the episode succeeds on reaching the first
    reward position p with p - 1 >= start + H (no earlier, though rewards come before), plays one extra frame
    (extra_frames_scale 0) and is cut as a truncation ("horizon"), not a termination; where that reward is the
    lock's opening, opening terminates it, as before."""
    n, k, h = 40, 8, 10
    rules = {"success_rule": "horizon", "success_horizon": h, "extra_frames_scale": 0.0}
    env = make_toy_env(seed=0, length=n, num_actions=2, lock_seed=3, reward_every=k, rules=rules)
    env.reset(options={"start_frame": start})
    steps = _until_end(env, env.code[start:])
    target = _first_reward_position_at_or_after(start + h, n, k)
    info = steps[-1][3]["episode"]
    demo_cum = toy_demo(n, 2, 3, k)["cumulative_return"]
    if target < n:
        assert len(steps) == target - start + 1 and env.position == target + 1
        _, terminated, truncated, _ = steps[-1]
        assert truncated and not terminated
        assert info == {"score": float(demo_cum[target + 1] - demo_cum[start]), "frames": target - start + 1,
                        "start_frame": start, "success": True, "reason": "horizon"}
        assert sum(r for r, *_ in steps[:-1]) >= 1  # it passed the target reward itself
    else:
        assert len(steps) == n - start and steps[-1][1] and not steps[-1][2]
        assert info["reason"] == "opened" and info["success"] is True
    # One action short of the target (a wrong action there): no success, whatever rewards came before.
    env.reset(options={"start_frame": start})
    short = list(env.code[start:target - 1]) + [1 - int(env.code[target - 1])]
    steps = _until_end(env, short)
    assert steps[-1][1] and steps[-1][3]["episode"]["success"] is False
    assert steps[-1][3]["episode"]["reason"] == "wrong_action"


def test_demo_end_rule_needs_the_lock_opened_where_horizon_is_satisfied_much_earlier():
    """The same 40-lock, start 3: the horizon rule succeeds at position 16 (the first reward at or after
    3 + 10) and cuts the episode; under "demo_end" passing rewards 8..32 is not enough, only opening is."""
    n, k = 40, 8
    base = {"success_horizon": 10, "extra_frames_scale": 0.0}
    errs_at_33 = None
    for rule in ("horizon", "demo_end"):
        env = make_toy_env(seed=0, length=n, num_actions=2, lock_seed=3, reward_every=k,
                           rules={**base, "success_rule": rule})
        errs_at_33 = list(env.code[3:33]) + [1 - int(env.code[33])]
        env.reset(options={"start_frame": 3})
        steps = _until_end(env, errs_at_33)
        episode = steps[-1][3]["episode"]
        if rule == "horizon":
            assert episode == {"score": 2.0, "frames": 14, "start_frame": 3, "success": True, "reason": "horizon"}
        else:
            assert len(steps) == 31 and sum(r for r, *_ in steps) == 4.0  # rewards at 8, 16, 24, 32 collected
            assert episode["success"] is False and episode["reason"] == "wrong_action"
            env.reset(options={"start_frame": 3})
            steps = _until_end(env, env.code[3:])
            assert steps[-1][3]["episode"]["success"] is True and steps[-1][3]["episode"]["reason"] == "opened"
            assert not any(tr for _, _, tr, _ in steps)


def test_rules_reach_the_pool_and_the_unreachable_warning():
    """toy={"reward_every", "rules"} reaches the envs of a pool (EnvFactory -> make_toy_env) unchanged, and
    toy_demo_info names the starts an episode cap makes hopeless, as the trainer expects of a demo."""
    toy = {"length": 12, "num_actions": 2, "lock_seed": 0, "reward_every": 4,
           "rules": {"success_rule": "horizon", "success_horizon": 3, "extra_frames_scale": 0.0}}
    pool = InProcessEnvPool(EnvFactory("toy", **toy), num_envs=1, seed=0)
    code = pool.envs[0].code
    pool.set_options({"start_frame": 1})
    pool.reset()
    episodes = []
    for p in range(1, 12):
        episodes = pool.step(np.array([code[p]]))
        if episodes:
            break
    # start 1, first reward event at or after frame 4 is action 7 (position 8): success there, one extra, cut
    assert episodes == [{**episodes[0], "env": 0, "score": 2.0, "frames": 8, "start_frame": 1, "success": True,
                         "reason": "horizon"}]
    assert "unreachable" not in toy_demo_info(**toy)
    # a cap of 8 frames: opening the lock from starts 0..3 takes 9..12; the horizon rule needs at most 7 (from
    # 1 to position 8, from 5 to 12), so a cap of 6 leaves exactly those two starts hopeless
    capped = {**toy, "rules": {"success_rule": "demo_end", "max_episode_frames": 8}}
    message = toy_demo_info(**capped)["unreachable"]
    assert message.startswith("demo starts at frames 0..3 (4 frames) can never succeed") and "\n" not in message
    assert "unreachable" not in toy_demo_info(**{**capped, "rules": {**toy["rules"], "max_episode_frames": 8}})
    assert "frames 1..5 (2 frames)" in toy_demo_info(**{**capped, "rules": {**toy["rules"], "max_episode_frames": 6}})[
        "unreachable"]


def test_states_of_locks_with_other_rewards_are_refused():
    env = make_toy_env(length=8, num_actions=2, lock_seed=1, reward_every=2)
    env.reset(options={"start_frame": 1})
    env.step(int(env.code[1]))
    saved = env.save_state()
    same = make_toy_env(length=8, num_actions=2, lock_seed=1, reward_every=2)
    same.restore_state(saved)
    assert same.position == 2 and [r for r, *_ in _until_end(same, same.code[2:])] == [0, 1, 0, 1, 0, 1]
    for other in (None, 4):
        with pytest.raises(ValueError, match="reward_every"):
            make_toy_env(length=8, num_actions=2, lock_seed=1, reward_every=other).restore_state(saved)


# -- scripts/toy_horizon.py: the horizon rule on a lock much longer than its horizon ----------------------
def _toy_horizon():
    spec = importlib.util.spec_from_file_location("toy_horizon", ROOT / "scripts" / "toy_horizon.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("toy_horizon", module)
    spec.loader.exec_module(module)
    return module


def test_toy_horizon_script_writes_its_table_json_and_png(tmp_path, capsys):
    """A run of the script small enough for seconds (N=8, both rules, two seeds): every run's record is
    consistent with its own stop rule, and the table, JSON and PNG are written."""
    import json

    th = _toy_horizon()
    out = tmp_path / "out" / "toy_horizon.json"
    assert th.main(["--lengths", "8", "--caps", "none", "--seeds", "1", "2", "--budget", "4000",
                    "--reward-every", "2", "--horizon", "2", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 1000
    assert sorted(p.name for p in out.parent.iterdir()) == ["toy_horizon.json", "toy_horizon.png"]
    assert [(r["rule"], r["seed"]) for r in report["runs"]] == [("horizon", 1), ("horizon", 2), ("demo_end", 1),
                                                                ("demo_end", 2)]
    for r in report["runs"]:
        assert r["steps_used"] < r["budget"] + 256 and r["steps_used"] % 256 == 0  # 16 envs x 16 steps an update
        if r["solved"]:
            assert r["steps"] == r["steps_used"] and r["window_at_zero"] <= r["steps"]
            assert r["greedy_opens_at"] <= r["steps"] and r["window_front"][-1] == [r["window_at_zero"], 0]
        ends = r["episode_ends"]
        assert sum(ends.values()) == r["episode_length_all"]["episodes"] > 0
        assert ("horizon" in ends) == (r["rule"] == "horizon" and ends.get("horizon", 0) > 0)
        assert r["rule"] == "horizon" or "horizon" not in ends  # demo_end never cuts at a horizon
    for row in report["summary"]:
        assert f"| 8 | - | {row['rule']} | {row['solved']}/2 |" in printed
    assert report["summary"][0]["stretch"] == {"max": 4, "mean": 3.0, "target_of_start_0": 4, "unreachable": None}
    assert report["summary"][1]["stretch"]["max"] == 8  # demo_end: from 0, the whole lock


@pytest.mark.slow
def test_horizon_rule_solves_a_long_lock_where_demo_end_stalls_at_the_episode_cap():
    """The issue's stall in miniature: a 24-lock, a reward every 4 positions, an episode cap of 12 steps.
    Under demo_end, opening the lock from a start before 12 takes more than the cap, so those starts can
    never succeed and the curriculum stops there (and says so); the horizon rule (H=4) needs at most 8
    steps from anywhere and takes the curriculum to position 0, where the greedy policy opens the lock."""
    th = _toy_horizon()
    s = th.Settings(lengths=[24], reward_every=4, success_horizon=4, caps=[12], budget=40_000)
    assert th.demo_stretches(24, s, "horizon", 12) == {"max": 8, "mean": 5.83, "target_of_start_0": 8,
                                                       "unreachable": None}
    assert th.demo_stretches(24, s, "demo_end", 12)["unreachable"].startswith(
        "demo starts at frames 0..11 (12 frames) can never succeed")
    horizon = th.run_one("horizon", 24, 1, s, 12)
    assert horizon["solved"], horizon
    assert horizon["window_at_zero"] <= horizon["steps"] and horizon["episode_length_all"]["p95"] <= 12
    stalled = th.run_one("demo_end", 24, 1, s, 12)
    assert not stalled["solved"] and stalled["steps_used"] >= s.budget and stalled["window_at_zero"] is None
    assert stalled["window_front_at_end"] >= 8  # its front's starts (before 12) can never succeed
