"""advantages.py: GAE, whitening, masked statistics and the sequence baselines."""

import pytest
import torch

from minirlhf.advantages import gae, masked_mean, masked_var, sequence_baseline, whiten


# ---------------------------------------------------------------- GAE and whitening
def naive_gae(rewards, values, mask, gamma, lam):
    """Row by row, over the real tokens only, straight from the definitions."""
    adv, ret = torch.zeros_like(rewards), torch.zeros_like(rewards)
    for b in range(rewards.size(0)):
        n = int(mask[b].sum())
        r, v = rewards[b, :n].tolist(), values[b, :n].tolist() + [0.0]   # V = 0 after the last real token
        a = 0.0
        for t in reversed(range(n)):
            delta = r[t] + gamma * v[t + 1] - v[t]
            a = delta + gamma * lam * a
            adv[b, t], ret[b, t] = a, a + v[t]
    return adv, ret


def padded_batch(seed=0, B=4, T=7):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([T, 1, 4, 6])[:B]
    mask = torch.arange(T)[None, :] < lengths[:, None]
    return torch.randn(B, T, generator=g), torch.randn(B, T, generator=g), mask


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (1.0, 0.0), (0.0, 0.95), (0.5, 0.5)])
def test_gae_matches_a_naive_per_row_loop_with_padding(gamma, lam):
    rewards, values, mask = padded_batch()
    adv, ret = gae(rewards, values, mask, gamma, lam)
    want_adv, want_ret = naive_gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(adv, want_adv)
    torch.testing.assert_close(ret, want_ret)
    assert (adv[~mask] == 0).all() and (ret[~mask] == 0).all()


def test_gae_edge_cases_lam_1_is_monte_carlo_and_lam_0_is_td():
    rewards, values, mask = padded_batch(1)
    m = mask.float()
    # lam = 1, gamma = 1: A_t = (sum of rewards from t to the end) - V_t
    future = (rewards * m).flip(1).cumsum(1).flip(1)
    torch.testing.assert_close(gae(rewards, values, mask, 1.0, 1.0)[0], (future - values) * m)
    # lam = 0: A_t = r_t + gamma V_{t+1} - V_t, V = 0 after the last real token
    next_v = torch.cat([values[:, 1:] * m[:, 1:], torch.zeros(4, 1)], 1)
    torch.testing.assert_close(gae(rewards, values, mask, 0.9, 0.0)[0], (rewards + 0.9 * next_v - values) * m)
    # gamma = 0: only the immediate reward counts, whatever lam
    torch.testing.assert_close(gae(rewards, values, mask, 0.0, 0.95)[0], (rewards - values) * m)


def test_gae_hand_values_score_at_the_end():
    # one response of 3 tokens, reward 1 at the end, V = 0: every advantage is lam^(T-1-t)
    adv, ret = gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool), 1.0, 0.5)
    torch.testing.assert_close(adv, torch.tensor([[0.25, 0.5, 1.0]]))
    torch.testing.assert_close(ret, adv)


def test_gae_ignores_whatever_the_padding_holds():
    rewards, values, mask = padded_batch(2)
    junk_r, junk_v = rewards.clone(), values.clone()
    junk_r[~mask], junk_v[~mask] = 1e6, -1e6
    for a, b in zip(gae(rewards, values, mask), gae(junk_r, junk_v, mask)):
        torch.testing.assert_close(a, b)


def test_gae_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        gae(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3, dtype=torch.bool))


def test_whiten_over_the_mask_only():
    x, _, mask = padded_batch(3)
    x = x * 3 + 5
    x[~mask] = 1e4                                     # padding must not move the statistics
    w = whiten(x, mask)
    real = w[mask]
    assert real.mean().abs() < 1e-5 and real.std().item() == pytest.approx(1.0, abs=1e-4)
    assert (w[~mask] == 0).all()
    kept = whiten(x, mask, shift_mean=False)[mask]
    assert kept.mean().item() == pytest.approx(x[mask].mean().item(), rel=1e-4)      # the mean stays, the spread is 1
    assert kept.std().item() == pytest.approx(1.0, abs=1e-4)
    assert masked_mean(x, mask).item() == pytest.approx(x[mask].mean().item(), rel=1e-6)
    assert masked_var(x, mask).item() == pytest.approx(x[mask].var().item(), rel=1e-5)


def test_sequence_baselines_hand_values():
    g = torch.tensor([1.0, 2.0, 6.0])
    torch.testing.assert_close(sequence_baseline(g, "none"), torch.zeros(3))
    torch.testing.assert_close(sequence_baseline(g, "mean"), torch.full((3,), 3.0))
    torch.testing.assert_close(sequence_baseline(g, "leave_one_out"), torch.tensor([4.0, 3.5, 1.5]))
    with pytest.raises(ValueError, match="baseline"):
        sequence_baseline(g, "median")


def test_the_baselines_agree_with_each_other_and_work_per_group():
    """One vocabulary: G - mean = (G - 1) / G * (G - leave_one_out), exactly; the group is the last dimension."""
    g = torch.Generator().manual_seed(0)
    returns = torch.randn(5, 4, generator=g, dtype=torch.float64)           # 5 prompts x 4 samples each
    loo = returns - sequence_baseline(returns, "leave_one_out")
    mean = returns - sequence_baseline(returns, "mean")
    torch.testing.assert_close(mean, loo * 3 / 4)
    for kind in ("none", "mean", "leave_one_out"):                          # each group on its own
        per_group = torch.stack([sequence_baseline(row, kind) for row in returns])
        torch.testing.assert_close(sequence_baseline(returns, kind), per_group)
    # leave-one-out is independent of the sample itself: changing G_i leaves b_i unchanged
    bumped = returns.clone()
    bumped[:, 0] += 10.0
    torch.testing.assert_close(sequence_baseline(bumped, "leave_one_out")[:, 0],
                               sequence_baseline(returns, "leave_one_out")[:, 0])
    with pytest.raises(ValueError, match="at least 2"):
        sequence_baseline(torch.ones(3, 1), "leave_one_out")


# ---------------------------------------------------------------- group advantages
from minirlhf.advantages import group_advantages, zero_std_groups  # noqa: E402


def test_group_advantages_grpo_hand_values_and_the_lone_failure():
    a = group_advantages(torch.tensor([[1.0, 1.0, 1.0, 0.0]]))
    # mean 0.75, population std sqrt(0.75 * 0.25) = 0.433: (1 - 0.75) / 0.433 = 0.577, (0 - 0.75) / 0.433 = -1.732
    torch.testing.assert_close(a, torch.tensor([[0.5773, 0.5773, 0.5773, -1.7317]]), atol=1e-3, rtol=0)


def test_group_advantages_dr_grpo_and_rloo_hand_values_and_rloo_is_dr_grpo_times_g_over_g_minus_1():
    r = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 2.0, 1.0, 5.0]])
    dr = group_advantages(r, "mean", "none")
    rloo = group_advantages(r, "leave_one_out", "none")
    torch.testing.assert_close(dr[0], torch.tensor([0.25, 0.25, 0.25, -0.75]))
    torch.testing.assert_close(rloo[0], torch.tensor([1 / 3, 1 / 3, 1 / 3, -1.0]))
    torch.testing.assert_close(rloo, dr * 4 / 3)


@pytest.mark.parametrize("baseline,scale", [("mean", "group"), ("mean", "batch"), ("mean", "none"),
                                            ("leave_one_out", "group"), ("leave_one_out", "none")])
def test_group_advantages_all_equal_group_gives_zeros_never_nan(baseline, scale):
    r = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [3.0, 3.0, 3.0]])
    a = group_advantages(r, baseline, scale)
    assert torch.equal(a, torch.zeros_like(a))
    mixed = group_advantages(torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]]), baseline, scale)
    assert torch.isfinite(mixed).all() and torch.equal(mixed[0], torch.zeros(3)) and mixed[1].abs().sum() > 0


def test_group_advantages_batch_scale_uses_one_std_for_all_groups():
    r = torch.tensor([[1.0, 0.0], [10.0, 0.0]])
    a = group_advantages(r, scale_rewards="batch")
    torch.testing.assert_close(a, (r - r.mean(1, keepdim=True)) / (r.std(correction=0) + 1e-4))
    # group scaling makes every group's spread the same, batch scaling keeps their ratio (1 : 10)
    torch.testing.assert_close(a[1] / a[0], torch.tensor([10.0, 10.0]))


def test_group_advantages_bad_input_says_what_to_do():
    with pytest.raises(ValueError, match="num_generations"):
        group_advantages(torch.ones(8))
    with pytest.raises(ValueError, match="scale_rewards"):
        group_advantages(torch.ones(2, 4), scale_rewards="std")
    with pytest.raises(ValueError, match="baseline"):
        group_advantages(torch.ones(2, 4), baseline="median")


def test_zero_std_groups():
    r = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    assert zero_std_groups(r).tolist() == [True, False, True]
