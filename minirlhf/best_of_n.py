"""Best-of-N (rejection sampling, reranking): sample N responses, keep the one the reward model likes best.

No training at all: the policy "best-of-N of pi" exists only at inference time. It is the simplest way to
optimise a reward model and the baseline every RL method is compared with, because what it costs in KL
from pi is known in closed form (for a continuous reward without ties):

    KL(pi_N || pi) = log N - (N - 1) / N

Why: if F is the CDF of the reward r(y) under pi, the best of N draws has CDF F^N, so its density
relative to pi is  pi_N(y) / pi(y) = N F(r(y))^(N-1), and with u = F(r(y)) ~ U^(1/N),
E[log N + (N - 1) log u] = log N - (N - 1) / N.

With ties (identical responses: a small policy repeats itself) outcome y has probability
pi_N(y) = F(r)^N - F(r-)^N, and the formula over-states the KL (it is an upper bound, Beirami et al. 2024).

The functions here are small and pure where they can be:
- `sample_pool`, `best_of_n`: N samples per prompt with the KV cache, scored, the argmax kept;
- `best_of_n_weights`, `expected_best_of_n`: the unbiased estimate of E[value of the best of n] from a
  pool of M >= n samples of one prompt;
- `kl_best_of_n_analytic`, `best_of_n_probs`, `kl_best_of_n_exact`, `kl_best_of_n_monte_carlo`: three
  ways to get the KL;
- log pi(y | x) of whole responses given as text, which the Monte-Carlo estimate needs, is `logprobs.text_logprobs`.

Shapes: P prompts, N samples per prompt, M samples in a pool, K distinct outcomes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .reward import score
from .sampling import sample


# ---------------------------------------------------------------- sampling and reranking
def sample_pool(policy, prompts: list[str], n: int, *, seed: int = 0, batch_size: int = 256,
                **generate_kwargs) -> tuple[list[list[str]], torch.Tensor]:
    """n samples for each of P prompts (KV-cached generation, reproducible from `seed`).

    Returns (responses: P lists of n strings, finished: (P, n) bool, True where the sample emitted EOS).
    The P * n rows are generated prompt-major (all samples of prompt 0 first), batch_size rows at a time.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rows = sample(policy, [p for p in prompts for _ in range(n)], seed=seed, batch_size=batch_size,
                  **generate_kwargs)
    responses = [[s.response for s in rows[i * n:(i + 1) * n]] for i in range(len(prompts))]
    finished = torch.tensor([s.finished for s in rows]).view(len(prompts), n)
    return responses, finished


@dataclass
class BestOfN:
    """Every candidate of a best-of-n run and the chosen one.

    responses: P lists of n strings; rewards: (P, n) reward-model scores; finished: (P, n) bool;
    best: (P,) long, index of the chosen candidate (argmax of rewards, the first one on ties).
    """
    prompts: list[str]
    responses: list[list[str]]
    rewards: torch.Tensor
    finished: torch.Tensor
    best: torch.Tensor

    @property
    def best_responses(self) -> list[str]:
        return [r[i] for r, i in zip(self.responses, self.best.tolist())]

    @property
    def best_rewards(self) -> torch.Tensor:
        """(P,) the reward of each chosen response: the maximum of its row."""
        return self.rewards.gather(1, self.best[:, None]).squeeze(1)


def best_of_n(policy, rm, prompts: list[str], n: int, seed: int = 0, *, unfinished_reward: float | None = None,
              batch_size: int = 256, **generate_kwargs) -> BestOfN:
    """Sample n responses per prompt from `policy`, score them with `rm`, keep the argmax.

        y* = argmax_{i = 1..n} r(x, y_i),   y_i ~ pi(. | x) independently

    unfinished_reward: if given, the score of samples that never emitted EOS (the RM would read them with
    an EOS they never wrote); None keeps the RM's score. The SFT policy finishes essentially always.
    """
    responses, finished = sample_pool(policy, prompts, n, seed=seed, batch_size=batch_size, **generate_kwargs)
    flat_prompts = [p for p in prompts for _ in range(n)]
    rewards = score(rm, flat_prompts, [r for row in responses for r in row]).view(len(prompts), n)
    if unfinished_reward is not None:
        rewards = rewards.masked_fill(~finished, unfinished_reward)
    return BestOfN(list(prompts), responses, rewards, finished, rewards.argmax(1))


# ---------------------------------------------------------------- the value of best-of-n from a pool
def best_of_n_weights(m: int, n: int) -> torch.Tensor:
    """(m,) float64: w_i = C(i - 1, n - 1) / C(m, n) for i = 1..m (the i-th SMALLEST of m samples).

    w_i is the probability that the i-th smallest of m distinct values is the largest of a uniformly
    random n-subset: the subset must contain it and n - 1 of the i - 1 values below it. So
    sum_i w_i v_(i) is an unbiased estimate of E[value of the best of n draws] (see expected_best_of_n).
    The weights are 0 for i < n and sum to 1. Computed in log space (lgamma): no overflow for large m.
    """
    if not 1 <= n <= m:
        raise ValueError(f"need 1 <= n <= m, got n={n}, m={m}: a pool of m samples holds best-of-n for n <= m only")
    i = torch.arange(1, m + 1, dtype=torch.float64)
    lg = torch.lgamma
    log_c = lg(i) - math.lgamma(n) - lg((i - n + 1).clamp(min=1))                    # log C(i-1, n-1)
    log_total = math.lgamma(m + 1) - math.lgamma(n + 1) - math.lgamma(m - n + 1)          # log C(m, n)
    return torch.where(i >= n, torch.exp(log_c - log_total), torch.zeros_like(i))


def _tie_means(keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """values (M,) replaced by the mean value over the samples with the same key."""
    _, inverse = torch.unique(keys, return_inverse=True)
    sums = torch.zeros(int(inverse.max()) + 1, dtype=torch.float64).index_add_(0, inverse, values)
    counts = torch.bincount(inverse).double()
    return (sums / counts)[inverse]


def expected_best_of_n(proxy: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """Unbiased estimate, from a pool of M >= n samples of ONE prompt, of E[value of the best-by-proxy of n].

        E_hat = sum_{i=1..M} C(i - 1, n - 1) / C(M, n) * v_(i)

    where v_(i) is the value of the sample with the i-th smallest proxy reward. It is the exact average,
    over all C(M, n) subsets of n samples drawn without replacement from the pool, of the value of each
    subset's best-by-proxy sample, so it uses every sample instead of one draw of n. Ties in proxy are
    broken uniformly at random (tied samples share their mean value).
    proxy, values: (M,) or (P, M) (P prompts, each its own pool) -> () or (P,) float64.
    values = proxy gives the expected proxy reward of best-of-n, values = gold the expected gold reward.
    """
    if proxy.shape != values.shape:
        raise ValueError(f"proxy {tuple(proxy.shape)} and values {tuple(values.shape)} must have the same shape")
    if proxy.dim() == 2:
        return torch.stack([expected_best_of_n(p, v, n) for p, v in zip(proxy, values)])
    if proxy.dim() != 1:
        raise ValueError(f"proxy must be (M,) or (P, M), got shape {tuple(proxy.shape)}")
    values = _tie_means(proxy, values.double())
    order = torch.argsort(proxy, stable=True)
    return (best_of_n_weights(len(proxy), n) * values[order]).sum()


# ---------------------------------------------------------------- the KL of best-of-n
def kl_best_of_n_analytic(n) -> float | torch.Tensor:
    """KL(pi_N || pi) = log N - (N - 1) / N, exact for a continuous reward (no ties), an upper bound otherwise.

    n: int or tensor of ints. 0 at N = 1; grows like log N (N = 64: 3.17 nats).
    """
    if isinstance(n, torch.Tensor):
        n = n.double()
        return torch.log(n) - (n - 1) / n
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def best_of_n_probs(p: torch.Tensor, n: int) -> torch.Tensor:
    """(K,) probabilities of K distinct outcomes SORTED by increasing reward -> (K,) their probabilities
    under best-of-n:

        q_k = F_k^n - F_{k-1}^n,   F_k = p_1 + ... + p_k,   F_0 = 0

    (the best of n draws is at most outcome k with probability F_k^n). With F near 1 the difference of two
    close powers loses precision, so it is computed as F_k^n (1 - (1 - p_k / F_k)^n) with expm1/log1p.
    """
    p = p.double()
    cdf = torch.cumsum(p, 0).clamp(max=1.0)
    ratio = (p / cdf).clamp(max=1.0)                       # p_k / F_k, in (0, 1]
    return cdf.pow(n) * -torch.expm1(n * torch.log1p(-ratio).clamp(min=-1e300))


def kl_best_of_n_exact(proxy_pool: torch.Tensor, n: int) -> torch.Tensor:
    """Exact KL(best-of-n || pi) when pi is the empirical distribution of a pool of M rewards (M,).

    Samples with equal reward (identical responses) are ONE outcome, with probability count / M:

        p_k = c_k / M,   q_k = F(v_k)^n - F(v_k-)^n,   KL = sum_k q_k log(q_k / p_k)

    It equals log n - (n - 1) / n only in the limit of M -> inf distinct values; with ties or a small pool it is
    smaller, and it never exceeds log M (q_k / p_k <= 1 / p_k <= M) nor log n (q_k / p_k <= n).
    Returns a float64 scalar tensor.
    """
    if proxy_pool.dim() != 1 or len(proxy_pool) == 0:
        raise ValueError(f"proxy_pool must be a non-empty (M,) tensor, got shape {tuple(proxy_pool.shape)}")
    _, counts = torch.unique(proxy_pool, return_counts=True)     # sorted by value, ties merged
    p = counts.double() / len(proxy_pool)
    q = best_of_n_probs(p, n)
    return torch.where(q > 0, q * (torch.log(q) - torch.log(p)), 0.0).sum()    # q log q -> 0 as q -> 0


def kl_best_of_n_monte_carlo(selected_rewards: torch.Tensor, reference_rewards: torch.Tensor, n: int,
                             selected_logprobs: torch.Tensor | None = None) -> torch.Tensor:
    """Monte-Carlo estimate of KL(pi_N || pi) = E_{y ~ pi_N}[ log pi_N(y) / pi(y) ], without the formula.

    selected_rewards (..., S): rewards of S responses drawn from best-of-n (each the best of n fresh samples);
    reference_rewards (..., R): rewards of R SEPARATE samples of pi (same prompt), used to estimate the CDF
    F(r) = P_pi(r(Y) <= r) by F_hat(r) = (#{reference <= r} + 1) / (R + 1) (the rank of r among the
    references and itself; never 0). Leading dimensions (e.g. P prompts) are kept: returns (...) float64.

    - selected_logprobs None: assumes a continuous reward (no two responses tie), so that
      pi_N(y) / pi(y) = n F(r)^(n-1) and KL ~ log n + (n - 1) mean log F_hat(r).
    - selected_logprobs (..., S) = log pi(y) of each selected response (`logprobs.text_logprobs`): no continuity
      assumption. Identical responses are one outcome of probability pi(y), so
      pi_N(y) = F(r)^n - (F(r) - pi(y))^n, with F(r) >= pi(y); it assumes only identical responses tie.
    Both are consistent (S, R -> inf); with small R the estimate of F is coarse.
    """
    sel, ref = selected_rewards.double(), reference_rewards.double()
    R = ref.size(-1)
    below = torch.searchsorted(ref.sort(-1).values.contiguous(), sel.contiguous(), right=True)   # #{ref <= r}
    cdf = (below + 1).double() / (R + 1)                                                        # (..., S)
    if n == 1:
        return torch.zeros(sel.shape[:-1], dtype=torch.float64)
    if selected_logprobs is None:
        log_ratio = math.log(n) + (n - 1) * torch.log(cdf)
    else:
        logp = selected_logprobs.double()
        log_f = torch.maximum(torch.log(cdf), logp)                     # F >= pi(y)
        # log[(F^n - (F - pi)^n) / pi] = n log F + log(1 - (1 - pi/F)^n) - log pi, stable for tiny pi
        shrink = torch.log1p(-torch.exp(logp - log_f).clamp(max=1.0)).clamp(min=-1e300)
        log_ratio = n * log_f + torch.log(-torch.expm1(n * shrink)) - logp
    return log_ratio.mean(-1)
