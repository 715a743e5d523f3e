""""""
import math

import pytest
import torch

from minirlhf.overoptimization import fit_gao, gao_curve, gao_peak, gao_penalty
from minirlhf.reward import gold_order_agreement


@pytest.mark.parametrize("form", ["best_of_n", "rl"])
def test_fit_gao_recovers_the_parameters_of_an_exact_curve(form):
    d = torch.linspace(0, 4, 20, dtype=torch.float64)
    alpha, beta = fit_gao(d, gao_curve(d, 1.3, 0.4, form), form)
    assert alpha == pytest.approx(1.3, abs=1e-9) and beta == pytest.approx(0.4, abs=1e-9)


def test_the_curves_start_at_zero_and_the_rl_penalty_is_finite_at_zero():
    zero = torch.zeros(1, dtype=torch.float64)
    assert gao_penalty(zero, "rl").item() == 0.0
    assert gao_curve(zero, 1.0, 1.0, "best_of_n").item() == gao_curve(zero, 1.0, 1.0, "rl").item() == 0.0


@pytest.mark.parametrize("form", ["best_of_n", "rl"])
def test_gao_peak_is_where_the_curve_is_highest(form):
    d = torch.linspace(1e-3, 10, 100001, dtype=torch.float64)
    curve = gao_curve(d, 1.0, 0.5, form)
    assert gao_peak(1.0, 0.5, form) == pytest.approx(float(d[curve.argmax()]), abs=1e-3)
    assert gao_peak(1.0, 0.0, form) == math.inf       # no penalty, no over-optimization


def test_gao_functions_reject_bad_input():
    with pytest.raises(ValueError, match="form must be one of"):
        gao_curve(torch.ones(3), 1.0, 1.0, "ppo")
    with pytest.raises(ValueError, match="clamp the KL"):
        fit_gao(torch.tensor([-0.1, 1.0]), torch.tensor([0.0, 1.0]), "rl")
    with pytest.raises(ValueError, match="K >= 2"):
        fit_gao(torch.tensor([1.0]), torch.tensor([1.0]), "rl")


def test_gold_order_agreement_leaves_gold_ties_out_and_counts_reward_ties_half():
    r_a, r_b = torch.tensor([1.0, 0.0, 2.0, 5.0]), torch.tensor([0.0, 0.0, 3.0, 1.0])
    g_a, g_b = torch.tensor([1.0, 1.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 0.0, 0.0])
    # pair 0 agrees, pair 1 is a reward tie (1/2), pair 2 disagrees, pair 3 has no gold order
    assert gold_order_agreement(r_a, r_b, g_a, g_b) == pytest.approx(0.5)
    assert math.isnan(gold_order_agreement(r_a, r_b, g_b, g_b))        # no pair has a right order
