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


def test_tool_use_accuracy_splits_sums_and_products(monkeypatch):
    from minirlhf import evaluate
    from helpers import tiny_model

    answers = {"q: 37*48\na: ": ("<calc>37*48</calc>1776\n1776", 1), "q: 12*10\na: ": ("121", 0),
               "q: 3+4\na: ": ("7", 0), "q: 5+5\na: ": ("<calc>5+5</calc>10\n10", 1), "q: 1+1\na: ": ("3", 0)}
    monkeypatch.setattr(evaluate, "sample_text_with_tools", lambda model, prompts, n, **kw: (
        [answers[p][0] for p in prompts], [answers[p][1] for p in prompts]))
    got = evaluate.tool_use_accuracy(tiny_model(context_length=64), list(answers), batch_size=2)
    assert got["products"] == {"accuracy": 0.5, "call_rate": 0.5, "n": 2}
    assert got["sums"] == {"accuracy": pytest.approx(2 / 3), "call_rate": pytest.approx(1 / 3), "n": 3}
    assert got["all"]["accuracy"] == pytest.approx(3 / 5) and got["all"]["n"] == 5
    alone = evaluate.tool_use_accuracy(tiny_model(), list(answers), use_tool=False)   # context 32: fewer new tokens
    assert alone["all"]["n"] == 5 and alone["all"]["accuracy"] == 0.0


@pytest.mark.slow
def test_the_tool_model_needs_its_tool_for_products_and_calls_for_them():
    from minirlhf import zoo
    from minirlhf.evaluate import tool_use_accuracy
    from minirlhf.tasks import tool_arithmetic

    prompts = tool_arithmetic.prompts(200, seed=123)
    with_tool = tool_use_accuracy(zoo.load("arithmetic-tool-sft"), prompts)
    alone = tool_use_accuracy(zoo.load("arithmetic-tool-sft"), prompts, use_tool=False)
    parent = tool_use_accuracy(zoo.load("arithmetic-sft"), prompts, use_tool=False)
    assert with_tool["products"]["accuracy"] > 0.9 and with_tool["products"]["call_rate"] > 0.95
    assert alone["products"]["accuracy"] < 0.1 and parent["products"]["accuracy"] < 0.1
    # sums: answered alone (greedy), less well than the parent (68% vs 86% here: the tool SFT costs some addition)
    assert with_tool["sums"]["call_rate"] < 0.2 and with_tool["sums"]["accuracy"] > parent["sums"]["accuracy"] - 0.25
    assert with_tool["sums"]["accuracy"] > 0.5
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


def test_majority_accuracy_votes_over_finished_answers_and_breaks_ties_by_the_first_sampled(monkeypatch):
    from minirlhf import evaluate
    from minirlhf.sampling import Sample
    from minirlhf.tasks import arithmetic

    prompts = ["q: 1+1\na: ", "q: 2+2\na: ", "q: 3+3\na: ", "q: 4+4\na: "]
    drawn = {"q: 1+1\na: ": [("2", True), ("3", True), ("2", True)],       # majority right
             "q: 2+2\na: ": [("5", True), ("4", True), ("5", True)],       # majority wrong
             "q: 3+3\na: ": [("6", True), ("7", True), ("8", False)],      # tie 6 / 7 (8 unfinished): first wins
             "q: 4+4\na: ": [("8", False), ("8", False), ("9", True)]}     # unfinished answers never vote
    monkeypatch.setattr(evaluate, "sample", lambda model, texts, **kw: [
        Sample(p, *drawn[p][i % 3]) for i, p in enumerate(texts)])
    assert evaluate.majority_accuracy(None, prompts, arithmetic.reward, 3, max_new_tokens=4) == 0.5
