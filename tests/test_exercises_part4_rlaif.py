"""The checks of notebook 14: each accepts right answers written differently and names the usual mistakes."""
import pytest
import torch

import minirlhf.exercises as ex
from minirlhf.judge import judge_gold_agreement, swap_averaged
from conftest import assert_check_behaves


def swap_by_stack(p_ab, p_ba):                      # right: the mean of the two verdicts on a
    return torch.stack([p_ab, 1 - p_ba]).mean(0)


def agreement_by_loop(p, ga, gb):                   # right: one pair at a time, a plain float
    scores = [1.0 if (pi > 0.5) == (a > b) and pi != 0.5 else 0.5 if pi == 0.5 else 0.0
              for pi, a, b in zip(p.tolist(), ga.tolist(), gb.tolist()) if a != b]
    return sum(scores) / len(scores)


def agreement_as_tensor(p, ga, gb):                 # right: a 0-d tensor is accepted
    keep = ga != gb
    return (((p - 0.5) * (ga - gb) > 0).double() + 0.5 * (p == 0.5).double())[keep].mean()


CHECKS = [
    (ex.check_swap_averaged, swap_averaged, [swap_averaged, swap_by_stack], [
        (lambda ab, ba: 0.5 * (ab + ba), "1 - p\\(b, a\\)"),
        (lambda ab, ba: ab + 1 - ba, "needs the 1/2"),
        (lambda ab, ba: 0.5 * (1 - ab + ba), "P\\(b > a\\)"),
        (lambda ab, ba: swap_averaged(ab, ba).mean(), r"expected shape \(3,\), got \(\)"),
        (lambda ab, ba: swap_averaged(ab, ba).tolist(), "got a list"),
        (lambda ab, ba: ab, "expected"),                        # no averaging at all
    ]),
    (ex.check_judge_gold_agreement, judge_gold_agreement, [judge_gold_agreement, agreement_by_loop, agreement_as_tensor], [
        (lambda p, ga, gb: float((((p - 0.5) * (ga - gb) > 0).double() + 0.5 * (p == 0.5).double()).mean()),
         "EQUAL gold"),
        (lambda p, ga, gb: float(((p > 0.5) == (ga > gb)).double()[ga != gb].mean()), "coin flip"),
        (lambda p, ga, gb: 1 - agreement_by_loop(p, ga, gb), "DISagreement"),
        (lambda p, ga, gb: float((1 - (p - (ga > gb).double()).abs())[ga != gb].mean()), "ORDER"),
        (lambda p, ga, gb: [agreement_by_loop(p, ga, gb)], "got a list"),
    ]),
]


@pytest.mark.parametrize("check,fallback,rights,wrongs", CHECKS, ids=[c[0].__name__ for c in CHECKS])
def test_check_accepts_right_answers_falls_back_on_stub_and_rejects_mistakes(check, fallback, rights, wrongs, capsys):
    assert_check_behaves(check, rights, wrongs, capsys, reference=fallback)
