"""The behaviour-cloning term on demo frames near the window (``--demo-bc-coef``, curriculum_ppo/imitation.py)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from curriculum_ppo.curriculum import CurriculumConfig
from curriculum_ppo.demo.store import load_demo
from curriculum_ppo.envs.atari import AtariConfig, AtariEnv
from curriculum_ppo.errors import UserError
from curriculum_ppo.imitation import DemoTargets, ImitationConfig, bc_region
from curriculum_ppo.ppo.learner import PPOConfig, PPOLearner
from curriculum_ppo.ppo.policy import ActorCritic, PolicyConfig
from curriculum_ppo.training.config import TrainConfig
from curriculum_ppo.training.loop import Trainer, demo_frames
from test_policy_learner import SMALL, params_of, random_batch, random_obs

DEMO = "demos/MontezumaRevenge-room1.h5"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- the region (pure)
def test_the_region_is_the_window_and_the_frames_before_its_front():
    assert bc_region(300, 363, 64, 635) == (236, 363)
    assert bc_region(300, 363, 0, 635) == (300, 363)
    assert bc_region(40, 103, 64, 635) == (0, 103)  # clipped at the demo's first frame
    assert bc_region(600, 663, 64, 635) == (536, 634)  # the last frame has no action after it
    assert bc_region(0, 63, 64, 635) == (0, 63)  # at the game start: the first window
    assert bc_region(700, 700, 10, 635) == (634, 634)  # never an empty region
    with pytest.raises(ValueError):
        bc_region(0, 0, 1, 0)


def test_bad_settings_are_one_line_user_errors():
    for kwargs, flag in (({"coef": -0.1}, "--demo-bc-coef"), ({"samples": 0}, "--demo-bc-samples"),
                         ({"ahead": -1}, "--demo-bc-ahead")):
        with pytest.raises(UserError, match=flag):
            ImitationConfig(**kwargs)
    with pytest.raises(UserError, match="--demo-bc-coef needs a demo"):
        TrainConfig(game="montezuma_revenge", imitation=ImitationConfig(coef=0.1))
    with pytest.raises(UserError, match="not --recurrent"):
        TrainConfig(demo=DEMO, recurrent=True, imitation=ImitationConfig(coef=0.1))
    assert not TrainConfig(demo=DEMO).imitation.enabled  # off by default


# ----------------------------------------------------------------------------- the demo frames (real emulator)
def test_demo_frames_are_what_a_start_there_observes_and_the_demos_actions():
    """Each cloned frame is the observation of a curriculum start at that frame, with the demo's action
    there, also when the run replays warm-up steps before its starts; a move renders only its new frames."""
    config = TrainConfig(demo=DEMO, atari=AtariConfig(warmup_steps=8), imitation=ImitationConfig(coef=0.1))
    frames = demo_frames(config, 635)  # the run's own: an env of its kind without the warm-up
    targets = frames.targets(300, 363)
    assert (targets.first, targets.last) == (236, 363)
    assert targets.obs.shape == (128, 4, 84, 84) and targets.obs.dtype == torch.uint8
    demo = load_demo(DEMO)
    reference = AtariEnv(demo=demo, config=AtariConfig(warmup_steps=0))
    for i in (0, 1, 64, 127):
        t = 236 + i
        obs, info = reference.reset(options={"start_frame": t})
        assert not info["warmup"]
        assert np.array_equal(targets.obs[i].numpy(), obs), t
        assert targets.actions[i] == int(demo.actions[t])
    assert torch.equal(targets.actions, torch.as_tensor(np.asarray(demo.actions[236:364]), dtype=torch.long))
    # With the run's own warm-up the reset observation would be 8 agent steps earlier: not what is cloned.
    warm = AtariEnv(demo=demo, config=AtariConfig(warmup_steps=8))
    assert not np.array_equal(warm.reset(options={"start_frame": 300})[0], targets.obs[64].numpy())

    assert frames.targets(300, 363) is targets  # unchanged region: the same tensors, nothing rendered
    kept = dict(frames._cache)
    moved = frames.targets(268, 331)
    assert (moved.first, moved.last) == (204, 331)
    assert set(frames._cache) == set(range(204, 332))  # the frames that left the region are dropped
    assert all(frames._cache[t] is kept[t] for t in range(236, 332))  # the kept ones are not rendered again
    assert torch.equal(moved.obs[32:], targets.obs[:96])
    frames.close()


# ----------------------------------------------------------------------------- the loss (real PyTorch)
def demo_targets(policy: ActorCritic, frames: int = 16, coef: float = 1.0, seed: int = 5) -> DemoTargets:
    g = torch.Generator().manual_seed(seed)
    obs = random_obs(frames, obs_shape=policy.config.obs_shape, generator=g)
    actions = torch.randint(0, policy.config.num_actions, (frames,), generator=g)
    return DemoTargets(obs, actions, coef, samples=8, first=0, last=frames - 1)


def demo_logprob(policy: ActorCritic, targets: DemoTargets) -> float:
    with torch.no_grad():
        logits = policy(targets.obs)[0]
    return torch.log_softmax(logits, -1).gather(-1, targets.actions[:, None]).mean().item()


def test_the_cloning_term_teaches_the_demos_actions_and_reports_its_loss():
    torch.manual_seed(0)
    policy = ActorCritic(PolicyConfig(num_actions=6, **SMALL))
    learner = PPOLearner(policy, PPOConfig(lr=1e-3), "cpu")
    targets = demo_targets(policy)
    batch = random_batch(policy, T=8, B=4)
    batch.advantages.zero_()  # no PPO signal: only the cloning term can move the policy towards the demo
    before = demo_logprob(policy, targets)
    first = learner.update(batch, demo=targets)
    for _ in range(5):
        last = learner.update(batch, demo=targets)
    assert demo_logprob(policy, targets) > before + 1.0
    assert last["bc_loss"] < first["bc_loss"] and 0 <= first["bc_accuracy"] <= 1 and last["bc_accuracy"] > 0.5
    assert "bc_loss" not in learner.update(batch)  # no demo: no cloning statistics


def test_the_ppo_terms_see_only_the_rollout_and_masked_steps_stay_untrained():
    """With the cloning term on, a replayed (masked) step still trains nothing: two rollouts that differ only
    in their masked steps give the same weights. With coefficient 0 the demo frames change nothing."""
    torch.manual_seed(0)
    policy = ActorCritic(PolicyConfig(num_actions=4, **SMALL))
    T, B = 6, 4
    batch = random_batch(policy, T, B)
    batch.loss_mask[:, 1] = 0.0
    batch.loss_mask[:3, 3] = 0.0
    other = copy.deepcopy(batch)
    g = torch.Generator().manual_seed(1)
    masked = batch.loss_mask == 0
    other.obs[masked] = random_obs(int(masked.sum()), generator=g)
    other.actions[masked] = torch.randint(0, 4, (int(masked.sum()),), generator=g)
    for name in ("logprobs", "values", "advantages", "returns"):
        getattr(other, name)[masked] = 10 * torch.randn(int(masked.sum()), generator=g)

    def trained(b, demo):
        torch.manual_seed(123)  # the same shuffles and demo draws
        learner = PPOLearner(copy.deepcopy(policy), PPOConfig(), "cpu")
        learner.update(b, demo=demo)
        return params_of(learner.policy)

    targets = demo_targets(policy, coef=0.5)
    for pa, pb in zip(trained(batch, targets), trained(other, targets)):
        assert torch.allclose(pa, pb, atol=1e-6)
    plain = trained(batch, None)
    zero = trained(batch, DemoTargets(targets.obs, targets.actions, 0.0, 8, 0, 15))
    with_demo = trained(batch, targets)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(plain, zero))
    assert any(not torch.allclose(a, b, atol=1e-4) for a, b in zip(plain, with_demo))


def test_a_recurrent_policy_is_refused():
    policy = ActorCritic(PolicyConfig(num_actions=4, recurrent=True, **SMALL))
    learner = PPOLearner(policy, PPOConfig(), "cpu")
    with pytest.raises(UserError, match="recurrent"):
        learner.update(random_batch(policy), demo=demo_targets(policy))


# ----------------------------------------------------------------------------- in a run
def test_a_run_clones_the_frames_around_its_window_and_logs_the_term(tmp_path):
    config = TrainConfig(env_kind="toy", toy={"length": 40, "num_actions": 3}, arch="mlp", device="cpu",
                         num_envs=2, num_workers=0, num_steps=8, total_frames=16 * 20, status_every=1e9,
                         curriculum=CurriculumConfig(window=8, min_episodes=4),
                         imitation=ImitationConfig(coef=0.5, samples=4, ahead=6))
    config.ppo.num_minibatches = 2
    trainer = Trainer(config, tmp_path / "run", quiet=True)
    targets = trainer._demo_targets()
    sched = trainer.scheduler
    assert (targets.first, targets.last) == bc_region(sched.start_frame, sched.window_end, 6, 40)
    code = [trainer.demo_frames.env.demo_action(t) for t in range(40)]
    assert targets.actions.tolist() == code[targets.first:targets.last + 1]
    positions = targets.obs.reshape(len(targets.actions), -1).argmax(-1)  # the toy's one-hot position
    assert positions.tolist() == list(range(targets.first, targets.last + 1))
    assert trainer.train() == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 20
    assert all(np.isfinite(r["bc_loss"]) and 0 <= r["bc_accuracy"] <= 1 for r in rows)
    assert rows[-1]["bc_loss"] < rows[0]["bc_loss"]
    assert rows[-1]["bc_accuracy"] > rows[0]["bc_accuracy"]
    front = sched.start_frame
    while sched.start_frame == front:  # the front ties the demo every time: the window moves back ...
        sched.record(sched.start_frame, True)
        sched.update()
    moved = trainer._demo_targets()
    assert moved.first < targets.first
    assert (moved.first, moved.last) == bc_region(sched.start_frame, sched.window_end, 6, 40)  # ... and the region
