"""Returns and advantages: how much better than expected an action turned out."""
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
