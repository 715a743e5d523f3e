"""losses.py: every objective as a pure function, by hand values and gradients."""
import math

import pytest
import torch

from minirlhf import losses
from minirlhf.advantages import discounted_returns


def test_next_token_loss_hand_value_and_mask():
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 2] = math.log(3)  # p(2) = 3/6 at position 0
    tokens = torch.tensor([[0, 2, 1]])
    expected = (-math.log(0.5) + math.log(4)) / 2
    assert losses.next_token_loss(logits, tokens).item() == pytest.approx(expected, rel=1e-6)
    mask = torch.tensor([[True, False, True]])           # only the target at t=2 counts
    assert losses.next_token_loss(logits, tokens, mask).item() == pytest.approx(math.log(4), rel=1e-6)
    with pytest.raises(ValueError, match="agree"):
        losses.next_token_loss(logits, tokens[:, :2])


def test_sft_mask_and_that_prompt_tokens_get_no_gradient():
    tokens = torch.tensor([[1, 5, 6, 7, 8, 2, 0]])
    mask = losses.sft_loss_mask(tokens, torch.tensor([3]))
    assert mask.tolist() == [[False, False, False, True, True, True, False]]
    logits = torch.randn(1, 7, 10, requires_grad=True)
    losses.next_token_loss(logits, tokens, mask).backward()
    # position t predicts t+1: only positions 2, 3, 4 predict response tokens
    assert logits.grad[0].abs().sum(-1).nonzero().flatten().tolist() == [2, 3, 4]


def test_reinforce_loss_gradient_and_returns():
    lp = torch.log(torch.tensor([0.5, 0.25], requires_grad=True))
    loss = losses.reinforce_loss(lp, torch.tensor([1.0, 3.0]), baseline=2.0)
    assert loss.item() == pytest.approx(-(math.log(0.5) * -1 + math.log(0.25) * 1) / 2)
    assert discounted_returns(torch.tensor([1.0, 0.0, 2.0]), 0.5).tolist() == [1.5, 1.0, 2.0]
    assert discounted_returns(torch.tensor([[1.0, 1.0], [0.0, 1.0]]), 1.0).tolist() == [[2.0, 1.0], [1.0, 1.0]]


# ---------------------------------------------------------------- losses
def test_bradley_terry_loss_hand_values():
    assert losses.bradley_terry_loss(torch.tensor([0.0]), torch.tensor([0.0])).item() == pytest.approx(math.log(2))
    # margins 1 and -2: mean of log(1 + e^-1) and log(1 + e^2)
    expected = (math.log(1 + math.e ** -1) + math.log(1 + math.e ** 2)) / 2
    got = losses.bradley_terry_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # only the margin matters
    assert losses.bradley_terry_loss(torch.tensor([11.0]), torch.tensor([10.0])).item() == pytest.approx(math.log(1 + math.e ** -1))


def test_bradley_terry_loss_is_finite_with_finite_gradients_at_huge_margins():
    chosen = torch.tensor([100.0, 0.0], requires_grad=True)
    rejected = torch.tensor([0.0, 100.0], requires_grad=True)
    loss = losses.bradley_terry_loss(chosen, rejected)
    assert loss.item() == pytest.approx(50.0)                      # (~0 + 100) / 2
    loss.backward()
    # d/dr_c of -log sigma(m) / B = -(1 - sigma(m)) / B: ~0 for the right pair, -1/2 for the wrong one
    assert torch.allclose(chosen.grad, torch.tensor([0.0, -0.5]), atol=1e-6)
    assert torch.allclose(rejected.grad, -chosen.grad)


def test_ranking_loss_is_the_mean_of_its_pairwise_losses():
    r = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.3]])
    by_hand = sum(-math.log(1 / (1 + math.exp(-(r[b, i] - r[b, j]).item())))
                  for b in range(2) for i, j in [(0, 1), (0, 2), (1, 2)]) / 6   # C(3, 2) = 3 pairs per prompt
    assert losses.ranking_loss(r).item() == pytest.approx(by_hand, rel=1e-6)
    # K = 2 is Bradley-Terry
    assert torch.allclose(losses.ranking_loss(r[:, :2]), losses.bradley_terry_loss(r[:, 0], r[:, 1]))


def test_ranking_loss_mask_averages_each_prompt_over_its_own_pairs():
    r = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 123.0]])
    valid = torch.tensor([[True, True, True], [True, True, False]])   # prompt 2 has only 2 responses
    expected = (losses.ranking_loss(r[:1]) + losses.bradley_terry_loss(r[1:, 0], r[1:, 1])) / 2
    assert torch.allclose(losses.ranking_loss(r, valid), expected)
    one_response = torch.tensor([[True, True, True], [True, False, False]])   # no pair: does not count
    assert torch.allclose(losses.ranking_loss(r, one_response), losses.ranking_loss(r[:1]))


def test_plackett_luce_hand_value_and_k2_is_bradley_terry():
    r = torch.tensor([[1.0, 0.0, -1.0]])
    # P = e^1 / (e^1 + e^0 + e^-1) * e^0 / (e^0 + e^-1)
    p = math.e / (math.e + 1 + math.e ** -1) * 1 / (1 + math.e ** -1)
    assert losses.plackett_luce_loss(r).item() == pytest.approx(-math.log(p), rel=1e-6)
    pair = torch.tensor([[0.3, 1.2], [2.0, -1.0]])
    assert torch.allclose(losses.plackett_luce_loss(pair), losses.bradley_terry_loss(pair[:, 0], pair[:, 1]))


# ---------------------------------------------------------------- GRPO family: surrogate and aggregations
from minirlhf.losses import aggregate_token_losses, clipped_surrogate, grpo_loss  # noqa: E402


def ragged_4_and_7():
    """Two responses of 4 and 7 tokens in a (2, 7) batch, the first padded after its end."""
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    return mask


def test_aggregations_4_vs_7_tokens_hand_values():
    mask = ragged_4_and_7()
    per_token = torch.ones(2, 7) * torch.tensor([[1.0], [2.0]])     # 1 on the short row, 2 on the long one
    per_token[~mask] = 99.0                                          # padding must not count
    # grpo: (4*1/4 + 7*2/7) / 2 = 1.5;  dapo: (4 + 14) / 11;  dr_grpo: (4 + 14) / (2 * 8)
    assert float(aggregate_token_losses(per_token, mask, "grpo")) == pytest.approx(1.5)
    assert float(aggregate_token_losses(per_token, mask, "dapo")) == pytest.approx(18 / 11)
    assert float(aggregate_token_losses(per_token, mask, "dr_grpo", max_completion_length=8)) == pytest.approx(18 / 16)


def test_aggregation_weights_per_token_are_quarter_and_seventh_for_grpo():
    mask = ragged_4_and_7()
    x = torch.zeros(2, 7, requires_grad=True)
    aggregate_token_losses(x, mask, "grpo").backward()
    torch.testing.assert_close(x.grad, mask.float() * torch.tensor([[1 / 8], [1 / 14]]))   # 1/B * 1/|y_b|
    x.grad = None
    aggregate_token_losses(x, mask, "dapo").backward()
    torch.testing.assert_close(x.grad, mask.float() / 11)
    x.grad = None
    aggregate_token_losses(x, mask, "dr_grpo", max_completion_length=10).backward()
    torch.testing.assert_close(x.grad, mask.float() / 20)


def test_aggregation_bad_input():
    mask = ragged_4_and_7()
    with pytest.raises(ValueError, match="max_completion_length"):
        aggregate_token_losses(torch.zeros(2, 7), mask, "dr_grpo")
    with pytest.raises(ValueError, match="loss_type"):
        aggregate_token_losses(torch.zeros(2, 7), mask, "bnpo")
    with pytest.raises(ValueError, match="mask"):
        aggregate_token_losses(torch.zeros(2, 6), mask, "grpo")


def test_clipped_surrogate_clip_higher_is_asymmetric():
    old = torch.zeros(4)
    logp = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5]))
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    s = clipped_surrogate(logp, old, adv, epsilon=0.2, epsilon_high=0.28)
    # r = 1.5, A > 0: clipped at 1.28; A < 0: min(-1.5, -1.28) = -1.5; r = 0.5, A > 0: 0.5; A < 0: -0.8
    torch.testing.assert_close(s, torch.tensor([1.28, -1.5, 0.5, -0.8]))


def test_ppo_clip_loss_is_the_mean_of_the_symmetric_surrogate():
    g = torch.Generator().manual_seed(0)
    logp, old, adv = torch.randn(10, generator=g), torch.randn(10, generator=g), torch.randn(10, generator=g)
    torch.testing.assert_close(losses.ppo_clip_loss(logp, old, adv, 0.2), -clipped_surrogate(logp, old, adv, 0.2).mean())


def test_grpo_loss_at_ratio_1_is_the_policy_gradient_and_kl_adds_k3():
    mask = ragged_4_and_7()
    logp = (-torch.rand(2, 7)).requires_grad_()
    adv = torch.tensor([1.0, -0.5])
    loss = grpo_loss(logp, logp.detach(), adv, mask, "dapo")
    loss.backward()
    torch.testing.assert_close(loss, -(adv[:, None] * mask).sum() / 11)
    torch.testing.assert_close(logp.grad, -(adv[:, None] * mask) / 11)      # d/dlogp of -A * ratio at ratio 1
    ref = logp.detach() - 0.3
    with_kl = grpo_loss(logp, logp.detach(), adv, mask, "dapo", ref_logprobs=ref, beta=0.5)
    k3 = math.exp(-0.3) - 1 + 0.3
    assert (with_kl - loss).item() == pytest.approx(0.5 * k3, rel=1e-5)
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo_loss(logp, logp.detach(), adv, mask, beta=0.1)


# ---------------------------------------------------------------- DPO and friends
def _four(pc, pr, rc, rr):
    return tuple(torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (pc, pr, rc, rr))


def test_dpo_loss_is_log_2_at_the_start_and_matches_a_hand_value():
    same = torch.tensor([-12.0, -30.5])
    assert losses.dpo_loss(same, same - 3, same, same - 3, beta=0.1).item() == pytest.approx(math.log(2))
    pc, pr, rc, rr = _four([-1.0], [-3.0], [-2.0], [-2.0])           # h = (-1 + 2) - (-3 + 2) = 2
    assert losses.dpo_logits(pc, pr, rc, rr).item() == 2.0
    assert losses.dpo_loss(pc, pr, rc, rr, beta=0.5).item() == pytest.approx(math.log1p(math.exp(-1.0)))


def test_dpo_loss_gradient_is_minus_beta_sigma_of_minus_beta_h_and_the_reference_gets_none():
    pc, pr, rc, rr = _four([-1.0, -5.0], [-3.0, -2.0], [-2.0, -4.0], [-2.0, -2.0])
    beta = 0.5
    losses.dpo_loss(pc, pr, rc, rr, beta).backward()
    h = torch.tensor([2.0, -1.0], dtype=torch.float64)
    expected = -beta * torch.sigmoid(-beta * h) / 2                       # mean over 2 pairs
    assert torch.allclose(pc.grad, expected) and torch.allclose(pr.grad, -expected)
    assert rc.grad is None and rr.grad is None                            # detached: a constant


def test_dpo_loss_is_exact_and_finite_at_margins_of_plus_minus_100():
    for h, expected in ((1000.0, 0.0), (-1000.0, 100.0)):
        pc, pr, rc, rr = _four([h], [0.0], [0.0], [0.0])
        loss = losses.dpo_loss(pc, pr, rc, rr, beta=0.1)
        loss.backward()
        assert loss.item() == pytest.approx(expected, abs=1e-6)
        assert torch.isfinite(pc.grad).all()
    pc = torch.tensor([-1000.0], requires_grad=True)                     # float32 too
    losses.dpo_loss(pc, torch.zeros(1), torch.zeros(1), torch.zeros(1), beta=0.1).backward()
    assert pc.grad.item() == pytest.approx(-0.1)


def test_cdpo_hand_value_its_finite_optimum_and_bad_smoothing():
    pc, pr, rc, rr = _four([-1.0], [-3.0], [-2.0], [-2.0])               # h = 2
    eps, beta = 0.2, 0.5
    expected = -(0.8 * math.log(torch.sigmoid(torch.tensor(1.0)).item()) + 0.2 * math.log(torch.sigmoid(torch.tensor(-1.0)).item()))
    assert losses.dpo_loss(pc, pr, rc, rr, beta, label_smoothing=eps).item() == pytest.approx(expected)
    h_star = math.log((1 - eps) / eps) / beta                            # sigma(beta h*) = 1 - eps
    pc = torch.tensor([h_star], dtype=torch.float64, requires_grad=True)
    zero = torch.zeros(1, dtype=torch.float64)
    losses.dpo_loss(pc, zero, zero, zero, beta, label_smoothing=eps).backward()
    assert abs(pc.grad.item()) < 1e-12
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.dpo_loss(pc, zero, zero, zero, beta, label_smoothing=0.5)


def test_ipo_loss_hand_value_and_gradient_zero_at_half_over_beta():
    pc, pr, rc, rr = _four([-1.0], [-3.0], [-2.0], [-2.0])               # h = 2
    loss = losses.ipo_loss(pc, pr, rc, rr, beta=0.25)                      # target 1 / (2 beta) = 2
    loss.backward()
    assert loss.item() == 0.0 and pc.grad.item() == 0.0
    pc, pr, rc, rr = _four([-1.0], [-3.0], [-2.0], [-2.0])
    losses.ipo_loss(pc, pr, rc, rr, beta=0.1).backward()                   # (2 - 5)^2, gradient 2 (2 - 5)
    assert pc.grad.item() == pytest.approx(-6.0) and pr.grad.item() == pytest.approx(6.0)


def test_kto_loss_hand_values_and_clamped_reference_point():
    logps = torch.tensor([-1.0, -4.0], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([-2.0, -3.0], dtype=torch.float64)                  # r = +1 (thumb up), -1 (thumb down)
    desirable = torch.tensor([True, False])
    beta = 0.5
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    z0 = 0.4
    expected = ((1 - sig(beta * (1 - z0))) + 2.0 * (1 - sig(beta * (z0 + 1)))) / 2
    got = losses.kto_loss(logps, ref, desirable, z0, beta, undesirable_weight=2.0)
    assert got.item() == pytest.approx(expected)
    assert losses.kto_loss(logps, ref, desirable, -3.0, beta).item() == pytest.approx(
        losses.kto_loss(logps, ref, desirable, 0.0, beta).item())          # z0 clamped at 0
    got.backward()
    assert logps.grad[0] < 0 < logps.grad[1]                               # up raises pi(y), down lowers it
    with pytest.raises(TypeError, match="bool"):
        losses.kto_loss(logps, ref, desirable.long(), z0, beta)
