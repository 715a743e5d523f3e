"""preferences.py: Bradley-Terry labels from the gold human and the Bayes ceiling."""
import math

import pytest
import torch

from minirlhf import preferences


def test_bt_probability_and_labels():
    p = preferences.bt_probability(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), 1.0)
    assert torch.allclose(p, torch.tensor([1 / (1 + math.e ** -1), 1 / (1 + math.e), 0.5], dtype=torch.float64))
    assert preferences.bt_probability([2.0, 0.0, 1.0], [1.0, 1.0, 1.0], 0).tolist() == [1.0, 0.0, 0.5]
    g = torch.Generator().manual_seed(0)
    a, b = torch.zeros(20000), torch.zeros(20000) - 1.0
    labels = preferences.sample_bt_labels(a, b, 1.0, g)
    assert abs(labels.float().mean().item() - 1 / (1 + math.e ** -1)) < 0.01
    with pytest.raises(ValueError):
        preferences.bt_probability([0.0], [1.0], -1)


def test_bayes_accuracy_is_a_ceiling():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(5000, generator=g), torch.randn(5000, generator=g)
    ceiling = preferences.bayes_optimal_accuracy(a, b, 0.5)
    labels = preferences.sample_bt_labels(a, b, 0.5, g)
    oracle = ((a > b).long() == labels).float().mean().item()
    assert abs(oracle - ceiling) < 0.015               # the gold order achieves the ceiling
    assert preferences.bayes_optimal_accuracy(a, b, 0) == 1.0
    assert preferences.bayes_optimal_accuracy(a, b, 1e6) == pytest.approx(0.5, abs=1e-4)


def test_label_pairs_orders_by_the_noisy_human():
    from minirlhf.tasks import reviews
    prompts = [reviews.make_prompt("soup")] * 400
    good, bad = "the soup was delicious.", "the soup was cold."
    pairs = preferences.label_pairs(prompts, [good] * 200 + [bad] * 200, [bad] * 200 + [good] * 200,
                                    reviews.gold_reward, temperature=1.0, seed=0)
    right = sum(p["chosen"] == good for p in pairs) / len(pairs)
    assert abs(right - 1 / (1 + math.exp(-4))) < 0.03          # gold margin 4 at T = 1
    assert all(p["gold_chosen"] == reviews.gold_reward(p["prompt"], p["chosen"]) for p in pairs)
    noiseless = preferences.label_pairs(prompts[:10], [bad] * 10, [good] * 10, reviews.gold_reward, temperature=0)
    assert all(p["chosen"] == good for p in noiseless)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_label_pairs_refuses_a_gold_reward_that_is_not_a_finite_number(bad):
    """NaN compares false both ways: without the check every such pair was labelled "b preferred", silently."""
    def gold(prompt, response):
        return bad if response == "broken one" else 1.0
    with pytest.raises(ValueError, match="(?s)'broken one'.*'review: tea\\\\n'.*finite"):
        preferences.label_pairs(["review: soup\n", "review: tea\n"], ["fine", "fine"], ["fine", "broken one"], gold)
