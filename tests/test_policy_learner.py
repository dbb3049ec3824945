"""Tests for the actor-critic networks (policy.py) and the PPO update (learner.py), real torch on CPU."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.multiprocessing as mp

from curriculum_ppo.errors import UserError
from curriculum_ppo.ppo.learner import (PPOConfig, PPOLearner, RolloutBatch, cpu_has_bf16, rollout_obs_buffer,
                                        trunk_dtype)
from curriculum_ppo.ppo.policy import ActorCritic, PolicyConfig, episode_pieces, unwrap

SMALL_OBS = (1, 36, 36)  # the smallest frame the 8/4, 4/2, 3/1 conv stack accepts
SMALL = dict(obs_shape=SMALL_OBS, hidden_size=64)  # cheap nets for the learner tests


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_obs(*shape: int, obs_shape=SMALL_OBS, generator=None) -> torch.Tensor:
    return torch.randint(0, 256, (*shape, *obs_shape), dtype=torch.uint8, generator=generator)


def random_batch(policy: ActorCritic, T: int = 6, B: int = 4, seed: int = 0) -> RolloutBatch:
    g = torch.Generator().manual_seed(seed)
    A = policy.config.num_actions
    starts = torch.rand(T, B, generator=g) < 0.2
    starts[0] = True
    return RolloutBatch(
        obs=random_obs(T, B, obs_shape=policy.config.obs_shape, generator=g),
        actions=torch.randint(0, A, (T, B), generator=g),
        logprobs=torch.full((T, B), -torch.log(torch.tensor(float(A)))) + 0.05 * torch.randn(T, B, generator=g),
        values=torch.randn(T, B, generator=g),
        advantages=torch.randn(T, B, generator=g),
        returns=torch.randn(T, B, generator=g),
        episode_starts=starts,
        loss_mask=torch.ones(T, B),
        initial_state=policy.initial_state(B) if policy.recurrent else None,
    )


def params_of(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in unwrap(module).parameters()]


# ----------------------------------------------------------------------------- policy


@pytest.mark.parametrize("obs_shape", [(4, 84, 84), (12, 105, 80)])
@pytest.mark.parametrize("arch", ["nature", "large"])
@pytest.mark.parametrize("recurrent", [False, True])
def test_output_shapes(arch, recurrent, obs_shape):
    torch.manual_seed(0)
    policy = ActorCritic(PolicyConfig(num_actions=18, arch=arch, recurrent=recurrent, obs_shape=obs_shape))
    B, T = 3, 2
    state = policy.initial_state(B, "cpu")
    hidden = {"nature": 512, "large": 800}[arch]
    assert (state is None) == (not recurrent)
    if recurrent:
        assert state.shape == (B, hidden)

    logits, value, new_state = policy(random_obs(B, obs_shape=obs_shape), state, torch.zeros(B, dtype=torch.bool))
    assert logits.shape == (B, 18) and value.shape == (B,)
    assert logits.dtype == value.dtype == torch.float32
    assert (new_state is None) if not recurrent else new_state.shape == (B, hidden)

    seq_logits, seq_values = policy.forward_sequence(random_obs(T, B, obs_shape=obs_shape), state, torch.zeros(T, B))
    assert seq_logits.shape == (T, B, 18) and seq_values.shape == (T, B)

    action, logprob, value, _ = policy.act(random_obs(B, obs_shape=obs_shape), state, torch.zeros(B))
    assert action.shape == logprob.shape == value.shape == (B,)
    assert action.dtype == torch.int64 and ((0 <= action) & (action < 18)).all()
    assert (logprob <= 0).all()


def test_initial_policy_is_near_uniform_and_act_is_consistent():
    torch.manual_seed(0)
    policy = ActorCritic(PolicyConfig(num_actions=6, obs_shape=SMALL_OBS))
    obs = random_obs(16)
    logits, _, _ = policy(obs)
    probs = logits.softmax(-1)
    assert torch.allclose(probs, torch.full_like(probs, 1 / 6), atol=0.02)  # policy head init std 0.01

    action, logprob, _, _ = policy.act(obs, deterministic=True)
    assert torch.equal(action, logits.argmax(-1))
    assert torch.allclose(logprob, logits.log_softmax(-1).gather(-1, action[:, None]).squeeze(-1))

    # Gumbel-max sampling follows the softmax distribution.
    sharp = torch.tensor([[0.0, 2.0, 0.0, -10.0, 0.0, 0.0]]).repeat(20000, 1)
    from curriculum_ppo.ppo.policy import sample_categorical

    freq = torch.bincount(sample_categorical(sharp), minlength=6).float() / 20000
    assert torch.allclose(freq, sharp[0].softmax(-1), atol=0.015)


def test_bad_configs_are_user_errors():
    with pytest.raises(UserError, match="too small"):
        ActorCritic(PolicyConfig(num_actions=4, obs_shape=(1, 32, 32)))
    with pytest.raises(UserError, match="architecture"):
        ActorCritic(PolicyConfig(num_actions=4, arch="resnet"))


@pytest.mark.parametrize("arch", ["nature", "large"])
def test_forward_sequence_matches_stepping_with_resets(arch):
    torch.manual_seed(0)
    policy = ActorCritic(PolicyConfig(num_actions=5, arch=arch, recurrent=True, obs_shape=(2, 36, 40)))
    T, B = 7, 3
    obs = random_obs(T, B, obs_shape=(2, 36, 40))
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[3, 0] = starts[4, 2] = starts[0, 1] = True  # resets in the middle of the segment
    state0 = torch.randn(B, policy.hidden_size)  # non-zero: a reset must really clear it

    seq_logits, seq_values = policy.forward_sequence(obs, state0, starts)
    state = state0
    for t in range(T):
        logits, value, state = policy(obs[t], state, starts[t])
        assert torch.allclose(seq_logits[t], logits, atol=1e-5)
        assert torch.allclose(seq_values[t], value, atol=1e-5)
    _, _, final_state = policy(obs, state0, starts, sequence=True)
    assert torch.allclose(final_state, state, atol=1e-5)

    # A reset really forgets the past: with a reset at t=3, env 0's outputs from t=3 on ignore state0 and obs[:3].
    other = obs.clone()
    other[:3, 0] = random_obs(3, obs_shape=(2, 36, 40))
    other_logits, _ = policy.forward_sequence(other, torch.randn(B, policy.hidden_size), starts)
    assert torch.allclose(other_logits[3:, 0], seq_logits[3:, 0], atol=1e-5)
    assert not torch.allclose(other_logits[:3, 0], seq_logits[:3, 0], atol=1e-5)


def gru_cell_reference(policy, x, h0, starts):
    """A GRUCell with the policy's GRU weights, stepped one step at a time, its state zeroed at episode
    starts: returns (cell, outputs [T, B, H]); the last output is the final state."""
    hidden = x.shape[-1]
    cell = torch.nn.GRUCell(hidden, hidden)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(policy.gru, name + "_l0"))
    h, outputs = h0, []
    for t in range(x.shape[0]):
        h = cell(x[t], h * (~starts[t]).float().unsqueeze(-1))
        outputs.append(h)
    return cell, torch.stack(outputs)


@pytest.mark.parametrize("packed", [False, True], ids=["stretches", "packed"])
def test_gru_sequence_matches_a_gru_cell_loop_with_resets(packed):
    """The nn.GRU recurrence gives GRUCell's outputs and gradients, step by step, resets included."""
    torch.manual_seed(0)
    policy = ActorCritic(PolicyConfig(num_actions=3, recurrent=True, **SMALL))
    T, B = 9, 4
    x = torch.randn(T, B, 64, requires_grad=True)
    h0 = torch.randn(B, 64, requires_grad=True)
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[0, 2] = True  # at the first step
    starts[3, 0] = starts[3, 1] = True  # two envs at once
    starts[4, 3] = True  # a stretch of one step (3..4)
    starts[8, 0] = True  # at the last step

    ours, final = policy._gru_sequence(x, h0, starts, packed=packed)
    cell, reference = gru_cell_reference(policy, x, h0, starts)
    assert torch.allclose(ours, reference, atol=1e-5)
    assert torch.allclose(final, reference[-1], atol=1e-5)

    weight = torch.randn(T, B, 64)  # a loss that weighs every step differently
    grads = torch.autograd.grad((ours * weight).sum(), (x, h0, policy.gru.weight_hh_l0, policy.gru.weight_ih_l0))
    ref_grads = torch.autograd.grad((reference * weight).sum(), (x, h0, cell.weight_hh, cell.weight_ih))
    for ours_grad, ref_grad in zip(grads, ref_grads):
        assert torch.allclose(ours_grad, ref_grad, atol=1e-4)
    assert torch.count_nonzero(grads[1][2]) == 0  # env 2 starts at t=0: its initial state is not used


def test_episode_pieces_cuts_each_env_at_its_episode_starts():
    starts = torch.zeros(5, 3, dtype=torch.bool)  # [T, B]
    starts[2, 0] = True  # env 0: pieces t 0-1 and 2-4
    starts[0, 1] = starts[1, 1] = True  # env 1: pieces t 0 and 1-4, both starting an episode
    pieces = episode_pieces(starts)  # env 2: one piece, t 0-4, continuing its episode
    assert pieces.lengths.tolist() == [2, 3, 1, 4, 5]
    assert pieces.env.tolist() == [0, 0, 1, 1, 2]
    assert pieces.continues.tolist() == [True, False, False, False, True]
    assert pieces.last.tolist() == [1, 3, 4]
    # step (b, t) lands at (position in its piece, piece) of a [longest=5, pieces=5] layout
    slots = pieces.slot.view(3, 5)
    assert slots[0].tolist() == [0 * 5 + 0, 1 * 5 + 0, 0 * 5 + 1, 1 * 5 + 1, 2 * 5 + 1]
    assert slots[1].tolist() == [0 * 5 + 2, 0 * 5 + 3, 1 * 5 + 3, 2 * 5 + 3, 3 * 5 + 3]
    assert slots[2].tolist() == [t * 5 + 4 for t in range(5)]


@pytest.mark.parametrize("packed", [False, True], ids=["stretches", "packed"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_gru_sequence_matches_a_gru_cell_loop_for_random_resets(seed, packed):
    torch.manual_seed(seed)
    policy = ActorCritic(PolicyConfig(num_actions=3, recurrent=True, obs_shape=SMALL_OBS, hidden_size=16))
    T, B = 20, 6
    starts = torch.rand(T, B) < torch.tensor([0.0, 0.05, 0.2, 0.5, 1.0, 0.3])  # env 4 starts an episode every step
    x = torch.randn(T, B, 16, requires_grad=True)
    h0 = torch.randn(B, 16)
    ours, final = policy._gru_sequence(x, h0, starts, packed=packed)
    _, reference = gru_cell_reference(policy, x, h0, starts)
    assert torch.allclose(ours, reference, atol=1e-5)
    assert torch.allclose(final, reference[-1], atol=1e-5)
    grad, = torch.autograd.grad(ours.sum(), x)
    ref_grad, = torch.autograd.grad(reference.sum(), x)
    assert torch.allclose(grad, ref_grad, atol=1e-5)


def test_checkpoint_of_the_gru_cell_policy_still_loads():
    """Policies saved when the GRU was an nn.GRUCell (keys without ``_l0``) load into today's nn.GRU."""
    torch.manual_seed(0)
    policy = ActorCritic(PolicyConfig(num_actions=3, recurrent=True, **SMALL))
    old = {(k[:-3] if k.startswith("gru.") else k): v.clone() for k, v in policy.state_dict().items()}
    assert "gru.weight_hh" in old and "gru.weight_hh_l0" not in old
    fresh = ActorCritic(PolicyConfig(num_actions=3, recurrent=True, **SMALL))
    fresh.load_state_dict(old)
    obs = random_obs(2, obs_shape=SMALL_OBS)
    assert torch.equal(fresh(obs)[0], policy(obs)[0])


def test_feedforward_sequence_is_batched_forward():
    torch.manual_seed(0)
    policy = ActorCritic(PolicyConfig(num_actions=3, obs_shape=SMALL_OBS))
    obs = random_obs(4, 5)
    seq_logits, seq_values = policy.forward_sequence(obs, None, None)
    logits, values, _ = policy(obs.reshape(20, *SMALL_OBS))
    assert torch.allclose(seq_logits.reshape(20, 3), logits, atol=1e-6)
    assert torch.allclose(seq_values.reshape(20), values, atol=1e-6)


# ----------------------------------------------------------------------------- learner


def bandit_obs(labels: torch.Tensor) -> torch.Tensor:
    """Contextual bandit: a bright 18x18 quadrant at position ``label`` (0..3) of a dark 36x36 frame."""
    obs = torch.zeros(*labels.shape, *SMALL_OBS, dtype=torch.uint8)
    flat = obs.view(-1, 36, 36)
    for i, label in enumerate(labels.reshape(-1).tolist()):
        r, c = divmod(label, 2)
        flat[i, r * 18 : (r + 1) * 18, c * 18 : (c + 1) * 18] = 255
    return obs


@pytest.mark.parametrize("recurrent", [False, True])
def test_learner_solves_contextual_bandit(recurrent):
    torch.manual_seed(0)
    policy = ActorCritic(PolicyConfig(num_actions=4, recurrent=recurrent, **SMALL))
    learner = PPOLearner(policy, PPOConfig(lr=3e-4, ent_coef=0.0), "cpu")
    T, B = 8, 16
    for _ in range(4):
        labels = torch.randint(0, 4, (T, B))
        obs = bandit_obs(labels)
        starts = torch.ones(T, B, dtype=torch.bool)  # every step is a one-step episode
        state = policy.initial_state(B)
        actions, logprobs, values = [], [], []
        for t in range(T):
            a, lp, v, state = policy.act(obs[t], state, starts[t])
            actions.append(a), logprobs.append(lp), values.append(v)
        actions, logprobs, values = torch.stack(actions), torch.stack(logprobs), torch.stack(values)
        rewards = (actions == labels).float()
        batch = RolloutBatch(
            obs=obs, actions=actions, logprobs=logprobs, values=values,
            advantages=rewards - values, returns=rewards,  # one-step episodes: return = reward
            episode_starts=starts, loss_mask=torch.ones(T, B),
            initial_state=policy.initial_state(B),
        )  # fmt: skip
        stats = learner.update(batch)
        assert all(torch.isfinite(torch.tensor(v)) for k, v in stats.items() if k != "explained_variance")

    labels = torch.randint(0, 4, (256,))
    greedy, _, _, _ = policy.act(bandit_obs(labels), policy.initial_state(256), torch.ones(256), deterministic=True)
    accuracy = (greedy == labels).float().mean().item()
    assert accuracy > 0.9, accuracy


def test_update_reports_all_stats_and_scales():
    torch.manual_seed(0)
    policy = ActorCritic(PolicyConfig(num_actions=4, **SMALL))
    learner = PPOLearner(policy, PPOConfig(), "cpu")
    stats = learner.update(random_batch(policy), lr_scale=0.5, ent_scale=0.1)
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac",
                "explained_variance", "grad_norm", "lr", "ent_coef"):  # fmt: skip
        assert isinstance(stats[key], float), key
    assert stats["lr"] == pytest.approx(2.5e-4 * 0.5)
    assert stats["ent_coef"] == pytest.approx(PPOConfig().ent_coef * 0.1)
    assert stats["num_gradient_steps"] == 32  # 4 epochs x 8 minibatches (the defaults)
    assert learner.optimizer.param_groups[0]["lr"] == pytest.approx(1.25e-4)
    assert policy.autocast_dtype is None  # amp=True is a no-op on CPU


def test_trunk_dtype_is_bfloat16_on_cuda_by_default_and_on_cpu_only_when_asked_and_supported():
    assert trunk_dtype(PPOConfig(), "cuda") is torch.bfloat16
    assert trunk_dtype(PPOConfig(amp=False), "cuda") is None
    assert trunk_dtype(PPOConfig(), "cpu", cpu_bf16_kernels=True) is None  # off unless asked
    assert trunk_dtype(PPOConfig(cpu_bf16=True), "cpu", cpu_bf16_kernels=True) is torch.bfloat16
    assert trunk_dtype(PPOConfig(cpu_bf16=True), "cpu", cpu_bf16_kernels=False) is None  # emulated bf16 is slower
    assert trunk_dtype(PPOConfig(cpu_bf16=True), "mps", cpu_bf16_kernels=True) is None


def conv_output_dtypes(policy: ActorCritic, obs: torch.Tensor) -> set[torch.dtype]:
    seen = set()
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
             for m in policy.cnn.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        policy(obs)
    for h in hooks:
        h.remove()
    return seen


def test_a_module_set_for_cuda_runs_cpu_inputs_in_float32():
    policy = ActorCritic(PolicyConfig(num_actions=4, **SMALL))
    policy.set_mixed_precision(torch.bfloat16, "cuda")
    assert conv_output_dtypes(policy, random_obs(2)) == {torch.float32}


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bfloat16 kernels (AMX or AVX-512-BF16)")
def test_cpu_bf16_runs_the_trunk_in_bfloat16_for_rollouts_and_updates_alike():
    torch.manual_seed(0)
    policy = ActorCritic(PolicyConfig(num_actions=4, **SMALL))
    learner = PPOLearner(policy, PPOConfig(cpu_bf16=True, num_epochs=1, num_minibatches=1), "cpu")
    assert learner.trunk_dtype is torch.bfloat16
    obs = random_obs(4)
    assert conv_output_dtypes(policy, obs) == {torch.bfloat16}
    fp32 = copy.deepcopy(policy)
    fp32.set_mixed_precision(None)
    logits, value, _ = policy(obs)
    ref_logits, ref_value, _ = fp32(obs)
    assert logits.dtype == value.dtype == torch.float32  # heads stay float32
    assert not torch.equal(logits, ref_logits) and torch.allclose(logits, ref_logits, atol=2e-3)
    # The training pass (sequence=True, as the update calls it) sees the rollout's numerics: the bfloat16 ones.
    seq = random_obs(3, 4)
    with torch.no_grad():
        step_logits = torch.stack([policy(seq[t])[0] for t in range(3)])
        train_logits = policy(seq, sequence=True)[0]
        fp32_logits = fp32(seq, sequence=True)[0]
    assert torch.allclose(train_logits, step_logits, rtol=0, atol=1e-6)
    assert (train_logits - fp32_logits).abs().max() > 1e-5
    stats = learner.update(random_batch(policy))
    assert all(math.isfinite(stats[k]) for k in PPOLearner.STAT_NAMES)


@pytest.mark.parametrize("recurrent", [False, True])
def test_loss_mask_excludes_masked_transitions(recurrent):
    torch.manual_seed(0)
    policy = ActorCritic(PolicyConfig(num_actions=4, recurrent=recurrent, **SMALL))
    T, B, keep = 6, 4, 2
    batch = random_batch(policy, T, B)
    batch.loss_mask = torch.zeros(T, B)
    batch.loss_mask[:, keep] = 1.0

    # Same rollout, but everything outside the one valid column is different.
    other = copy.deepcopy(batch)
    g = torch.Generator().manual_seed(1)
    cols = [b for b in range(B) if b != keep]
    other.obs[:, cols] = random_obs(T, len(cols), generator=g)
    other.actions[:, cols] = torch.randint(0, 4, (T, len(cols)), generator=g)
    for name in ("logprobs", "values", "advantages", "returns"):
        getattr(other, name)[:, cols] = 10 * torch.randn(T, len(cols), generator=g)

    results = []
    for b in (batch, other):
        torch.manual_seed(123)  # same minibatch shuffling
        learner = PPOLearner(copy.deepcopy(policy), PPOConfig(), "cpu")
        stats = learner.update(b)
        results.append((params_of(learner.policy), stats))
    (params_a, stats_a), (params_b, stats_b) = results
    for pa, pb in zip(params_a, params_b):
        assert torch.allclose(pa, pb, atol=1e-6)
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl"):
        assert stats_a[key] == pytest.approx(stats_b[key], abs=1e-6)
    assert stats_a["valid_fraction"] == pytest.approx(1 / B)
    assert any(not torch.allclose(p0, p1) for p0, p1 in zip(params_of(policy), params_a)), "update did nothing"


def test_fully_masked_batch_changes_nothing():
    torch.manual_seed(0)
    policy = ActorCritic(PolicyConfig(num_actions=4, **SMALL))
    learner = PPOLearner(policy, PPOConfig(), "cpu")
    batch = random_batch(policy)
    learner.update(batch)  # give Adam momentum, which would move parameters even with zero gradients
    before = params_of(policy)
    batch.loss_mask.zero_()
    stats = learner.update(batch)
    assert stats["num_gradient_steps"] == 0
    assert all(torch.equal(a, b) for a, b in zip(before, params_of(policy)))


def test_state_dict_round_trip():
    torch.manual_seed(0)
    cfg = PolicyConfig(num_actions=4, recurrent=True, **SMALL)
    learner = PPOLearner(ActorCritic(cfg), PPOConfig(), "cpu")
    batch = random_batch(learner.policy)
    learner.update(batch)

    buffer = io.BytesIO()
    torch.save(learner.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)  # different initial weights
    restored = PPOLearner(ActorCritic(cfg), PPOConfig(), "cpu")
    restored.load_state_dict(torch.load(buffer, map_location="cpu", weights_only=True))
    assert all(torch.equal(a, b) for a, b in zip(params_of(learner.policy), params_of(restored.policy)))

    # Optimizer state (Adam moments, step counts) and the shuffle RNG came along: the next update is identical.
    for lrn in (learner, restored):
        lrn.update(batch)
    assert all(torch.equal(a, b) for a, b in zip(params_of(learner.policy), params_of(restored.policy)))


def test_rollout_obs_buffer_stores_frames_channels_last_and_the_policy_reads_both_layouts():
    T, B, obs_shape = 5, 3, (4, 84, 84)
    buffer = rollout_obs_buffer(T, B, obs_shape)
    assert buffer.shape == (T, B, *obs_shape) and buffer.dtype == torch.uint8 and not buffer.any()
    frames = random_obs(T, B, obs_shape=obs_shape, generator=torch.Generator().manual_seed(0))
    buffer[2].copy_(frames[2])  # what the Trainer does each step
    buffer.copy_(frames)
    assert torch.equal(buffer, frames)
    # What the learner trains on keeps the NHWC layout: feed-forward rows, recurrent columns, a clone.
    flat = buffer.reshape(T * B, *obs_shape)
    assert flat.is_contiguous(memory_format=torch.channels_last)
    assert flat[torch.tensor([4, 0, 9])].is_contiguous(memory_format=torch.channels_last)
    assert buffer[:, torch.tensor([2, 0])].reshape(T * 2, *obs_shape).is_contiguous(memory_format=torch.channels_last)
    assert buffer.clone().stride() == buffer.stride()
    # Other observation shapes are stored plainly.
    assert rollout_obs_buffer(T, B, (6,)).is_contiguous() and rollout_obs_buffer(T, B, (6,)).shape == (T, B, 6)

    torch.manual_seed(0)
    policy = ActorCritic(PolicyConfig(num_actions=18, obs_shape=obs_shape))
    with torch.no_grad():
        logits_plain, values_plain, _ = policy(frames.reshape(T * B, *obs_shape))
        logits_nhwc, values_nhwc, _ = policy(flat)
    assert torch.equal(logits_plain, logits_nhwc) and torch.equal(values_plain, values_nhwc)


def test_fused_adam_steps_like_plain_adam_and_a_plain_adam_checkpoint_resumes_fused():
    torch.manual_seed(0)
    cfg = PolicyConfig(num_actions=4, **SMALL)
    fused = PPOLearner(ActorCritic(cfg), PPOConfig(), "cpu")
    assert fused.optimizer.param_groups[0]["fused"] is True  # torch >= 2.4 has fused Adam on CPU
    plain = copy.deepcopy(fused)
    plain.optimizer = torch.optim.Adam(plain.policy.parameters(), lr=plain.config.lr, eps=plain.config.adam_eps)
    assert not plain.optimizer.param_groups[0]["fused"]  # as every CPU checkpoint before fused Adam was saved
    batch = random_batch(fused.policy)
    initial = params_of(fused.policy)
    for learner in (fused, plain):
        learner.update(batch)
    assert any(not torch.allclose(a, b) for a, b in zip(params_of(fused.policy), initial))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(params_of(fused.policy), params_of(plain.policy)))

    buffer = io.BytesIO()
    torch.save(plain.state_dict(), buffer)
    buffer.seek(0)
    restored = PPOLearner(ActorCritic(cfg), PPOConfig(), "cpu")
    restored.load_state_dict(torch.load(buffer, map_location="cpu", weights_only=True))
    assert restored.optimizer.param_groups[0]["fused"] is True  # this process's kernel, not the saver's
    for learner in (plain, restored):
        learner.update(batch)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(params_of(plain.policy), params_of(restored.policy)))


# ----------------------------------------------------------------------------- DDP


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)  # identical initial weights on both ranks
        policy = ActorCritic(PolicyConfig(num_actions=4, recurrent=True, **SMALL))
        ddp = torch.nn.parallel.DistributedDataParallel(policy)
        learner = PPOLearner(ddp, PPOConfig(num_minibatches=2), "cpu")
        batch = random_batch(policy, T=5, B=4, seed=100 + rank)  # different data on each rank
        if rank == 1:
            batch.loss_mask[:, :2] = 0.0  # rank 1 has a minibatch slot with nothing to train on
        learner.generator.manual_seed(rank)  # different minibatch order on each rank
        learner.update(batch)
        torch.save(torch.cat([p.detach().flatten() for p in policy.parameters()]), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture
def single_rank_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_learner_routes_recurrent_training_through_ddp(single_rank_group):
    """DDP only all-reduces gradients of passes made through its own forward; the learner must use it."""
    torch.manual_seed(0)
    policy = ActorCritic(PolicyConfig(num_actions=4, recurrent=True, **SMALL))
    reference = copy.deepcopy(policy)
    ddp = torch.nn.parallel.DistributedDataParallel(policy)
    reducer_calls = []

    def counting_hook(state, bucket):  # world size 1: the "all-reduce" is the identity
        reducer_calls.append(bucket.index())
        future = torch.futures.Future()
        future.set_result(bucket.buffer())
        return future

    ddp.register_comm_hook(None, counting_hook)
    batch = random_batch(policy, T=5, B=4)

    # Negative control: a pass through the unwrapped module's method is invisible to DDP.
    logits, values = unwrap(ddp).forward_sequence(batch.obs, batch.initial_state, batch.episode_starts)
    (logits.sum() + values.sum()).backward()
    assert reducer_calls == []
    ddp.zero_grad()

    torch.manual_seed(5)
    learner = PPOLearner(ddp, PPOConfig(), "cpu")
    stats = learner.update(batch)
    assert len(reducer_calls) >= stats["num_gradient_steps"] == 16

    torch.manual_seed(5)
    plain = PPOLearner(reference, PPOConfig(), "cpu")
    plain.update(batch)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(params_of(policy), params_of(reference)))


@pytest.mark.slow
def test_recurrent_ddp_keeps_ranks_in_sync(tmp_path):
    """Gradients of the recurrent sequence pass must be all-reduced, so both ranks end with equal weights."""
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="spawn")
    p0, p1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert torch.allclose(p0, p1, atol=1e-6)
    torch.manual_seed(0)
    initial = torch.cat([p.flatten() for p in ActorCritic(PolicyConfig(4, recurrent=True, **SMALL)).parameters()])
    assert not torch.allclose(p0, initial)
