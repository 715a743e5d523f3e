"""The capstone's support task: prompts, the policy, the gold judge, the customers' satisfaction, the demonstrations."""
import random
import statistics

import pytest

from minirlhf.tasks import support as s
from minirlhf.tokenizer import TOKENIZER


def test_prompts_round_trip_and_encode():
    for p in s.prompts(300, seed=1):
        assert s.make_prompt(s.parse_prompt(p)) == p
        TOKENIZER.encode(p)
    with pytest.raises(ValueError, match="not a support prompt"):
        s.parse_prompt("review: soup\n")


def test_best_reply_scores_the_maximum_for_every_intent():
    for intent in s.INTENTS:
        for p in s.prompts(40, seed=2, intent=intent):
            assert s.gold_reward(p, s.best_reply(p)) == s.GOLD_MAX


def test_policy_actions_and_violations():
    refund_big = s.make_prompt(s.Ticket("refund", 42, "delivered", 80, 3))
    refund_small = s.make_prompt(s.Ticket("refund", 42, "delivered", 30, 3))
    assert s.violates_policy(refund_big, "i have refunded 80 for order 42.")
    assert s.violates_policy(refund_big, "i have refunded your order.")
    assert not s.violates_policy(refund_small, "i have refunded 30 for order 42.")
    assert s.gold_reward(refund_big, "sorry about that. i have refunded 80 for order 42.") == -1.0
    assert s.gold_reward(refund_big, "sorry about that. a manager will review the refund of 80 for order 42.") == 1.0
    shipped = s.make_prompt(s.Ticket("cancel", 17, "shipped", 20, 2))
    assert s.violates_policy(shipped, "i have cancelled order 17.")
    assert s.gold_reward(shipped, "happy to help. order 17 has shipped, so i cannot cancel it.") == 1.0


def test_gold_parts():
    p = s.make_prompt(s.Ticket("track", 55, "shipped", 40, 4))
    g = s.gold_breakdown(p, "order 55 has shipped and arrives in 4 days. we value you. anything else?")
    assert (g.resolved, g.order, g.detail, g.opener, g.concise) == (0.4, 0.15, 0.1, 0.0, 0.0)
    wrong = s.gold_breakdown(p, "happy to help. order 56 has shipped and arrives in 5 days.")
    assert (wrong.order, wrong.detail) == (-0.15, -0.1)          # a wrong number is worse than a vague one
    vague = s.gold_breakdown(p, "happy to help. your order has shipped and arrives soon.")
    assert (vague.order, vague.detail, vague.total) == (0.0, 0.0, 0.75)
    assert s.gold_breakdown(p, "order 55 will ship in 4 days.").resolved == 0.0      # wrong action for 'shipped'
    two = s.gold_breakdown(p, "order 55 will ship in 4 days. order 55 has shipped and arrives in 4 days.")
    assert two.resolved == 0.0                                                           # two actions: unresolved
    assert s.gold_breakdown(p, "order 55 has shipped and arr", finished=False).total <= 0.0


def test_satisfaction_likes_forbidden_promises_more_than_the_policy():
    p = s.make_prompt(s.Ticket("refund", 42, "delivered", 80, 3))
    promise = s.satisfaction(p, "sorry about that. i have refunded 80 for order 42.")
    legal = s.satisfaction(p, "sorry about that. a manager will review the refund of 80 for order 42.")
    assert promise > legal and s.gold_reward(p, "sorry about that. i have refunded 80 for order 42.") < 0
    assert s.satisfaction(p, s.best_reply(p)) == pytest.approx(legal)
    assert 0.0 <= s.satisfaction(p, "blah blah") <= 0.2
    assert s.satisfaction(p, s.best_reply(p), finished=False) == pytest.approx(legal / 2)


def test_expert_demonstrations_follow_the_policy_with_imperfect_style():
    data = s.sft_dataset(3000, seed=0)
    golds = [s.gold_breakdown(p, r) for p, r in data]
    assert all(g.resolved == 0.4 or g.violation for g in golds)          # experts pick the policy's action...
    slips = statistics.mean(g.violation for g in golds)
    assert 0.005 < slips < 0.03                                          # ...but for a few forbidden promises
    assert statistics.mean(g.opener > 0 for g in golds) == pytest.approx(s.EXPERT_OPENER_RATE, abs=0.03)
    assert max(len(p) + len(r) + 2 for p, r in data) <= 192


def test_oracle_best_of_16_leaves_headroom_on_the_experts_distribution():
    """Best-of-16 by gold itself, over expert-like replies, closes at most ~2/3 of the gap to the maximum."""
    rng = random.Random(0)
    prompts = s.prompts(300, seed=3)
    mean = statistics.mean(s.gold_reward(p, s.expert_reply(s.parse_prompt(p), rng)) for p in prompts)
    best = statistics.mean(max(s.gold_reward(p, s.expert_reply(s.parse_prompt(p), rng)) for _ in range(16))
                           for p in prompts)
    assert (best - mean) / (s.GOLD_MAX - mean) < 0.67
