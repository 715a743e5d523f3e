import math

import pytest
import torch

from conftest import assert_check_behaves
from minirlhf import exercises as ex
from minirlhf import experiments
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


def _lstsq(columns, y):
    return tuple(torch.linalg.lstsq(torch.stack(columns, 1), y[:, None]).solution.squeeze(1).tolist())


def test_fit_gao_check(capsys):
    right = lambda d, y, form: fit_gao(d, y, form)  # noqa: E731

    def naive_log(d, y, form):      # d log d written directly: nan at d = 0
        f = d * d if form == "best_of_n" else d * torch.log(d)
        return _lstsq([d, -f], y)

    wrongs = [
        (lambda d, y, form: _lstsq([torch.ones_like(d), d, -gao_penalty(d, form)], y)[1:], "intercept"),
        (lambda d, y, form: _lstsq([d, gao_penalty(d, form)], y), "wrong sign"),
        (lambda d, y, form: _lstsq([d, -d * d], y), "d log d, not d\\^2"),
        (lambda d, y, form: _lstsq([d, -gao_penalty(d, form)], y)[::-1], "in that order"),
        (naive_log, "nan|NaN"),
        (lambda d, y, form: _lstsq([d * d, -gao_penalty(d * d, form)], y), "expected"),   # fitted against KL, not sqrt(KL)
    ]
    assert_check_behaves(ex.check_fit_gao, right, wrongs, capsys, reference=fit_gao)


def test_gold_order_agreement_check(capsys):
    def right(ra, rb, ga, gb):
        keep = ga != gb
        s = ((ra - rb) * (ga - gb) > 0).double() + 0.5 * (ra == rb).double()
        return float(s[keep].mean())

    def with_ties(ra, rb, ga, gb):
        return float((((ra - rb) * (ga - gb) > 0).double() + 0.5 * (ra == rb).double()).mean())

    wrongs = [
        (with_ties, "EQUAL gold"),
        (lambda ra, rb, ga, gb: float(((ra - rb) * (ga - gb) > 0).double()[ga != gb].mean()), "coin flip"),
        (lambda ra, rb, ga, gb: 1 - right(ra, rb, ga, gb), "DISagreement"),
        (lambda ra, rb, ga, gb: float(((ra > rb) == (ga > gb)).double().mean()), "expected|EQUAL"),
    ]
    assert_check_behaves(ex.check_gold_order_agreement, right, wrongs, capsys, reference=gold_order_agreement)


def test_best_of_n_curve_starts_at_zero_rises_in_proxy_and_bounds_the_kl():
    g = torch.Generator().manual_seed(0)
    proxy = torch.randn(5, 16, generator=g)
    gold = proxy + torch.randn(5, 16, generator=g)
    curve = experiments.best_of_n_curve(proxy, gold, (1, 2, 4, 16))
    assert curve["proxy_gain"][0] == pytest.approx(0, abs=1e-4) and curve["gold_gain"][0] == pytest.approx(0, abs=1e-4)
    assert curve["kl_exact"][0] == pytest.approx(0, abs=1e-4)
    assert all(a < b for a, b in zip(curve["proxy_gain"], curve["proxy_gain"][1:]))
    assert all(e <= f + 1e-4 for e, f in zip(curve["kl_exact"], curve["kl_formula"]))
    # n = pool size: always the pool's best
    assert curve["proxy_gain"][-1] == pytest.approx(float(proxy.max(1).values.mean() - proxy.mean()), abs=1e-4)


def test_a_quick_reward_hacking_run_records_best_of_n_and_ppo_for_each_rm():
    results = experiments.reward_hacking(quick=True, log=lambda line: None)
    assert set(results["rms"]) == {"64", "4000"}
    for row in results["rms"].values():
        assert 0 < row["test"]["ratio"] <= 1.05
        assert row["best_of_n"]["n"] == [1, 2, 4]
        run = row["ppo"]["0"]
        assert len(run["proxy_reward"]) == len(run["gold"]) == len(run["kl"]) == 2
        assert run["config"]["beta"] == results["beta"]
