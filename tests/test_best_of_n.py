"""Best-of-N: reranking, the unbiased pool estimate, the three KLs, and the notebook's exercise checks."""
import itertools
import math

import pytest
import torch

from minirlhf.best_of_n import (BestOfN, best_of_n, best_of_n_probs, best_of_n_weights, expected_best_of_n,
                                kl_best_of_n_analytic, kl_best_of_n_exact, kl_best_of_n_monte_carlo, sample_pool)
from minirlhf.model import GPT, GPTConfig
from minirlhf.reward import RewardModel, score
from minirlhf.tasks import reviews
from minirlhf.tokenizer import TOKENIZER
from minirlhf.utils import seed_everything

TINY = dict(vocab_size=TOKENIZER.vocab_size, context_length=64, d_model=32, n_layers=1, n_heads=2)


def tiny_models(seed=0):
    seed_everything(seed)
    policy = GPT(GPTConfig(**TINY)).eval()
    return policy, RewardModel.from_policy(policy).eval()


# ---------------------------------------------------------------- brute force
def brute_force_best_of_n(proxy, values, n):
    """Average over all n-subsets of the value of the subset's best-by-proxy sample (ties: mean over tied maxima)."""
    total, count = 0.0, 0
    for subset in itertools.combinations(range(len(proxy)), n):
        top = max(proxy[i] for i in subset)
        winners = [values[i] for i in subset if proxy[i] == top]
        total += sum(winners) / len(winners)
        count += 1
    return total / count


def brute_force_best_of_n_probs(p, n):
    """P(max of n iid draws from outcomes 0..K-1 with probabilities p = k), by enumerating all K^n tuples."""
    q = [0.0] * len(p)
    for draw in itertools.product(range(len(p)), repeat=n):
        q[max(draw)] += math.prod(p[i] for i in draw)
    return torch.tensor(q, dtype=torch.float64)


# ---------------------------------------------------------------- the unbiased pool estimate
@pytest.mark.parametrize("m", [1, 4, 9])
def test_weights_sum_to_one_and_vanish_below_n(m):
    for n in range(1, m + 1):
        w = best_of_n_weights(m, n)
        assert w.shape == (m,) and w.dtype == torch.float64
        assert w.sum().item() == pytest.approx(1.0, abs=1e-12)
        assert (w[:n - 1] == 0).all() and (w[n - 1:] > 0).all()
    assert best_of_n_weights(m, m)[-1].item() == pytest.approx(1.0)
    assert torch.allclose(best_of_n_weights(m, 1), torch.full((m,), 1 / m, dtype=torch.float64))


def test_weights_are_finite_for_huge_binomials():
    w = best_of_n_weights(2000, 1000)
    assert torch.isfinite(w).all() and w.sum().item() == pytest.approx(1.0, abs=1e-9)
    assert w[-1].item() == pytest.approx(1000 / 2000)          # C(m-1, n-1) / C(m, n) = n / m


def test_weights_reject_n_outside_the_pool():
    with pytest.raises(ValueError, match="n <= m"):
        best_of_n_weights(4, 5)
    with pytest.raises(ValueError):
        best_of_n_weights(4, 0)


def test_expected_best_of_n_matches_enumeration_of_all_subsets():
    g = torch.Generator().manual_seed(0)
    proxy, values = torch.randn(9, generator=g), torch.randn(9, generator=g)
    for n in range(1, 10):
        expected = brute_force_best_of_n(proxy.tolist(), values.tolist(), n)
        assert expected_best_of_n(proxy, values, n).item() == pytest.approx(expected, abs=1e-12)


def test_expected_best_of_n_breaks_proxy_ties_uniformly():
    proxy = torch.tensor([0.0, 1.0, 1.0, 2.0, 2.0, 2.0, -1.0, 0.5])
    values = torch.tensor([3.0, -2.0, 5.0, 1.0, 0.0, 8.0, 4.0, -1.0])
    for n in range(1, 9):
        expected = brute_force_best_of_n(proxy.tolist(), values.tolist(), n)
        assert expected_best_of_n(proxy, values, n).item() == pytest.approx(expected, abs=1e-12)


def test_expected_best_of_n_extremes_and_batches():
    g = torch.Generator().manual_seed(1)
    proxy, values = torch.randn(3, 12, generator=g), torch.randn(3, 12, generator=g)
    got = expected_best_of_n(proxy, values, 4)
    assert got.shape == (3,)
    for row in range(3):
        assert got[row].item() == pytest.approx(expected_best_of_n(proxy[row], values[row], 4).item())
    assert torch.allclose(expected_best_of_n(proxy, values, 1), values.double().mean(1))          # n = 1: the mean
    assert torch.allclose(expected_best_of_n(proxy, values, 12), values.double().gather(1, proxy.argmax(1, keepdim=True))[:, 0])
    # the proxy's own best-of-n never decreases with n
    curve = [expected_best_of_n(proxy[0], proxy[0], n).item() for n in range(1, 13)]
    assert all(b >= a - 1e-12 for a, b in zip(curve, curve[1:]))


def test_expected_best_of_n_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        expected_best_of_n(torch.zeros(4), torch.zeros(5), 2)


# ---------------------------------------------------------------- the KL
def test_analytic_kl_values():
    assert kl_best_of_n_analytic(1) == 0.0
    assert kl_best_of_n_analytic(2) == pytest.approx(math.log(2) - 0.5)
    assert kl_best_of_n_analytic(64) == pytest.approx(3.1745, abs=1e-4)
    assert torch.allclose(kl_best_of_n_analytic(torch.tensor([1, 2, 64])),
                          torch.tensor([0.0, math.log(2) - 0.5, math.log(64) - 63 / 64], dtype=torch.float64))
    with pytest.raises(ValueError):
        kl_best_of_n_analytic(0)


def test_best_of_n_probs_match_enumeration():
    p = [0.1, 0.4, 0.2, 0.3]
    for n in (1, 2, 3, 4):
        assert torch.allclose(best_of_n_probs(torch.tensor(p), n), brute_force_best_of_n_probs(p, n), atol=1e-12)


def test_best_of_n_probs_are_accurate_when_f_is_close_to_one():
    p = torch.tensor([1 - 1e-12, 1e-12], dtype=torch.float64)
    q = best_of_n_probs(p, 1000)
    assert q[1].item() == pytest.approx(1e-9, rel=1e-6)         # 1 - (1 - 1e-12)^1000
    assert q.sum().item() == pytest.approx(1.0)


def test_exact_kl_tends_to_the_formula_with_many_distinct_samples():
    pool = torch.randn(20_000, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for n in (2, 4, 16, 64):
        assert kl_best_of_n_exact(pool, n).item() == pytest.approx(kl_best_of_n_analytic(n), abs=2e-3)
    assert kl_best_of_n_exact(pool, 1).item() == pytest.approx(0.0, abs=1e-12)


def test_exact_kl_only_depends_on_the_ranks_when_values_are_distinct():
    pool = torch.tensor([3.0, -1.0, 0.5, 7.0])
    assert kl_best_of_n_exact(pool, 3).item() == pytest.approx(kl_best_of_n_exact(pool.exp() * 10, 3).item())


def test_exact_kl_is_smaller_with_ties_and_small_pools_and_bounded_by_log_m():
    g = torch.Generator().manual_seed(3)
    for m in (2, 5, 16, 64):
        tied = torch.randint(0, max(2, m // 4), (m,), generator=g).double()
        distinct = tied + 1e-6 * torch.randn(m, generator=g, dtype=torch.float64)   # the same pool, ties broken
        assert len(torch.unique(distinct)) == m
        for n in (1, 2, 8, 64, 1000):
            exact, broken = kl_best_of_n_exact(tied, n).item(), kl_best_of_n_exact(distinct, n).item()
            assert exact <= broken + 1e-12                       # merging outcomes never increases a KL
            assert broken <= kl_best_of_n_analytic(n) + 1e-12    # the formula is an upper bound
            assert broken <= math.log(m) + 1e-12                 # and so is log M
    # a pool of one repeated response: best-of-n IS the policy
    assert kl_best_of_n_exact(torch.ones(10), 50).item() == pytest.approx(0.0, abs=1e-12)


def test_exact_kl_matches_a_direct_computation():
    pool = torch.tensor([1.0, 1.0, 1.0, 2.0, 3.0, 3.0])
    p = [3 / 6, 1 / 6, 2 / 6]
    q = brute_force_best_of_n_probs(p, 3)
    direct = sum(qi * math.log(qi / pi) for qi, pi in zip(q.tolist(), p))
    assert kl_best_of_n_exact(pool, 3).item() == pytest.approx(direct, abs=1e-12)


def test_monte_carlo_kl_for_a_continuous_reward_recovers_the_formula():
    g = torch.Generator().manual_seed(4)
    for n in (2, 8, 32):
        selected = torch.randn(4000, n, generator=g).max(1).values      # 4000 draws of best-of-n
        reference = torch.randn(20_000, generator=g)                      # separate policy samples for F
        est = kl_best_of_n_monte_carlo(selected, reference, n).item()
        assert est == pytest.approx(kl_best_of_n_analytic(n), abs=0.05)
    assert kl_best_of_n_monte_carlo(selected, reference, 1).item() == 0.0


def test_monte_carlo_kl_with_logprobs_handles_ties():
    """A discrete policy over 5 responses: the tie-aware estimate finds the exact KL, the continuous one the formula."""
    g = torch.Generator().manual_seed(5)
    probs = torch.tensor([0.05, 0.3, 0.1, 0.4, 0.15], dtype=torch.float64)   # outcome k has reward k
    n = 8
    exact = (lambda q: (q * (q / probs).log()).sum().item())(best_of_n_probs(probs, n))
    selected = torch.multinomial(probs, 6000 * n, replacement=True, generator=g).view(6000, n).max(1).values
    reference = torch.multinomial(probs, 4000, replacement=True, generator=g)
    est = kl_best_of_n_monte_carlo(selected.double(), reference.double(), n, probs[selected].log()).item()
    assert est == pytest.approx(exact, abs=0.03)
    assert exact < kl_best_of_n_analytic(n) - 0.1            # ties make the formula too high
    # leading dimensions are prompts
    two = kl_best_of_n_monte_carlo(selected.view(2, 3000).double(), reference.view(2, 2000).double(), n,
                                   probs[selected].log().view(2, 3000))
    assert two.shape == (2,)


# ---------------------------------------------------------------- sampling and reranking with tiny models
def test_sample_pool_shapes_and_reproducibility():
    policy, _ = tiny_models()
    prompts = reviews.prompts(3, seed=0)
    responses, finished = sample_pool(policy, prompts, 4, seed=7, max_new_tokens=12)
    assert len(responses) == 3 and all(len(r) == 4 for r in responses)
    assert finished.shape == (3, 4) and finished.dtype == torch.bool
    assert sample_pool(policy, prompts, 4, seed=7, max_new_tokens=12)[0] == responses
    with pytest.raises(ValueError, match="n must be"):
        sample_pool(policy, prompts, 0)


def test_best_of_n_keeps_the_reward_models_argmax():
    policy, rm = tiny_models()
    prompts = reviews.prompts(3, seed=1)
    result = best_of_n(policy, rm, prompts, 5, seed=3, max_new_tokens=12)
    assert isinstance(result, BestOfN)
    assert result.rewards.shape == (3, 5) and result.best.shape == (3,)
    assert torch.equal(result.best_rewards, result.rewards.max(1).values)
    flat = [r for row in result.responses for r in row]
    assert torch.allclose(result.rewards.flatten(), score(rm, [p for p in prompts for _ in range(5)], flat), atol=1e-5)
    for row, best in zip(result.responses, result.best_responses):
        assert best in row
    # the same seed gives the same pool as sample_pool
    assert result.responses == sample_pool(policy, prompts, 5, seed=3, max_new_tokens=12)[0]
    # unfinished samples can be given a fixed (bad) reward
    penalised = best_of_n(policy, rm, prompts, 5, seed=3, max_new_tokens=12, unfinished_reward=-99.0)
    assert torch.all(penalised.rewards[~penalised.finished] == -99.0)
