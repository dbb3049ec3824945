"""Epsilon exploration after curriculum starts: the pure mixture and budget, the policy's ``act``, and the
Trainer's rollout on the real emulator."""

import json
import math

import numpy as np
import pytest
import torch

from curriculum_ppo.errors import UserError
from curriculum_ppo.exploration import ExplorationBudget, ExploreConfig, epsilon_mixture
from curriculum_ppo.ppo.policy import ActorCritic, PolicyConfig, sample_categorical
from curriculum_ppo.train import Trainer, TrainConfig

DEMO = "demos/MontezumaRevenge-room1.h5"


def test_mixture_is_the_right_distribution_and_leaves_eps_zero_rows_untouched():
    log_probs = torch.log_softmax(torch.tensor([[4.0, 0.0, -2.0, 1.0], [0.5, 0.1, 0.2, 0.3],
                                                [3.0, 1.0, 0.0, 0.0]]), dim=-1)
    eps = torch.tensor([0.0, 1.0, 0.25])
    mixed = epsilon_mixture(log_probs, eps)
    assert torch.equal(mixed[0], log_probs[0])
    assert torch.allclose(mixed[1].exp(), torch.full((4,), 0.25))
    assert torch.allclose(mixed[2].exp(), 0.75 * log_probs[2].exp() + 0.25 / 4)
    assert torch.allclose(mixed.exp().sum(-1), torch.ones(3))


def test_sampling_from_the_mixture_matches_its_probabilities():
    torch.manual_seed(0)
    log_probs = torch.log_softmax(torch.tensor([8.0] + [0.0] * 17), dim=-1).expand(40_000, 18)
    mixed = epsilon_mixture(log_probs, torch.full((40_000,), 0.3))
    actions = sample_categorical(mixed)
    other = (actions != 0).float().mean().item()
    expected = 1 - mixed[0, 0].exp().item()  # ~0.3 * 17/18 + a little policy mass
    assert abs(other - expected) < 0.01 and expected > 0.28


def test_policy_act_logs_the_behaviour_log_probability():
    torch.manual_seed(1)
    policy = ActorCritic(PolicyConfig(num_actions=18))
    with torch.no_grad():
        policy.policy_head.bias.zero_()
        policy.policy_head.bias[3] = 6.0  # a near-deterministic policy
    obs = torch.randint(0, 255, (64, 4, 84, 84), dtype=torch.uint8)
    eps = torch.tensor([0.0, 1.0] * 32)
    with torch.no_grad():
        action, logprob, _, _ = policy.act(obs, epsilon=eps)
        logits, _, _ = policy(obs)
    plain = torch.log_softmax(logits.float(), -1).gather(-1, action[:, None]).squeeze(-1)
    assert torch.allclose(logprob[0::2], plain[0::2])  # eps 0: the policy's own log-probability
    assert torch.allclose(logprob[1::2], torch.full((32,), -math.log(18)))  # eps 1: uniform
    assert (action[1::2] != 3).sum() > 20  # uniform choices, not the policy's favourite
    greedy, _, _, _ = policy.act(obs, epsilon=eps, deterministic=True)
    assert (greedy == 3).all()  # evaluation (deterministic) never explores


def test_budget_counts_down_per_env_and_only_window_starts_explore():
    rng = np.random.default_rng(0)
    budget = ExplorationBudget(3, ExploreConfig(epsilon=0.5, steps=2, fraction=1.0))
    assert budget.enabled and budget.epsilons(slice(None)) is None
    assert budget.begin(0, True, rng) and not budget.begin(1, False, rng) and budget.begin(2, True, rng)
    assert budget.epsilons(slice(None)).tolist() == [0.5, 0.0, 0.5]
    assert not budget.begin(2, False, rng)  # a new episode behind the window: its budget is gone
    assert budget.exploring.tolist() == [True, False, False]
    assert budget.epsilons(slice(0, 2)).tolist() == [0.5, 0.0]
    assert budget.epsilons(slice(None)) is None  # env 0 used its 2 steps
    assert budget.take_count() == 3 and budget.take_count() == 0
    assert budget.begin(1, True, rng)  # a replayed (warm-up) step neither explores nor spends the budget
    assert budget.epsilons(slice(None), np.array([False, True, False])) is None
    assert budget.epsilons(slice(1, 3), np.array([False, False])).tolist() == [0.5, 0.0]
    assert budget.left.tolist() == [0, 1, 0] and budget.take_count() == 1
    half = ExplorationBudget(1, ExploreConfig(fraction=0.5))
    share = np.mean([half.begin(0, True, rng) for _ in range(4000)])
    assert abs(share - 0.5) < 0.03
    for off in ({"epsilon": 0.0}, {"steps": 0}, {"fraction": 0.0}):
        switched_off = ExplorationBudget(1, ExploreConfig(**off))
        assert not switched_off.enabled and not switched_off.begin(0, True, rng)
    for bad in ({"epsilon": 1.5}, {"epsilon": -0.1}, {"steps": -1}, {"fraction": 1.1}):
        with pytest.raises(UserError):
            ExploreConfig(**bad)


def _rollout(tmp_path, explore: ExploreConfig, random_start_fraction: float = 0.2, steps: int = 64,
             warmup_steps: int = 0):
    config = TrainConfig(demo=DEMO, num_envs=2, num_workers=0, num_steps=steps, seed=5, status_every=1e9,
                         explore=explore)
    config.curriculum.random_start_fraction = random_start_fraction
    config.atari.warmup_steps = warmup_steps
    trainer = Trainer(config, tmp_path / f"run{explore.epsilon}-{random_start_fraction}-{warmup_steps}", quiet=True)
    try:
        with torch.no_grad():
            trainer.behaviour.policy_head.bias.zero_()
            trainer.behaviour.policy_head.bias[0] = 6.0  # the policy alone almost always plays NOOP
        buffers = trainer._start_envs()
        episodes, _ = trainer._collect(trainer.behaviour, buffers, None)
        return trainer, buffers, episodes
    finally:
        trainer.close()


def _steps_since_start(episode_starts: torch.Tensor) -> np.ndarray:
    since = np.zeros(episode_starts.shape, dtype=np.int64)
    for t in range(episode_starts.shape[0]):
        since[t] = np.where(episode_starts[t].numpy(), 0, since[t - 1] + 1 if t else 0)
    return since


def test_rollout_explores_the_first_steps_of_every_window_episode(tmp_path):
    """Real emulator, restarts included: exactly the first ``steps`` agent steps after each start in the
    window draw uniformly (eps 1 makes their log-probability exactly -log 18), later steps follow the policy."""
    trainer, buffers, episodes = _rollout(tmp_path, ExploreConfig(epsilon=1.0, steps=3, fraction=1.0))
    assert len(episodes) >= 2  # restarts happened inside the rollout
    since = _steps_since_start(buffers["episode_starts"])
    uniform = torch.isclose(buffers["logprobs"], torch.tensor(-math.log(18)), atol=1e-5).numpy()
    assert (uniform == (since < 3)).all()
    assert (buffers["actions"].numpy()[since >= 3] == 0).mean() > 0.9
    assert all(episode["explored"] for episode in episodes)


@pytest.mark.parametrize("warmup,explore_steps", [(4, 3), (2, 5)], ids=["warmup>=explore", "warmup<explore"])
def test_warmup_masks_exactly_its_steps_and_exploring_starts_at_the_first_real_decision(tmp_path, warmup,
                                                                                         explore_steps):
    """Real emulator, bundled demo, restarts included: with ``--warmup-steps k`` exactly the k replayed
    steps of each episode are masked out of the loss, the (k+1)-th, the agent's first real decision at the
    start frame, is trained on, and the ``--explore-steps`` exploring steps come right after the warm-up
    (eps 1 makes them exactly uniform: log-probability -log 18), none of them during it."""
    trainer, buffers, episodes = _rollout(tmp_path, ExploreConfig(epsilon=1.0, steps=explore_steps, fraction=1.0),
                                          random_start_fraction=0.0, warmup_steps=warmup)
    starts = buffers["episode_starts"]
    ends = (buffers["terminations"] | buffers["truncations"]).numpy()
    masked = ~buffers["loss_mask"].numpy()
    uniform = torch.isclose(buffers["logprobs"], torch.tensor(-math.log(18)), atol=1e-5).numpy()
    complete = 0
    for env in range(2):
        t0 = 0
        for t in range(starts.shape[0]):
            if not ends[t, env]:
                continue
            length = t + 1 - t0
            assert length > warmup + explore_steps, (env, t0, t)  # each episode outlives both
            assert masked[t0:t + 1, env].sum() == warmup and masked[t0:t0 + warmup, env].all()
            assert not masked[t0 + warmup, env]  # the first real decision is trained on
            assert uniform[t0:t + 1, env].sum() == explore_steps
            assert uniform[t0 + warmup:t0 + warmup + explore_steps, env].all()
            complete, t0 = complete + 1, t + 1
    assert complete >= 2 and len(episodes) == complete
    assert all(episode["explored"] and episode["start_frame"] >= 4 * warmup for episode in episodes)
    assert trainer.explore.take_count() == uniform.sum()  # the logged count: real steps only


def test_no_exploration_when_switched_off_or_for_starts_behind_the_window(tmp_path):
    _, off, _ = _rollout(tmp_path, ExploreConfig(epsilon=0.0))  # the switch-off value
    assert not torch.isclose(off["logprobs"], torch.tensor(-math.log(18)), atol=1e-5).any()
    # The initial window reaches the demo's end, so "behind" needs a window that moved: start at frame 300.
    config = TrainConfig(demo=DEMO, num_envs=2, num_workers=0, num_steps=8, status_every=1e9,
                         explore=ExploreConfig(epsilon=1.0, steps=8, fraction=1.0))
    config.curriculum.random_start_fraction = 1.0
    trainer = Trainer(config, tmp_path / "behind", quiet=True)
    try:
        trainer.scheduler._slot = 300
        for i in range(2):
            trainer.hooks.set_start(trainer.pool, i, trainer._sample_start(i))
            assert trainer.hooks.next_start[i] > trainer.scheduler.window_end
            trainer._begin_episode(i)
        assert trainer.explore.epsilons(slice(None)) is None and not trainer.explore.exploring.any()
    finally:
        trainer.close()


def test_exploring_episodes_train_but_do_not_count_for_the_curriculum(tmp_path):
    """A real run (worker processes, overlapped updates): every episode is either recorded by the
    curriculum scheduler or counted as exploring, and both kinds occur with fraction 0.5."""
    config = TrainConfig(demo=DEMO, total_frames=6 * 4 * 64 * 4, num_envs=4, num_workers=1, num_steps=64,
                         status_every=1e9, explore=ExploreConfig(epsilon=1.0, steps=4, fraction=0.5))
    config.ppo.num_minibatches = 2
    trainer = Trainer(config, tmp_path / "run", quiet=True)
    assert trainer.train() == 0
    recorded = trainer.scheduler.counts_by_start()[1].sum()
    assert trainer.explored_episodes > 0 and recorded > 0
    assert recorded + trainer.explored_episodes == trainer.stats.count
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["explored_episodes"] == trainer.explored_episodes
    assert rows[-1]["explored_successes"] == trainer.explored_successes <= trainer.explored_episodes
    assert sum(r["explored_steps"] for r in rows) >= 4 * trainer.explored_episodes * 0.5
