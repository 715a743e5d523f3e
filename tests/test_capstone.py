"""The capstone's pipeline pieces: ratings of a policy's replies, the four reward learners, gold agreement, the
policy-check reward, KTO on thumbs, and the report card (tiny random models: wiring and arithmetic, not quality)."""
import math

import pytest
import torch

from minirlhf import capstone as C, ratings as R
from minirlhf.dpo import DPOConfig, implicit_reward, train_kto
from minirlhf.generation import left_pad
from minirlhf.tasks import support
from minirlhf.tokenizer import TOKENIZER
from helpers import tiny_model


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(0, context_length=192)


@pytest.fixture(scope="module")
def some_ratings(tiny):
    users = R.make_users(6, seed=0)
    return C.collect_ratings(tiny, users, tickets_per_user=2, replies_per_ticket=3, seed=0)


def test_collect_ratings_rates_each_users_tickets(some_ratings):
    assert some_ratings and {"user", "kind", "prompt", "response", "stars"} <= set(some_ratings[0])
    assert all(1 <= r["stars"] <= 5 for r in some_ratings)
    per_prompt = {}
    for r in some_ratings:
        per_prompt.setdefault((r["user"], r["prompt"]), []).append(r)
    assert max(map(len, per_prompt.values())) <= 3


@pytest.mark.parametrize("kind", C.LEARNERS)
def test_every_learner_trains_and_scores(tiny, some_ratings, kind):
    rows = some_ratings + [{**r, "stars": 6 - r["stars"], "response": r["response"] + "."} for r in some_ratings]
    reward, history = C.train_learner(kind, tiny, rows, steps=2)
    scores = C.as_scorer(reward)([r["prompt"] for r in rows[:4]], [r["response"] for r in rows[:4]])
    assert scores.shape == (4,) and torch.isfinite(scores).all() and history["loss"]
    with pytest.raises(ValueError, match="unknown learner"):
        C.train_learner("stars squared", tiny, rows, steps=1)


def test_gold_agreement_counts_orders_and_ties():
    pairs = [{"prompt": "p", "a": "x", "b": "y", "gold_a": 1.0, "gold_b": 0.0},
             {"prompt": "p", "a": "y", "b": "x", "gold_a": 0.0, "gold_b": 1.0},
             {"prompt": "p", "a": "x", "b": "z", "gold_a": 1.0, "gold_b": 0.0}]
    table = {"x": 2.0, "y": 1.0, "z": 2.0}
    assert C.gold_agreement(lambda ps, rs: torch.tensor([table[r] for r in rs]), pairs) == pytest.approx(2.5 / 3)


def test_compliance_reward_subtracts_the_penalty_where_the_policy_check_fires():
    prompt = support.make_prompt(support.Ticket("refund", 42, "delivered", 80, 3))
    replies = ["i have refunded 80 for order 42.", "a manager will review the refund of 80 for order 42."]
    ids = [TOKENIZER.encode(prompt, bos=True) + TOKENIZER.encode(r) for r in replies]
    tokens, mask = left_pad(ids, max(map(len, ids)))

    class Constant(torch.nn.Module):
        def forward(self, tokens, attention_mask):
            return torch.ones(tokens.size(0))
    out = C.ComplianceReward(Constant(), penalty=2.0)(tokens, mask)
    assert out.tolist() == [-1.0, 1.0]


def test_kto_on_thumbs_raises_the_implicit_reward_of_thumbs_up(tiny):
    import copy
    policy, reference = copy.deepcopy(tiny), copy.deepcopy(tiny).eval()
    prompt = support.prompts(1, seed=0)[0]
    examples = [{"prompt": prompt, "response": "happy to help.", "desirable": True},
                {"prompt": prompt, "response": "we value you.", "desirable": False}] * 8
    history = train_kto(policy, examples, DPOConfig(beta=0.5, learning_rate=1e-2, steps=15, batch_size=8),
                        reference=reference)
    r = implicit_reward(policy, reference, [prompt] * 2, ["happy to help.", "we value you."], 0.5)
    assert r[0] > 0 > r[1] and history["loss"][-1] < history["loss"][0]
    with pytest.raises(ValueError, match="desirable"):
        train_kto(policy, [{"prompt": prompt, "response": "x"}])


def test_mean_se():
    mean, se = C.mean_se([0.0, 1.0, 1.0, 0.0])
    assert mean == 0.5 and se == pytest.approx(math.sqrt(1 / 3) / 2)
    with pytest.raises(ValueError, match="at least two"):
        C.mean_se([1.0])


def test_report_card_of_a_policy_against_itself(tiny):
    prompts = support.prompts(12, seed=3)
    card = C.report_card(tiny, tiny, prompts, expert_pairs=support.sft_dataset(4, seed=0))
    assert card["win_rate_vs_sft"][0] == 0.5 and abs(card["kl_to_sft"]) < 1e-6   # same model, same seed
    assert card["gold"] == card["sft_gold"] and card["expert_nll"] == pytest.approx(card["sft_expert_nll"])
    assert card["worst_intent"] in support.INTENTS and len(card["worst_samples"]) == 3


def test_reward_regression_learns_the_targets(tiny):
    from minirlhf.reward import RewardModel, score, train_reward_regression
    rm = RewardModel.from_policy(tiny)
    prompt = support.prompts(1, seed=0)[0]
    examples = [(prompt, "happy to help."), (prompt, "we value you."), (prompt, "anything else?")]
    history = train_reward_regression(rm, examples, [3.0, -1.0, 0.0], steps=60, batch_size=3, lr=3e-3)
    got = score(rm, *map(list, zip(*examples)))
    assert history["loss"][-1] < 0.1 * history["loss"][0] and got[0] > got[2] > got[1]
    with pytest.raises(ValueError, match="one target per example"):
        train_reward_regression(rm, examples, [1.0], steps=1)
