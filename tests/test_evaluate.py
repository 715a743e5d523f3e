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
