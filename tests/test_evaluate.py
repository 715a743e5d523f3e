"""evaluate.py: measuring a policy against the gold human and the reference."""

import pytest

from minirlhf.evaluate import evaluate_policy
from minirlhf.tasks import reviews
from helpers import tiny_models


def test_evaluate_policy_reports_zero_kl_for_the_reference_itself():
    policy, reference, rm = tiny_models()
    out = evaluate_policy(policy, reference, rm, reviews.prompts(6), max_new_tokens=8, gold_fn=reviews.gold_reward)
    assert set(out) == {"proxy", "gold", "kl", "length", "finished"}
    assert out["kl"] == pytest.approx(0.0, abs=1e-5) and 1 <= out["length"] <= 8


# ---------------------------------------------------------------- pass@k
from math import comb  # noqa: E402

from minirlhf.evaluate import pass_at_k  # noqa: E402


@pytest.mark.parametrize("n,c,k", [(10, 0, 1), (10, 3, 1), (10, 3, 5), (10, 8, 3), (128, 5, 64), (64, 1, 64), (5, 5, 2)])
def test_pass_at_k_is_one_minus_the_chance_that_k_draws_miss(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)


def test_pass_at_1_is_the_success_rate_and_bad_input_raises():
    assert pass_at_k(20, 7, 1) == pytest.approx(7 / 20)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(4, 1, 5)
