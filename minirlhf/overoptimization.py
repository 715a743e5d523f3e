"""Reward-model over-optimization: how the gold reward moves as a policy drifts from its start.

Gao, Schulman and Hilton (2022), "Scaling laws for reward model overoptimization", measure the gold
reward gain R (over the initial policy) against the distance d = sqrt(KL(pi || pi_init)) and find

    best-of-N:  R(d) = d (alpha - beta d)          peaks at d* = alpha / (2 beta)
    RL:         R(d) = d (alpha - beta log d)      peaks at d* = exp(alpha / beta - 1)

alpha is how fast the gold reward rises at first, beta how fast the proxy's errors eat it up; a
reward model trained on more data has a smaller beta, so its peak comes later. Both forms are linear
in (alpha, beta), so a least-squares fit needs no optimiser: gain ~ alpha * d - beta * f(d) with
f(d) = d^2 (best-of-N) or d log d (RL).

Shapes: K points of one curve, d (K,) and gain (K,).
"""
from __future__ import annotations

import math

import torch

FORMS = ("best_of_n", "rl")


def _form(form: str) -> str:
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    return form


def gao_penalty(d: torch.Tensor, form: str) -> torch.Tensor:
    """The term beta multiplies: d^2 for best-of-N, d log d for RL (0 at d = 0, its limit)."""
    d = torch.as_tensor(d, dtype=torch.float64)
    if _form(form) == "best_of_n":
        return d * d
    return torch.where(d > 0, d * torch.log(d.clamp(min=1e-300)), 0.0)


def gao_curve(d: torch.Tensor, alpha: float, beta: float, form: str) -> torch.Tensor:
    """R(d) = alpha d - beta d^2 (best_of_n) or alpha d - beta d log d (rl); d (K,) -> (K,) float64."""
    d = torch.as_tensor(d, dtype=torch.float64)
    return alpha * d - beta * gao_penalty(d, form)


def fit_gao(d: torch.Tensor, gain: torch.Tensor, form: str) -> tuple[float, float]:
    """Least-squares (alpha, beta) of gain ~ gao_curve(d, alpha, beta, form); no intercept (R(0) = 0).

    d (K,): sqrt(KL) of each point, gain (K,): gold (or proxy) reward minus the initial policy's.
    Solves the 2 x 2 normal equations of the design matrix X = [d, -f(d)].
    """
    d = torch.as_tensor(d, dtype=torch.float64)
    gain = torch.as_tensor(gain, dtype=torch.float64)
    if d.shape != gain.shape or d.dim() != 1 or len(d) < 2:
        raise ValueError(f"d and gain must be (K,) with K >= 2 points, got {tuple(d.shape)} and {tuple(gain.shape)}")
    if (d < 0).any():
        raise ValueError("d = sqrt(KL) cannot be negative: clamp the KL estimates at 0 before taking the root")
    X = torch.stack([d, -gao_penalty(d, form)], 1)
    alpha, beta = torch.linalg.lstsq(X, gain[:, None]).solution.squeeze(1).tolist()
    return alpha, beta


def gao_peak(alpha: float, beta: float, form: str) -> float:
    """d* where the fitted gold reward is highest (inf if beta <= 0: no over-optimization in the fit).

    best_of_n: dR/dd = alpha - 2 beta d = 0.        rl: dR/dd = alpha - beta (log d + 1) = 0.
    """
    if beta <= 0:
        return math.inf
    if _form(form) == "best_of_n":
        return alpha / (2 * beta)
    return math.exp(alpha / beta - 1)
