"""A multi-armed bandit: the smallest RL problem, for notebook 01.

One state, K actions ("arms"), a random reward per pull. Pulling arm a pays a reward drawn from
N(means[a], std^2). The agent is a softmax policy pi(a) = softmax(logits)[a] with the logits as
torch parameters, trained by REINFORCE (`train_bandit`). `reuse_batch` takes many gradient steps on
one batch of samples through the importance ratio pi_new / pi_old, which is where PPO's clipping comes in.

Everything draws from an explicit torch.Generator, so a run is reproducible from its seed.
"""
from __future__ import annotations

from typing import Callable

import torch

from .advantages import sequence_baseline
from .losses import reinforce_loss


class GaussianBandit:
    """K arms; pulling arm a pays a reward ~ N(means[a], std^2).

    means: K expected rewards. generator: the torch.Generator the rewards are drawn from (a fresh
    one seeded 0 if None).
    """

    def __init__(self, means, std: float = 1.0, generator: torch.Generator | None = None):
        self.means = torch.as_tensor(means, dtype=torch.float32).flatten()
        if self.means.numel() < 2:
            raise ValueError("a bandit needs at least 2 arms")
        if std < 0:
            raise ValueError(f"std must be >= 0, got {std}")
        self.std = float(std)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    @property
    def n_arms(self) -> int:
        return self.means.numel()

    @property
    def best_arm(self) -> int:
        return int(self.means.argmax())

    @property
    def best_mean(self) -> float:
        return float(self.means.max())

    def pull(self, actions: torch.Tensor) -> torch.Tensor:
        """Rewards (N,) float for actions (N,) long: means[a] + std * noise."""
        actions = torch.as_tensor(actions, dtype=torch.long)
        if actions.numel() and (actions.min() < 0 or actions.max() >= self.n_arms):
            raise ValueError(f"actions must lie in 0..{self.n_arms - 1}")
        noise = torch.randn(actions.shape, generator=self.generator)
        return self.means[actions] + self.std * noise

    def expected_reward(self, probs: torch.Tensor) -> float:
        """The policy's true value V = sum_a pi(a) * means[a] (no sampling noise)."""
        return float((probs.detach() * self.means).sum())

    def __repr__(self) -> str:
        return f"GaussianBandit(means={[round(m, 3) for m in self.means.tolist()]}, std={self.std})"


class SoftmaxPolicy(torch.nn.Module):
    """pi(a) = softmax(logits)[a]: one learnable logit per arm, all zero (uniform) at the start."""

    def __init__(self, n_arms: int, logits: torch.Tensor | None = None):
        super().__init__()
        init = torch.zeros(n_arms) if logits is None else torch.as_tensor(logits, dtype=torch.float32).clone()
        self.logits = torch.nn.Parameter(init)

    def log_probs(self) -> torch.Tensor:
        """log pi(a) for every arm, (K,)."""
        return torch.log_softmax(self.logits, dim=-1)

    def probs(self) -> torch.Tensor:
        """pi(a) for every arm, (K,)."""
        return torch.softmax(self.logits, dim=-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n actions (n,) long drawn from pi (no gradient)."""
        with torch.no_grad():
            return torch.multinomial(self.probs(), n, replacement=True, generator=generator)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a_i) (N,) for actions (N,), differentiable w.r.t. the logits."""
        return self.log_probs()[actions]


def exact_policy_gradient(bandit: GaussianBandit, policy: SoftmaxPolicy) -> torch.Tensor:
    """The true gradient of V = sum_a pi(a) means[a] w.r.t. the logits: pi(k) * (means[k] - V), (K,)."""
    with torch.no_grad():
        p = policy.probs()
        return p * (bandit.means - (p * bandit.means).sum())


def gradient_estimates(bandit: GaussianBandit, policy: SoftmaxPolicy, *, batch_size: int, n_batches: int,
                       baseline: str = "none", loss_fn: Callable = reinforce_loss,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """The policy-gradient estimate -grad_logits loss_fn(...) of n_batches independent batches, (n_batches, K).

    The policy is not changed. The mean over batches estimates `exact_policy_gradient`; the spread
    around it is the noise that a baseline reduces.
    """
    grads = torch.empty(n_batches, bandit.n_arms)
    for i in range(n_batches):
        actions = policy.sample(batch_size, generator)
        rewards = bandit.pull(actions)
        loss = loss_fn(policy.log_prob(actions), rewards, sequence_baseline(rewards, baseline))
        (grad,) = torch.autograd.grad(loss, policy.logits)
        grads[i] = -grad
    return grads


def total_variance(samples: torch.Tensor) -> float:
    """E||g - E[g]||^2 of vector samples (M, K): the sum of the per-coordinate variances."""
    return float(samples.var(dim=0).sum())


def train_bandit(bandit: GaussianBandit, *, steps: int, batch_size: int, lr: float, baseline: str = "none",
                    loss_fn: Callable = reinforce_loss, generator: torch.Generator | None = None,
                    policy: SoftmaxPolicy | None = None) -> dict:
    """REINFORCE on a bandit with plain SGD: sample a batch, pull, step on loss_fn(log pi(a), r, b).

    loss_fn(logprobs (N,), returns (N,), baseline) -> scalar, e.g. `losses.reinforce_loss`.
    baseline: "none", "mean" or "leave_one_out" (see `advantages.sequence_baseline`). policy: trained in place (a uniform one if None).
    Returns {"mean_reward": batch mean reward per step, "expected_reward": true value V of the policy
    before each step, "prob_best": pi(best arm) before each step, "probs": final (K,) tensor, "policy"}.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be >= 1")
    policy = policy if policy is not None else SoftmaxPolicy(bandit.n_arms)
    optimizer = torch.optim.SGD(policy.parameters(), lr=lr)
    history: dict = {"mean_reward": [], "expected_reward": [], "prob_best": []}
    for _ in range(steps):
        probs = policy.probs().detach()
        history["expected_reward"].append(bandit.expected_reward(probs))
        history["prob_best"].append(float(probs[bandit.best_arm]))
        actions = policy.sample(batch_size, generator)
        rewards = bandit.pull(actions)
        loss = loss_fn(policy.log_prob(actions), rewards, sequence_baseline(rewards, baseline))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history["mean_reward"].append(float(rewards.mean()))
    history["probs"] = policy.probs().detach()
    history["policy"] = policy
    return history


def kl_categorical(p_logprobs: torch.Tensor, q_logprobs: torch.Tensor) -> float:
    """KL(p || q) = sum_a p(a) (log p(a) - log q(a)) of two categorical distributions given as log-probs (K,)."""
    p_logprobs, q_logprobs = p_logprobs.detach(), q_logprobs.detach()
    return float((p_logprobs.exp() * (p_logprobs - q_logprobs)).sum())


def reuse_batch(bandit: GaussianBandit, policy: SoftmaxPolicy, actions: torch.Tensor, rewards: torch.Tensor, *,
                inner_steps: int, lr: float, loss_fn: Callable, clip_eps: float = 0.2) -> dict:
    """Take `inner_steps` SGD steps on ONE batch of samples drawn from the policy as it was (pi_old).

    loss_fn(logprobs (N,), old_logprobs (N,), advantages (N,)) -> scalar: a surrogate that uses the
    ratio pi_new(a) / pi_old(a), e.g. `losses.ppo_clip_loss`. Advantages: reward minus the batch's
    leave-one-out mean. The policy is updated in place.
    Returns, before each step and after the last (inner_steps + 1 entries): "ratio_min"/"ratio_max" of
    pi_new(a_i) / pi_old(a_i) over the batch, "kl" = KL(pi_old || pi_new), "expected_reward" (true V),
    "clip_fraction" (share of samples whose ratio is outside [1 - clip_eps, 1 + clip_eps];
    clip_eps is only used for this metric), and "loss" (inner_steps entries).
    """
    old_all = policy.log_probs().detach()
    old_logprobs = old_all[actions]
    advantages = rewards - sequence_baseline(rewards, "leave_one_out")
    optimizer = torch.optim.SGD(policy.parameters(), lr=lr)
    history: dict = {"ratio_min": [], "ratio_max": [], "kl": [], "expected_reward": [], "clip_fraction": [], "loss": []}

    def record():
        with torch.no_grad():
            ratio = (policy.log_prob(actions) - old_logprobs).exp()
            history["ratio_min"].append(float(ratio.min()))
            history["ratio_max"].append(float(ratio.max()))
            history["clip_fraction"].append(float(((ratio < 1 - clip_eps) | (ratio > 1 + clip_eps)).float().mean()))
            history["kl"].append(kl_categorical(old_all, policy.log_probs()))
            history["expected_reward"].append(bandit.expected_reward(policy.probs()))

    for _ in range(inner_steps):
        record()
        loss = loss_fn(policy.log_prob(actions), old_logprobs, advantages)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history["loss"].append(loss.item())
    record()
    return history
