""""""

import pytest
import torch

from minirlhf.online import fit_reward_model, identical_share, iterated_rlhf, round_budgets
from minirlhf.ppo import PPOConfig
from minirlhf.reward import score
from minirlhf.tasks import reviews

from helpers import never_ending_model


def test_round_budgets_split_evenly_and_lose_nothing():
    assert round_budgets(10, 3) == [4, 3, 3]
    assert round_budgets(9, 1) == [9]
    assert sum(round_budgets(1001, 7)) == 1001
    with pytest.raises(ValueError, match="rounds"):
        round_budgets(2, 3)


def test_identical_share():
    pairs = [{"chosen": "a", "rejected": "a"}, {"chosen": "a", "rejected": "b"}]
    assert identical_share(pairs) == 0.5


@pytest.mark.slow
def test_fit_reward_model_is_normalised_on_the_given_samples(sft_and_pairs):
    sft, pairs = sft_and_pairs
    normalize_on = [(p["prompt"], p["chosen"]) for p in pairs["train"][:40]]
    rm = fit_reward_model(sft, pairs["train"][:32], normalize_on, steps=2)
    r = score(rm, *map(list, zip(*normalize_on)))
    assert float(r.mean()) == pytest.approx(0, abs=1e-4) and float(r.std()) == pytest.approx(1, abs=1e-3)


@pytest.mark.slow
def test_iterated_rlhf_labels_the_current_policy_each_round_and_leaves_sft_alone(sft_and_pairs):
    sft, pairs = sft_and_pairs
    before = {k: v.clone() for k, v in sft.state_dict().items()}
    normalize_on = [(p["prompt"], p["chosen"]) for p in pairs["train"][:16]]
    config = PPOConfig(iterations=4, batch_size=4, minibatches=2, max_new_tokens=16, beta=0.1)
    policy, history = iterated_rlhf(sft, reviews.prompts, reviews.gold_reward, rounds=2, label_budget=10, ppo=config,
                                    normalize_on=normalize_on, eval_prompts=reviews.prompts(4, seed=5),
                                    rm_steps=lambda n: 2, log=lambda line: None)
    assert [r["labels"] for r in history["rounds"]] == [5, 10]          # labels accumulate
    assert [r["iterations"] for r in history["rounds"]] == [2, 4]
    assert history["ppo"]["round"] == [0, 0, 1, 1] and len(history["ppo"]["gold"]) == 4
    assert all(torch.equal(v, sft.state_dict()[k]) for k, v in before.items())
    assert any(not torch.equal(v, before[k]) for k, v in policy.state_dict().items())


def test_policy_pairs_of_samples_that_never_end_fit_the_context_with_their_eos():
    """The reward model is fitted on these pairs: "BOS prompt response EOS" must fit even when no sample ended."""
    from minirlhf.data import encode_pairs
    from minirlhf.online import policy_pairs

    policy = never_ending_model(context_length=24)
    pairs = policy_pairs(policy, policy, reviews.prompts(6, seed=0), reviews.gold_reward, seed=0)
    for side in ("chosen", "rejected"):
        assert encode_pairs([(p["prompt"], p[side]) for p in pairs])[0].shape[1] == 24
