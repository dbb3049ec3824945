import pytest
import torch

from curriculum_ppo.ppo.gae import compute_gae


def test_matches_hand_computed_three_step_example():
    rewards = torch.tensor([[1.0], [0.0], [2.0]])
    values = torch.tensor([[0.5], [1.0], [1.5]])
    no_dones = torch.zeros(3, 1)
    adv, ret = compute_gae(rewards, values, no_dones, torch.tensor([2.0]), gamma=0.9, lam=0.8)
    # deltas: 1 + .9*1 - .5 = 1.4 ; 0 + .9*1.5 - 1 = .35 ; 2 + .9*2 - 1.5 = 2.3
    # A2 = 2.3 ; A1 = .35 + .72*2.3 = 2.006 ; A0 = 1.4 + .72*2.006 = 2.84432
    torch.testing.assert_close(adv, torch.tensor([[2.84432], [2.006], [2.3]]))
    torch.testing.assert_close(ret, adv + values)
    assert adv.dtype == torch.float32


def test_terminated_step_does_not_bootstrap_but_truncated_step_does():
    rewards = torch.tensor([[1.0, 1.0], [5.0, 5.0]])
    values = torch.tensor([[0.5, 0.5], [100.0, 100.0]])  # values[1] belong to the NEXT episode
    ended = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    truncated = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    trunc_values = torch.tensor([[0.0, 3.0], [0.0, 0.0]])
    adv, _ = compute_gae(
        rewards, values, ended, torch.tensor([0.0, 0.0]), gamma=0.9, lam=0.95,
        truncations=truncated, truncation_values=trunc_values,
    )
    assert adv[0, 0].item() == pytest.approx(1.0 - 0.5)  # terminated: r - V
    assert adv[0, 1].item() == pytest.approx(1.0 + 0.9 * 3.0 - 0.5)  # truncated: r + g*V(final) - V
    # Neither leaks the next episode's advantage back.
    assert adv[1, 0].item() == pytest.approx(adv[1, 1].item())
    assert adv[1, 0].item() == pytest.approx(5.0 - 100.0)


def test_termination_wins_over_truncation():
    rewards, values = torch.ones(1, 1), torch.zeros(1, 1)
    adv, _ = compute_gae(
        rewards, values, torch.ones(1, 1), torch.tensor([7.0]), 0.9, 0.95,
        truncations=torch.ones(1, 1), truncation_values=torch.full((1, 1), 50.0),
    )
    assert adv.item() == pytest.approx(1.0)


def test_lambda_one_equals_discounted_returns_minus_values():
    torch.manual_seed(0)
    T, B, gamma = 7, 3, 0.97
    rewards, values, last_value = torch.randn(T, B), torch.randn(T, B), torch.randn(B)
    terminations = torch.zeros(T, B)
    terminations[2, 1] = 1.0
    adv, ret = compute_gae(rewards, values, terminations, last_value, gamma=gamma, lam=1.0)
    expected = torch.zeros(T, B)
    running = last_value.clone()
    for t in reversed(range(T)):
        running = rewards[t] + gamma * running * (1.0 - terminations[t])
        expected[t] = running
    torch.testing.assert_close(ret, expected)
    torch.testing.assert_close(adv, expected - values)


def test_truncation_arguments_must_come_together():
    x = torch.zeros(2, 1)
    with pytest.raises(ValueError):
        compute_gae(x, x, x, torch.zeros(1), 0.99, 0.95, truncations=x)
