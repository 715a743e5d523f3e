"""Checks for notebook 14 (RLAIF): the swap-averaged judge probability and the judge's agreement with gold."""
from __future__ import annotations

from typing import Callable

import torch

from ..judge import judge_gold_agreement, swap_averaged
from .engine import run_check, seeded


def check_swap_averaged(fn: Callable) -> Callable:
    """fn(p_ab (N,), p_ba (N,)) -> (N,): the order-free verdict 1/2 [p(a, b) + 1 - p(b, a)], where p_ab is
    P(first shown is better) with a first and p_ba the same with b first."""
    g = seeded(40)
    p_ab = torch.rand(12, generator=g)
    p_ba = torch.rand(12, generator=g)
    cases = [
        ("a judge that always says 'first'", (torch.tensor([0.9, 0.9, 0.5]), torch.tensor([0.9, 0.1, 0.5]))),
        ("certain verdicts, 0 and 1", (torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([0.0, 1.0, 1.0, 0.0]))),
        ("12 random pairs", (p_ab, p_ba)),
    ]
    mistakes = {
        "p(b, a) is the probability that B (shown first) wins: a wins that presentation with 1 - p(b, a).":
            lambda ab, ba: 0.5 * (ab + ba),
        "average the two presentations: the result is a probability, so it needs the 1/2.":
            lambda ab, ba: ab + 1 - ba,
        "that is P(b > a): a wins the first presentation with p(a, b) and the second with 1 - p(b, a).":
            lambda ab, ba: 0.5 * (1 - ab + ba),
    }
    return run_check("swap_averaged", fn, swap_averaged, cases, mistakes)


def check_judge_gold_agreement(fn: Callable) -> Callable:
    """fn(p_a (N,), gold_a (N,), gold_b (N,)) -> float: the share of pairs with gold_a != gold_b where the
    judge's verdict p(a > b) picks the gold-better response; p = 1/2 (no verdict) counts 1/2."""
    g = seeded(41)
    gold_a = torch.randint(-2, 3, (40,), generator=g).double()
    gold_b = torch.randint(-2, 3, (40,), generator=g).double()
    p_a = torch.rand(40, generator=g)
    p_a[::6] = 0.5
    cases = [
        ("three pairs, no ties", (torch.tensor([0.9, 0.2, 0.6]), torch.tensor([1.0, 0.0, -1.0]),
                                  torch.tensor([0.0, 2.0, 1.0]))),
        ("40 pairs with gold ties and p = 1/2", (p_a, gold_a, gold_b)),
    ]

    def agree(p, ga, gb):
        return ((p - 0.5) * (ga - gb) > 0).double() + 0.5 * (p == 0.5).double()

    mistakes = {
        "pairs with EQUAL gold have no right order: leave them out of the mean, do not count them.":
            lambda p, ga, gb: float(agree(p, ga, gb).mean()),
        "a verdict of exactly 1/2 is a coin flip: count it 1/2, not 0 or 1.":
            lambda p, ga, gb: float(((p > 0.5) == (ga > gb)).double()[ga != gb].mean()),
        "that is DISagreement: the judge agrees with gold when p - 1/2 has the same sign as g_a - g_b.":
            lambda p, ga, gb: float((1 - agree(p, ga, gb))[ga != gb].mean()),
        "the agreement is with the gold ORDER (which is better), not how close p is to a 0/1 label.":
            lambda p, ga, gb: float((1 - (p - (ga > gb).double()).abs())[ga != gb].mean()),
    }
    return run_check("judge_gold_agreement", fn, judge_gold_agreement, cases, mistakes, scalar_tensor_ok=True)
