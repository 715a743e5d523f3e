"""Checks of the capstone's exercises (notebook 17): turning users' stars into a training signal.

- `check_normalize_per_user`: stars as z-scores within each user, so a harsh and a lenient user agree;
- `check_rating_pairs_loss`: Bradley-Terry on every pair of replies one user rated differently for one ticket.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..losses import bradley_terry_loss
from ..ratings import normalize_per_user
from .engine import run_check, seeded


def _ratings(stars: torch.Tensor, users: torch.Tensor, prompts: torch.Tensor | None = None) -> list[dict]:
    prompts = torch.zeros_like(users) if prompts is None else prompts
    return [{"user": int(u), "prompt": int(p), "stars": float(s)} for s, u, p in zip(stars, users, prompts)]


def _normalize(stars: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
    return torch.tensor(normalize_per_user(_ratings(stars, users)), dtype=stars.dtype)


def _pooled(stars, users):
    """Mistake: one z-score over everyone (the users' scales stay in)."""
    return (stars - stars.mean()) / stars.std(unbiased=False)


def _centred_only(stars, users):
    """Mistake: the user's mean removed, not their spread (an extreme rater still shouts)."""
    out = stars.clone()
    for u in users.unique():
        rows = users == u
        out[rows] = stars[rows] - stars[rows].mean() if rows.sum() > 1 else 0.0
    return out


def _sample_std(stars, users):
    """Mistake: the sample std (n - 1): the reference divides by the population std (n)."""
    out = torch.zeros_like(stars)
    for u in users.unique():
        rows = users == u
        if rows.sum() > 1 and stars[rows].std() > 0:
            out[rows] = (stars[rows] - stars[rows].mean()) / stars[rows].std(unbiased=True)
    return out


def check_normalize_per_user(fn: Callable) -> Callable:
    """fn(stars (N,) float, users (N,) long) -> (N,) float: each rating as a z-score within its user,

        z_i = (stars_i - mean_u) / std_u      over the ratings of user u = users[i] (population std, / n_u),

    and 0 for a user with a single rating or with all-equal stars (no information about which reply is better)."""
    g = seeded(17)
    many = torch.randint(0, 12, (60,), generator=g)
    cases = [
        ("two users on different scales", (torch.tensor([1., 3., 3., 5.]), torch.tensor([0, 0, 1, 1]))),
        ("ragged users, interleaved", (torch.tensor([2., 5., 4., 1., 3., 5., 5.]), torch.tensor([3, 1, 3, 1, 3, 1, 1]))),
        ("a user with one rating, a user whose stars are all equal",
         (torch.tensor([4., 2., 2., 2., 1., 5.]), torch.tensor([7, 8, 8, 8, 9, 9]))),
        ("sixty ratings by twelve users", (torch.randint(1, 6, (60,), generator=g).float(), many)),
    ]
    mistakes = {
        "you normalised over all the ratings at once: that keeps each user's scale (a harsh user's replies all look "
        "bad). Take the mean and std of each user's own ratings.": _pooled,
        "you subtracted each user's mean but did not divide by their std: an extreme rater (only 1s and 5s) still "
        "counts more than a careful one.": _centred_only,
        "you divided by the sample std (n - 1); use the population std (divide by n), as "
        "torch.std(..., unbiased=False) does.": _sample_std,
    }
    return run_check("normalize_per_user", fn, _normalize, cases, mistakes,
                     nonfinite_hint="A user with one rating, or with all-equal stars, has std 0: give those ratings 0 "
                                    "instead of dividing by it.")


def _pair_index(stars: torch.Tensor, users: torch.Tensor, prompts: torch.Tensor,
                same_user: bool = True, same_prompt: bool = True, keep_ties: bool = False):
    """(i, j) of every pair the loss compares: i's stars above j's (or equal, with keep_ties), same user and prompt."""
    n = stars.numel()
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    keep = (stars[i] >= stars[j]) & (i != j) if keep_ties else stars[i] > stars[j]
    if keep_ties:
        keep &= (stars[i] > stars[j]) | (i < j)
    if same_user:
        keep &= users[i] == users[j]
    if same_prompt:
        keep &= prompts[i] == prompts[j]
    return i[keep], j[keep]


def _rating_pairs_loss(rewards, stars, users, prompts, **options):
    i, j = _pair_index(stars, users, prompts, **options)
    if i.numel() == 0:
        return rewards.sum() * 0.0
    return bradley_terry_loss(rewards[i], rewards[j])


def check_rating_pairs_loss(fn: Callable) -> Callable:
    """fn(rewards (N,) float, stars (N,), users (N,) long, prompts (N,) long) -> scalar tensor: Bradley-Terry on
    every pair of ratings by the SAME user of replies to the SAME prompt with DIFFERENT stars,

        L = -mean_{(i, j): user_i = user_j, prompt_i = prompt_j, stars_i > stars_j} log sigma(r_i - r_j),

    and 0 (with a zero gradient, still connected to rewards) when there is no such pair. Values and gradients are
    compared: this loss trains the reward model."""
    g = seeded(23)
    n = 40
    users, prompts = torch.randint(0, 5, (n,), generator=g), torch.randint(0, 4, (n,), generator=g)
    cases = [
        ("one user, one prompt, three replies",
         (torch.tensor([0.5, -1.0, 2.0]), torch.tensor([4., 2., 4.]), torch.tensor([0, 0, 0]), torch.tensor([0, 0, 0]))),
        ("two users rating the same two replies in opposite ways",
         (torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([5., 1., 2., 3.]), torch.tensor([0, 0, 1, 1]),
          torch.tensor([0, 0, 0, 0]))),
        ("forty ratings, five users, four prompts, ties",
         (torch.randn(n, generator=g), torch.randint(1, 6, (n,), generator=g).float(), users, prompts)),
        ("extreme margins (rewards of +-60)",
         (torch.tensor([60.0, -60.0, -60.0, 60.0]), torch.tensor([1., 5., 2., 3.]), torch.tensor([0, 0, 1, 1]),
          torch.tensor([0, 0, 1, 1]))),
        ("no pair at all: every user rated every ticket once or with equal stars",
         (torch.tensor([0.3, -0.2, 0.9]), torch.tensor([3., 3., 5.]), torch.tensor([0, 0, 1]), torch.tensor([0, 0, 0]))),
    ]
    mistakes = {
        "you compared ratings from different users: their scales differ (a harsh user's 3 is a lenient user's 5). "
        "Only pairs by the same user.": lambda r, s, u, p: _rating_pairs_loss(r, s, u, p, same_user=False),
        "you compared replies to different prompts: a reply to an easy ticket is not better than one to a hard "
        "ticket because it got more stars. Only pairs of the same user AND the same prompt.":
            lambda r, s, u, p: _rating_pairs_loss(r, s, u, p, same_prompt=False),
        "you kept ties (equal stars) as pairs: they say nothing about which reply is better; drop them.":
            lambda r, s, u, p: _rating_pairs_loss(r, s, u, p, keep_ties=True),
        "the sign is flipped: the reply with MORE stars is the chosen one, L = -log sigma(r_more - r_fewer).":
            lambda r, s, u, p: _rating_pairs_loss(-r, s, u, p),
        "you summed over the pairs; take the mean (the loss's scale must not grow with the number of pairs).":
            lambda r, s, u, p: _rating_pairs_loss(r, s, u, p) * max(1, _pair_index(s, u, p)[0].numel()),
    }
    return run_check("rating_pairs_loss", fn, _rating_pairs_loss, cases, mistakes, grad_args={0: "rewards"},
                     nonfinite_hint="log(sigmoid(x)) underflows for large negative x: use F.logsigmoid. With no pair, "
                                    "return rewards.sum() * 0 rather than a mean over nothing (nan).")

