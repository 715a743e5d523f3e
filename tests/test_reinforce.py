"""reinforce.py: REINFORCE with a KL penalty on a language model, and its gradient variance."""
import math

import pytest
import torch

from minirlhf import reinforce
from minirlhf.losses import reinforce_loss
from minirlhf.reinforce import policy_gradient_variance, train_reinforce
from minirlhf.tasks import reviews
from helpers import early_and_late, letter_curve, tiny_models, tiny_reinforce_config


# ---------------------------------------------------------------- the REINFORCE loop
def test_train_reinforce_end_to_end_tiny():
    policy, reference, rm = tiny_models()
    _, history = train_reinforce(policy, reference, rm, reviews.prompts,
                                 tiny_reinforce_config(baseline="leave_one_out"), gold_fn=reviews.gold_reward)
    for key in ("proxy_reward", "gold", "kl", "loss", "grad_norm", "entropy", "t_generate", "t_update"):
        assert len(history[key]) == 3 and all(math.isfinite(x) for x in history[key]), key
    assert history["kl"][0] == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="baseline"):
        tiny_reinforce_config(baseline="median")


# ---------------------------------------------------------------- it learns
# A hand-written reward (the share of lowercase letters in the response, ~0.45 for the random policy):
# a correct REINFORCE raises it to ~0.95 in 15 steps; the same run with the loss's sign flipped drives it
# to ~0. Both moves are ~0.45, against a noise of ~0.02 on a mean of 3 batches of 320 tokens.
LEARN_REINFORCE = dict(iterations=15, batch_size=32, max_new_tokens=10, lr=1e-2, beta=0.01, no_eos_penalty=0.0)


def test_train_reinforce_raises_a_fixed_reward_and_a_flipped_loss_lowers_it(monkeypatch):
    first, last = early_and_late(letter_curve(train_reinforce, tiny_reinforce_config(**LEARN_REINFORCE)))
    assert last > first + 0.3 and last > 0.8, (first, last)
    monkeypatch.setattr(reinforce, "reinforce_loss", lambda *a, **k: -reinforce_loss(*a, **k))
    first, last = early_and_late(letter_curve(train_reinforce, tiny_reinforce_config(**LEARN_REINFORCE)))
    assert last < first - 0.25, (first, last)


# ---------------------------------------------------------------- gradient variance
def test_policy_gradient_variance_a_baseline_removes_the_offset_noise():
    policy, reference, rm = tiny_models()

    class Offset(torch.nn.Module):      # rewards far from 0: without a baseline, every sample pushes its own way
        def forward(self, tokens, mask):
            return rm(tokens, mask) + 10.0

    before = [p.clone() for p in policy.parameters()]
    out = policy_gradient_variance(policy, reference, Offset(), reviews.prompts, tiny_reinforce_config(), n_batches=4)
    assert set(out) == {"none", "mean", "leave_one_out"}
    assert all(p.grad is None for p in policy.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    assert out["mean"]["variance"] < 0.1 * out["none"]["variance"]
    # over the whole batch, leave-one-out = B / (B - 1) x the mean baseline: same direction, same SNR
    assert out["leave_one_out"]["snr"] == pytest.approx(out["mean"]["snr"], rel=1e-6)
    assert out["leave_one_out"]["variance"] == pytest.approx(out["mean"]["variance"] * (8 / 7) ** 2, rel=1e-5)


def test_jackknife_se_matches_the_theory_for_gaussian_samples():
    """For K normal samples the variance estimate has a standard error of about sigma^2 sqrt(2 / (K - 1))."""
    from minirlhf.reinforce import jackknife_se

    g = torch.Generator().manual_seed(0)
    samples = torch.randn(400, 1, generator=g, dtype=torch.float64) * 2.0        # variance 4
    assert jackknife_se(samples) == pytest.approx(4.0 * math.sqrt(2 / 399), rel=0.25)
    wide = torch.randn(40, 50, generator=g, dtype=torch.float64)               # 50 independent coordinates
    assert jackknife_se(wide) == pytest.approx(math.sqrt(50) * math.sqrt(2 / 39), rel=0.3)
    with pytest.raises(ValueError, match="at least 3"):
        jackknife_se(samples[:2])
