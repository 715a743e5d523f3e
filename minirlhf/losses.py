"""Every training objective of the course as a pure function of tensors.

Shapes: B = batch, T = sequence length, V = vocabulary size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .tokenizer import PAD_ID


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor, loss_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Language-modelling loss: mean negative log-likelihood of each next token.

        L = -(1/|M|) * sum_{(b,t) in M} log softmax(logits[b, t])[tokens[b, t+1]]

    logits (B, T, V): position t predicts token t+1, so the last position predicts nothing.
    tokens (B, T) long. loss_mask (B, T) bool, optional: which *target* tokens count (M is the set
    of (b, t) with loss_mask[b, t+1]); None counts every target.
    """
    if logits.shape[:2] != tokens.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and tokens {tuple(tokens.shape)} must agree on (B, T)")
    pred, target = logits[:, :-1], tokens[:, 1:]
    nll = F.cross_entropy(pred.reshape(-1, pred.size(-1)), target.reshape(-1), reduction="none")
    if loss_mask is None:
        return nll.mean()
    mask = loss_mask[:, 1:].reshape(-1).to(nll.dtype)
    return (nll * mask).sum() / mask.sum().clamp(min=1)


def sft_loss_mask(tokens: torch.Tensor, prompt_lengths: torch.Tensor, pad_id: int = PAD_ID) -> torch.Tensor:
    """Which tokens SFT learns to predict: the response (and its EOS), never the prompt or padding.

        mask[b, t] = (t >= prompt_lengths[b]) and tokens[b, t] != PAD

    tokens (B, T) right-padded rows "BOS prompt response EOS PAD..."; prompt_lengths (B,) counts BOS
    and prompt. Returns (B, T) bool, used as `loss_mask` of `next_token_loss`.
    """
    positions = torch.arange(tokens.size(1), device=tokens.device)
    return (positions[None, :] >= prompt_lengths[:, None]) & (tokens != pad_id)


def reinforce_loss(logprobs: torch.Tensor, returns: torch.Tensor, baseline: torch.Tensor | float = 0.0) -> torch.Tensor:
    """REINFORCE (score-function) loss whose gradient is the policy-gradient estimate.

        L = -mean_i [ log pi(a_i) * (G_i - b) ]        grad L = -E[ grad log pi(a) * (G - b) ]

    logprobs (N,) with gradient; returns (N,) and baseline (scalar or (N,)) are treated as constants
    (detached): the baseline lowers the variance without biasing the gradient.
    """
    advantage = (returns - baseline).detach()
    return -(logprobs * advantage).mean()


def ppo_clip_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                  clip_eps: float = 0.2) -> torch.Tensor:
    """PPO's clipped surrogate loss (Schulman et al. 2017), to minimise.

        r_i = pi_new(a_i) / pi_old(a_i) = exp(logprobs_i - old_logprobs_i)
        L   = -mean_i [ min( r_i * A_i, clip(r_i, 1 - eps, 1 + eps) * A_i ) ]

    logprobs (N,) or (B, T): log pi_new of the sampled actions, with gradient. old_logprobs and
    advantages, same shape: from the policy that sampled the batch, treated as constants (detached).
    The min makes the objective pessimistic: once r_i has moved past 1 + eps (A_i > 0) or below
    1 - eps (A_i < 0), that sample's gradient is zero, so reusing a batch cannot push the policy far
    from pi_old. Returns the scalar loss only; at r = 1 its gradient equals REINFORCE's.
    """
    ratio = torch.exp(logprobs - old_logprobs.detach())
    advantages = advantages.detach()
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    return -torch.min(unclipped, clipped).mean()
