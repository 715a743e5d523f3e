"""Checks of notebook 15's exercises (RL from verifiable rewards: GRPO, Dr. GRPO, RLOO)."""
from __future__ import annotations

from typing import Callable

import torch

from ..advantages import group_advantages as _group_advantages_ref
from ..losses import aggregate_token_losses
from .engine import run_check, seeded

METHODS = {"grpo": ("mean", "group"), "dr_grpo": ("mean", "none"), "rloo": ("leave_one_out", "none")}


def _group_advantages(rewards, method):
    return _group_advantages_ref(rewards, *METHODS[method])


def check_group_advantages(fn: Callable) -> Callable:
    """fn(rewards (P, G), method) -> advantages (P, G), one per response, from its group (row) alone:

        "grpo":    (r - mean) / (std + 1e-4)     std: the population std of the row (correction=0)
        "dr_grpo": r - mean
        "rloo":    r - mean of the OTHER G - 1 rewards of the row

    A row whose rewards are all equal must give zeros, never NaN."""
    g = seeded(15)
    lone_failure = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    mixed = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    graded = (torch.rand(5, 6, generator=g) * 4).round() / 4
    graded[1] = 0.5
    cases = [(f"{label}, {m}", (r, m)) for label, r in (("rewards [1, 1, 1, 0]", lone_failure),
                                                        ("4 groups, two of them all-equal", mixed),
                                                        ("5 groups of 6 graded rewards", graded))
             for m in METHODS]

    def centred(r, m):
        return r - r.mean(1, keepdim=True)

    mistakes = {
        "divide by std + 1e-4, not by the std alone: an all-equal group has std 0, and 0 / 0 is NaN.":
            lambda r, m: centred(r, m) / r.std(1, correction=0, keepdim=True) if m == "grpo" else _group_advantages(r, m),
        "use the population std (torch.std(..., correction=0)): with the unbiased one [1, 1, 1, 0] gives -1.5 for the "
        "failure instead of -1.73.":
            lambda r, m: centred(r, m) / (r.std(1, keepdim=True) + 1e-4) if m == "grpo" else _group_advantages(r, m),
        "the mean and std are over the whole batch: a group is one ROW (one prompt's G responses), so use dim=1 "
        "with keepdim=True.":
            lambda r, m: ((r - r.mean()) / (r.std(correction=0) + 1e-4) if m == "grpo" else
                          r - r.mean() if m == "dr_grpo" else r - (r.sum() - r) / (r.numel() - 1)),
        "Dr. GRPO does not divide by the std (that is its point: the std up-weights groups that are almost all "
        "right or all wrong): just r - mean.":
            lambda r, m: _group_advantages(r, "grpo") if m == "dr_grpo" else _group_advantages(r, m),
        "RLOO's baseline leaves the sample out: divide the sum of the OTHER rewards by G - 1, not G.":
            lambda r, m: r - (r.sum(1, keepdim=True) - r) / r.size(1) if m == "rloo" else _group_advantages(r, m),
        "RLOO uses the mean of the other rewards, not the mean of all of them (that is Dr. GRPO).":
            lambda r, m: centred(r, m) if m == "rloo" else _group_advantages(r, m),
        "return the advantage r - b, not the baseline b.":
            lambda r, m: r - _group_advantages(r, m) if m != "grpo" else _group_advantages(r, m),
    }
    return run_check("group_advantages", fn, _group_advantages, cases, mistakes, atol=1e-4,
                     nonfinite_hint="an all-equal group has std 0: add 1e-4 to the std before dividing, so 0 / 1e-4 = 0.")


def _loss_aggregation(per_token, mask, loss_type, max_completion_length):
    return aggregate_token_losses(per_token, mask, loss_type, max_completion_length)


def check_loss_aggregation(fn: Callable) -> Callable:
    """fn(per_token (B, N), mask (B, N) bool, loss_type, max_completion_length) -> scalar, over the tokens of mask:

        "grpo":    mean over rows of (the row's sum / the row's token count)
        "dapo":    sum over all counted tokens / their number
        "dr_grpo": sum over all counted tokens / (B * max_completion_length)

    Padding (mask False) holds garbage and must count nowhere. The loss feeds the optimiser, so the gradient
    with respect to per_token is compared too (it is each token's weight: 1/(B |y_b|), 1/sum |y|, 1/(B L))."""
    g = seeded(16)
    four_seven = torch.tensor([[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    x47 = torch.tensor([[1.0] * 7, [2.0] * 7]).masked_fill(~four_seven, 50.0)
    lengths = torch.tensor([3, 8, 1, 5, 2])
    ragged = torch.arange(8)[None, :] < lengths[:, None]
    xr = torch.randn(5, 8, generator=g).masked_fill(~ragged, -30.0)
    cases = [(f"{label}, {t}", (x, m, t, 10)) for label, x, m in (("the 4-token and 7-token responses", x47, four_seven),
                                                                  ("5 ragged rows of 1 to 8 tokens", xr, ragged))
             for t in ("grpo", "dapo", "dr_grpo")]

    def ref(x, m, t, L):
        return aggregate_token_losses(x, m, t, L)

    mistakes = {
        "the padding is counted: multiply by the mask (or select with it) before summing, and count only its tokens.":
            lambda x, m, t, L: ref(x, torch.ones_like(m), t, L),
        "\"grpo\" averages each ROW over its own tokens first, then averages the rows: that is the per-sequence mean.":
            lambda x, m, t, L: ref(x, m, "dapo" if t == "grpo" else t, L),
        "\"dapo\" is one mean over ALL counted tokens of the batch, not a mean of per-row means.":
            lambda x, m, t, L: ref(x, m, "grpo" if t == "dapo" else t, L),
        "\"dr_grpo\" divides by a constant, B * max_completion_length, not by the number of counted tokens.":
            lambda x, m, t, L: ref(x, m, "dapo" if t == "dr_grpo" else t, L),
        "\"dr_grpo\" divides by B * max_completion_length, not by B * (the width of this batch).":
            lambda x, m, t, L: ref(x, m, t, x.size(1) if t == "dr_grpo" else L),
        "\"dr_grpo\" divides by B * max_completion_length: you forgot the B.":
            lambda x, m, t, L: ref(x, m, t, L) * (x.size(0) if t == "dr_grpo" else 1),
    }
    return run_check("loss_aggregation", fn, _loss_aggregation, cases, mistakes, grad_args={0: "per_token"})
