"""Epsilon exploration after curriculum starts: the pure mixture and budget, the policy's ``act``, and the
Trainer's rollout on the real emulator."""

import json
import math

import numpy as np
import pytest
import torch

from curriculum_ppo.errors import UserError
from curriculum_ppo.exploration import ExplorationBudget, ExploreConfig, epsilon_mixture
from curriculum_ppo.ppo.policy import ActorCritic, PolicyConfig, choose_actions, sample_categorical
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
    assert budget.enabled and budget.step(slice(None)) is None
    assert budget.begin(0, True, rng) and not budget.begin(1, False, rng) and budget.begin(2, True, rng)
    assert budget.step(slice(None)).epsilon.tolist() == [0.5, 0.0, 0.5]
    assert not budget.begin(2, False, rng)  # a new episode behind the window: its budget is gone
    assert budget.exploring.tolist() == [True, False, False]
    assert budget.step(slice(0, 2)).epsilon.tolist() == [0.5, 0.0]
    assert budget.step(slice(None)) is None  # env 0 used its 2 steps
    assert budget.take_count() == 3 and budget.take_count() == 0
    assert budget.begin(1, True, rng)  # a replayed (warm-up) step neither explores nor spends the budget
    assert budget.step(slice(None), np.array([False, True, False])) is None
    assert budget.step(slice(1, 3), np.array([False, False])).epsilon.tolist() == [0.5, 0.0]
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


LOGITS = torch.tensor([[3.0, 1.0, 0.0, -1.0, 2.0, 0.0], [0.5, -2.0, 4.0, 0.0, 1.0, 1.0],
                       [6.0, 0.0, 0.0, 0.0, 0.0, 0.0], [-1.0, 0.0, 1.0, 2.0, 0.0, -3.0]])


def test_temperature_one_samples_and_logs_exactly_as_before():
    """T = 1 (the default) is today's action choice bit for bit: same actions and log-probabilities for a
    fixed seed as the code before the option (log-softmax, the epsilon mixture, Gumbel-max), with the
    temperature given as ones or not at all; and the budget does not even pass a temperature."""
    logits = LOGITS.repeat(256, 1)
    eps = torch.tensor([0.0, 0.2, 1.0, 0.5]).repeat(256)
    torch.manual_seed(3)
    before = epsilon_mixture(torch.log_softmax(logits, dim=-1), eps)
    action_before = sample_categorical(before)
    logprob_before = before.gather(-1, action_before[:, None]).squeeze(-1)
    for temperature in (None, torch.ones(len(logits))):
        torch.manual_seed(3)
        action, logprob = choose_actions(logits, epsilon=eps, temperature=temperature)
        assert torch.equal(action, action_before) and torch.equal(logprob, logprob_before)
    assert ExploreConfig().temperature == 1.0
    budget = ExplorationBudget(2, ExploreConfig(epsilon=0.5, steps=2, fraction=1.0))
    budget.begin(0, True, np.random.default_rng(0))
    step = budget.step(slice(None))
    assert step.temperature is None and step.epsilon.tolist() == [0.5, 0.0]
    assert not ExplorationBudget(1, ExploreConfig(epsilon=0.0, temperature=1.0)).enabled  # both levers off


def test_temperature_samples_from_the_softened_policy_and_logs_its_log_probability():
    """With T = 2 the action frequencies follow softmax(logits / 2), not the policy's own softmax; the
    logged log-probability is exactly log_softmax(logits / 2) of the action; rows with T = 1 are the
    policy's own, exactly; greedy choice ignores the temperature."""
    n = 40_000
    logits = LOGITS[0].expand(n, 6)
    torch.manual_seed(0)
    action, logprob = choose_actions(logits, temperature=torch.full((n,), 2.0))
    freq = torch.bincount(action, minlength=6).float() / n
    softened = (LOGITS[0] / 2).softmax(-1)
    assert torch.allclose(freq, softened, atol=0.01)
    assert (softened - LOGITS[0].softmax(-1)).abs().max() > 0.1  # a real difference, far beyond the tolerance
    assert torch.equal(logprob, torch.log_softmax(logits / 2, dim=-1).gather(-1, action[:, None]).squeeze(-1))

    temperature = torch.tensor([1.0, 2.0, 1.0, 3.0])
    action, logprob = choose_actions(LOGITS, temperature=temperature)
    plain = torch.log_softmax(LOGITS, dim=-1).gather(-1, action[:, None]).squeeze(-1)
    hot = torch.log_softmax(LOGITS / temperature[:, None], dim=-1).gather(-1, action[:, None]).squeeze(-1)
    assert torch.equal(logprob[0::2], plain[0::2]) and torch.equal(logprob[1::2], hot[1::2])
    greedy, greedy_logprob = choose_actions(LOGITS, deterministic=True, temperature=temperature)
    assert torch.equal(greedy, LOGITS.argmax(-1)) and torch.equal(greedy_logprob,
                                                                   torch.log_softmax(LOGITS, -1).max(-1).values)


def test_temperature_and_epsilon_compose_into_one_honest_distribution():
    """Both on: the action is drawn from (1 - eps) * softmax(logits / T) + eps * uniform, and that is the
    log-probability logged."""
    n = 40_000
    logits = LOGITS[2].expand(n, 6)  # a near-deterministic policy: 6 nats on action 0
    torch.manual_seed(1)
    action, logprob = choose_actions(logits, epsilon=torch.full((n,), 0.3), temperature=torch.full((n,), 2.0))
    expected = 0.7 * (LOGITS[2] / 2).softmax(-1) + 0.3 / 6
    assert torch.allclose(logprob.exp(), expected[action])
    assert torch.allclose(torch.bincount(action, minlength=6).float() / n, expected, atol=0.01)


def test_budget_gives_exploring_envs_the_temperature_and_validates_it():
    rng = np.random.default_rng(0)
    budget = ExplorationBudget(3, ExploreConfig(epsilon=0.0, temperature=2.0, steps=2, fraction=1.0))
    assert budget.enabled  # the temperature alone explores, with the mixture off
    assert budget.begin(0, True, rng) and not budget.begin(1, False, rng) and budget.begin(2, True, rng)
    step = budget.step(slice(None), np.array([False, False, True]))  # env 2 replays the demo
    assert step.epsilon is None and step.temperature.tolist() == [2.0, 1.0, 1.0]
    assert budget.step(slice(None)).temperature.tolist() == [2.0, 1.0, 2.0]
    assert budget.step(slice(None)).temperature.tolist() == [1.0, 1.0, 2.0]
    assert budget.step(slice(None)) is None and budget.take_count() == 4
    both = ExplorationBudget(1, ExploreConfig(epsilon=0.25, temperature=3.0, steps=1, fraction=1.0))
    both.begin(0, True, rng)
    step = both.step(slice(None))
    assert step.epsilon.tolist() == [0.25] and step.temperature.tolist() == [3.0]
    for off in ({"steps": 0}, {"fraction": 0.0}):
        assert not ExplorationBudget(1, ExploreConfig(epsilon=0.0, temperature=2.0, **off)).enabled
    for bad in (0.5, 0.0, -2.0, math.inf, math.nan):
        with pytest.raises(UserError, match="--explore-temperature"):
            ExploreConfig(temperature=bad)


def _rollout(tmp_path, explore: ExploreConfig, random_start_fraction: float = 0.2, steps: int = 64,
             warmup_steps: int = 0):
    config = TrainConfig(demo=DEMO, num_envs=2, num_workers=0, num_steps=steps, seed=5, status_every=1e9,
                         explore=explore)
    config.curriculum.random_start_fraction = random_start_fraction
    config.atari.warmup_steps = warmup_steps
    name = f"run{explore.epsilon}-{explore.temperature}-{random_start_fraction}-{warmup_steps}"
    trainer = Trainer(config, tmp_path / name, quiet=True)
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


def test_rollout_samples_exploring_steps_at_the_temperature_and_logs_that_distribution(tmp_path):
    """Real emulator, restarts included, --explore-temperature 2 with the mixture off: the first 3 agent
    steps after each window start log log_softmax(logits / 2) of their action (the policy's logits,
    recomputed from the stored observations), every later step the policy's own log_softmax(logits);
    the episodes are exploring ones, which the curriculum does not count."""
    trainer, buffers, episodes = _rollout(tmp_path, ExploreConfig(epsilon=0.0, temperature=2.0, steps=3,
                                                                  fraction=1.0))
    assert len(episodes) >= 2  # restarts happened inside the rollout
    exploring = torch.from_numpy(_steps_since_start(buffers["episode_starts"]) < 3)
    T, B = buffers["actions"].shape
    with torch.no_grad():
        logits, _, _ = trainer.behaviour(buffers["obs"].flatten(0, 1))
    logits = logits.float().view(T, B, -1)
    taken = buffers["actions"].unsqueeze(-1)
    own = torch.log_softmax(logits, -1).gather(-1, taken).squeeze(-1)
    hot = torch.log_softmax(logits / 2, -1).gather(-1, taken).squeeze(-1)
    logged = buffers["logprobs"]
    assert torch.allclose(logged[exploring], hot[exploring], atol=1e-5)
    assert torch.allclose(logged[~exploring], own[~exploring], atol=1e-5)
    assert ((hot - own)[exploring].abs() > 0.1).all()  # the two distributions differ on every exploring step
    assert all(episode["explored"] for episode in episodes)
    trainer.hooks.record(episodes, trainer.stats)
    assert trainer.explored_episodes == len(episodes) and not trainer.scheduler.pending_counts().any()


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
        assert trainer.explore.step(slice(None)) is None and not trainer.explore.exploring.any()
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
