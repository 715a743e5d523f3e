"""Returns, baselines and advantages: how much better than expected an action turned out.

Shapes: T time steps (tokens); B batch of sequences. A `mask` (B, T), True on real steps, marks a
response's tokens (its EOS included); it is True on a prefix of each row and False on the padding
after EOS, which must contribute nothing.

Baselines for whole-sequence returns have one vocabulary everywhere (bandit, REINFORCE, and the group
methods of Part IV): "none", "mean" (the group's mean, the sample itself included) and "leave_one_out"
(the mean of the OTHER samples of the group). A group is the last dimension: (B,) is one group of B
samples, (P, G) is P prompts with G samples each.
"""
from __future__ import annotations

import torch


def discounted_returns(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = r_t + gamma * G_{t+1}, with G after the last step = 0. Shapes (T,) -> (T,) or (B, T) -> (B, T)."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(rewards.size(-1))):
        running = rewards[..., t] + gamma * running
        returns[..., t] = running
    return returns


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised Advantage Estimation (Schulman et al. 2016) over response tokens.

        delta_t = r_t + gamma * V_{t+1} - V_t                 (V_{t+1} = 0 after the last real token)
        A_t     = delta_t + gamma * lam * A_{t+1}             (A after the last real token = 0)
        R_t     = A_t + V_t                                   (the value head's regression target)

    rewards, values (B, T): per-token reward and the value head's V(s_t) for each response token;
    mask (B, T) bool, True on real tokens (a prefix of each row). Padding is ignored whatever its
    rewards and values hold: the episode ends at the last real token, so nothing is bootstrapped
    from the padding's values. Returns (advantages, returns), both (B, T) and 0 on padding.
    lam = 1 gives A_t = sum of future rewards - V_t (Monte Carlo, high variance); lam = 0 gives the
    one-step TD error (low variance, biased by the value head's errors). The RLHF default is
    gamma = 1 (the score arrives at the end and must reach every token), lam = 0.95.
    """
    if not rewards.shape == values.shape == mask.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)}, values {tuple(values.shape)} and mask "
                         f"{tuple(mask.shape)} must all have shape (B, T)")
    m = mask.to(rewards.dtype)
    rewards, values = rewards * m, values * m
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.size(1))):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * m[:, t]
        advantages[:, t] = next_advantage
        next_value = values[:, t]
    return advantages, (advantages + values) * m


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over the positions where mask is True (0 if there are none)."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of x over the positions where mask is True: sum (x - mean)^2 / (n - 1)."""
    m = mask.to(x.dtype)
    n = m.sum()
    centred = (x - masked_mean(x, mask)) * m
    return (centred ** 2).sum() / (n - 1).clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise x over the real positions of a batch to std 1 (and mean 0 if shift_mean).

        x_w = (x - mean) / sqrt(var + eps)                    (shift_mean=True: advantages)
        x_w = (x - mean) / sqrt(var + eps) + mean             (shift_mean=False: rewards)

    x (B, T), mask (B, T) bool; mean and unbiased var over mask only; padding comes back as 0.
    PPO whitens advantages per batch so the policy step size does not depend on the reward scale.
    Rewards are whitened without shifting the mean: their sign carries meaning (e.g. "stop early").
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


# ---------------------------------------------------------------- baselines for sequence returns
BASELINES = ("none", "mean", "leave_one_out")


def sequence_baseline(returns: torch.Tensor, kind: str) -> torch.Tensor:
    """b, the shape of returns (..., G): a baseline for each return from the other returns of its group.

        none:          b_i = 0
        mean:          b_i = 1/G sum_j G_j                  (includes G_i itself)
        leave_one_out: b_i = 1/(G - 1) sum_{j != i} G_j     (RLOO: Kool et al. 2019; Ahmadian et al. 2024)

    The group is the last dimension. "mean" depends on G_i, so the gradient it gives is scaled by
    (G - 1) / G: G_i - mean = (G - 1) / G * (G_i - leave_one_out), exactly. "leave_one_out" is
    independent of sample i, hence unbiased. Both need G >= 2 to be of any use; leave-one-out raises below.
    """
    if kind == "none":
        return torch.zeros_like(returns)
    if kind == "mean":
        return returns.mean(-1, keepdim=True).expand_as(returns)
    if kind == "leave_one_out":
        n = returns.size(-1)
        if n < 2:
            raise ValueError("a leave-one-out baseline needs at least 2 samples per group")
        return (returns.sum(-1, keepdim=True) - returns) / (n - 1)
    raise ValueError(f"baseline must be one of {BASELINES}, got {kind!r}")


# ---------------------------------------------------------------- group advantages (GRPO, Dr. GRPO, RLOO)
SCALE_REWARDS = ("group", "batch", "none")


def group_advantages(rewards: torch.Tensor, baseline: str = "mean", scale_rewards: str = "group",
                     eps: float = 1e-4) -> torch.Tensor:
    """A_i for G sampled responses to each of P prompts, from their rewards alone (no value head).

        A_{p,i} = (r_{p,i} - b_{p,i}) / (s + eps)        b = sequence_baseline(r, baseline)

        scale_rewards "group": s = std_p   (GRPO, Shao et al. 2024: the population std of prompt p's G rewards)
                      "batch": s = std of all P*G rewards (TRL's "batch": one scale, robust to tiny groups)
                      "none":  s = 1, eps = 0             (Dr. GRPO, Liu et al. 2025; RLOO)

    rewards (P, G) -> advantages (P, G). GRPO = ("mean", "group"); Dr. GRPO = ("mean", "none");
    RLOO = ("leave_one_out", "none"), which is Dr. GRPO times G / (G - 1) exactly. A group whose
    rewards are all equal gets A = 0 whatever the scaling (eps keeps 0 / 0 away): it teaches nothing.
    Rewards [1, 1, 1, 0]: mean 0.75, std 0.433, so the three successes get +0.577 and the failure -1.73
    (TRL divides by the unbiased std, 0.5, giving -1.5: the same direction, a smaller step).
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (prompts, generations), got shape {tuple(rewards.shape)}; "
                         "reshape a flat batch with rewards.view(-1, num_generations)")
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {SCALE_REWARDS}, got {scale_rewards!r}")
    centred = rewards - sequence_baseline(rewards, baseline)
    if scale_rewards == "none":
        return centred
    std = rewards.std(-1, correction=0, keepdim=True) if scale_rewards == "group" else rewards.std(correction=0)
    return centred / (std + eps)


def zero_std_groups(rewards: torch.Tensor) -> torch.Tensor:
    """(P, G) rewards -> (P,) bool: the groups whose G rewards are all equal (zero advantage, zero gradient).
    Their share is TRL's `frac_reward_zero_std`; DAPO's dynamic sampling drops them."""
    return (rewards == rewards[:, :1]).all(-1)
