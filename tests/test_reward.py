"""The Bradley-Terry reward model: losses, reading the last real token, normalisation, training, checks."""
import math
import random

import pytest
import torch

from minirlhf import zoo
from minirlhf.generation import left_pad
from minirlhf.model import GPT, GPTConfig
from minirlhf.preferences import bt_probability
from minirlhf.reward import (RewardModel, as_triples, calibration_bins, encode_responses, evaluate_reward_model,
                             expected_accuracy, normalize_, pairwise_accuracy, preference_accuracy, reward_step,
                             score, train_reward_model)
from minirlhf.tasks import reviews
from minirlhf.tokenizer import PAD_ID, TOKENIZER
from minirlhf.utils import seed_everything


def test_score_batches_by_length_but_keeps_the_original_order():
    rm = tiny_rm().eval()
    prompts = ["review: soup\n", "review: fries\n", "review: cake\n", "review: view\n"]
    responses = ["the soup was warm and the staff were lovely.", "i hated the fries.",
                 "the cake was great.", ""]
    one_by_one = torch.cat([score(rm, [p], [r]) for p, r in zip(prompts, responses)])
    assert torch.allclose(score(rm, prompts, responses, batch_size=2), one_by_one, atol=1e-5)
    with pytest.raises(ValueError, match="one prompt per response"):
        score(rm, prompts, responses[:2])


TINY = dict(vocab_size=TOKENIZER.vocab_size, context_length=96, d_model=32, n_layers=1, n_heads=2)


def tiny_rm(seed=0):
    seed_everything(seed)
    return RewardModel(GPTConfig(**TINY))


def test_reward_is_read_at_the_last_real_token_whatever_the_padding():
    rm = tiny_rm()
    ids = [TOKENIZER.encode("review: soup\nthe soup was warm.", bos=True, eos=True),
           TOKENIZER.encode("review: cake\nthe cake was stale.", bos=True, eos=True)]
    right, right_mask = encode_responses(["review: soup\n", "review: cake\n"], ["the soup was warm.", "the cake was stale."])
    left, left_mask = left_pad(ids, max(map(len, ids)) + 3)     # left-padded, then 3 columns of right padding
    r = rm(right, right_mask)
    assert torch.allclose(rm(left, left_mask), r, atol=1e-5)
    # the value of a pad token and the amount of padding do not matter
    noisy = right.masked_fill(~right_mask, 17)
    wider = torch.cat([right, torch.full((2, 4), PAD_ID)], 1)
    assert torch.allclose(rm(noisy, right_mask), r, atol=1e-6)
    assert torch.allclose(rm(wider, wider != PAD_ID), r, atol=1e-5)
    # but the last real token does
    assert not torch.allclose(rm(right[:, :-1], right_mask[:, :-1]), r)


def test_from_policy_copies_the_trunk_and_checkpoints_round_trip(tmp_path, monkeypatch):
    seed_everything(3)
    policy = GPT(GPTConfig(**TINY))
    rm = RewardModel.from_policy(policy)
    for name, p in policy.state_dict().items():
        assert torch.equal(rm.gpt.state_dict()[name], p)
    with torch.no_grad():
        rm.scale.fill_(2.0)
        rm.bias.fill_(-0.5)
    monkeypatch.setitem(zoo.MODEL_KINDS, "reward", RewardModel)
    zoo.save_checkpoint(tmp_path / "rm.pt", rm, name="rm", kind="reward")
    loaded, _ = zoo.load_checkpoint(tmp_path / "rm.pt")
    assert isinstance(loaded, RewardModel) and not loaded.training
    assert loaded.scale.item() == 2.0 and loaded.bias.item() == -0.5          # the normalisation is saved
    tokens, mask = encode_responses(["review: staff\n"], ["i loved the staff."])
    assert torch.equal(loaded(tokens, mask), rm(tokens, mask))


def test_normalize_gives_mean_zero_std_one_on_the_reference():
    rm = tiny_rm(1)
    rng = random.Random(0)
    prompts = reviews.prompts(40, seed=2)
    responses = [reviews.sample_review(rng, topic=reviews.prompt_topic(p), max_sentences=1) for p in prompts]
    tokens, mask = encode_responses(prompts, responses)
    normalize_(rm, tokens, mask, batch_size=16)
    std, mean = torch.std_mean(score(rm, prompts, responses, batch_size=7))
    assert mean.item() == pytest.approx(0.0, abs=1e-5) and std.item() == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------- metrics
def test_pairwise_accuracy_counts_ties_half():
    assert pairwise_accuracy(torch.tensor([1.0, 0.0, 2.0, 5.0]), torch.tensor([0.0, 1.0, 2.0, 1.0])) == pytest.approx(0.625)


def test_calibration_bins():
    p = torch.tensor([0.05, 0.15, 0.12, 0.95, 1.0, 0.5])
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    mean_pred, freq, count = calibration_bins(p, y, n_bins=4)
    assert count.tolist() == [3, 0, 1, 2]                                   # 1.0 falls in the last bin
    assert torch.allclose(mean_pred[[0, 2, 3]], torch.tensor([0.32 / 3, 0.5, 0.975], dtype=torch.float64))
    assert torch.allclose(freq[[0, 2, 3]], torch.tensor([1 / 3, 0.0, 1.0], dtype=torch.float64))
    assert mean_pred[1].isnan() and freq[1].isnan()                         # empty bin: nothing to plot


def test_expected_accuracy_hand_values_and_ceiling():
    p_a = torch.tensor([0.9, 0.6, 0.2, 0.5], dtype=torch.float64)
    # predicts a, a, a, tie -> 0.9, 0.6, 0.2 and 1/2
    assert expected_accuracy(torch.tensor([1.0, 2, 3, 0]), torch.tensor([0.0, 1, 2, 0]), p_a) == pytest.approx((0.9 + 0.6 + 0.2 + 0.5) / 4)
    # the Bayes predictor (prefer a exactly when p_a > 1/2) reaches mean max(p, 1 - p), nothing does better
    bayes = expected_accuracy(p_a, 1 - p_a, p_a)
    assert bayes == pytest.approx(float(torch.maximum(p_a, 1 - p_a).mean()))
    for _ in range(20):
        r = torch.randn(4)
        assert expected_accuracy(r, torch.zeros(4), p_a) <= bayes + 1e-12


def test_evaluate_reward_model_on_a_model_that_knows_the_gold_taste(monkeypatch):
    """A 'reward model' that returns the gold reward reaches the ceiling and orders every pair like gold."""
    pairs = [{"prompt": "p", "chosen": c, "rejected": r, "gold_chosen": gc, "gold_rejected": gr}
             for c, r, gc, gr in [("a", "b", 1.0, 0.0), ("c", "d", -1.0, 0.5), ("e", "f", 2.0, -2.0), ("g", "h", 0.0, 0.0)]]
    gold = {p[k]: p["gold_" + k] for p in pairs for k in ("chosen", "rejected")}
    monkeypatch.setattr("minirlhf.reward.score", lambda rm, prompts, responses, batch_size=256:
                        torch.tensor([gold[r] for r in responses]))
    result = evaluate_reward_model(None, pairs, temperature=1.0)
    p = bt_probability([1.0, -1.0, 2.0, 0.0], [0.0, 0.5, -2.0, 0.0], 1.0)
    assert result["bayes_ceiling"] == pytest.approx(float(torch.maximum(p, 1 - p).mean()))
    assert result["ratio"] == pytest.approx(1.0)
    assert result["gold_order_accuracy"] == 1.0          # the gold tie is left out
    assert result["accuracy"] == pytest.approx(2.5 / 4)   # the labels: one pair went against gold, one tie
    assert as_triples(pairs[:1]) == [("p", "a", "b")]


# ---------------------------------------------------------------- training
def gold_pairs(n, seed):
    """(prompt, chosen, rejected): two one-sentence reviews of the prompt's topic, the gold human's favourite first."""
    rng = random.Random(seed)
    pairs = []
    while len(pairs) < n:
        topic = rng.choice(reviews.NOUNS)
        a, b = (reviews.sample_review(rng, topic=topic, max_sentences=1) for _ in range(2))
        ga, gb = reviews.gold_reward(None, a), reviews.gold_reward(None, b)
        if ga != gb:
            pairs.append((reviews.make_prompt(topic),) + ((a, b) if ga > gb else (b, a)))
    return pairs


@pytest.mark.slow
def test_a_tiny_reward_model_learns_the_gold_taste():
    train, held_out = gold_pairs(2000, seed=0), gold_pairs(200, seed=1)
    rm = tiny_rm()
    assert abs(preference_accuracy(rm, held_out) - 0.5) < 0.15            # untrained: about a coin flip
    history = train_reward_model(rm, train, steps=80, batch_size=32, lr=3e-3, eval_pairs=held_out, eval_every=40)
    assert len(history["loss"]) == len(history["accuracy"]) == len(history["lr"]) == 80
    assert [step for step, _ in history["eval"]] == [40, 80]
    assert sum(history["loss"][-10:]) / 10 < math.log(2) - 0.3
    assert history["eval"][-1][1] > 0.8 and not rm.training


def test_reward_step_returns_floats_and_stops_on_a_nonfinite_loss():
    rm = tiny_rm()
    tokens, mask = encode_responses(["review: soup\n"] * 2, ["i loved the soup.", "i hated the soup and the staff."])
    optimizer = torch.optim.SGD(rm.parameters(), lr=0.1)
    loss, accuracy = reward_step(rm, optimizer, tokens, mask, grad_clip=1.0)      # 1 pair: row 0 chosen, row 1 rejected
    assert isinstance(loss, float) and accuracy in (0.0, 1.0)
    with torch.no_grad():
        rm.scale.fill_(math.nan)                      # as a diverged model would give
    with pytest.raises(FloatingPointError, match="reward model loss became nan at step 7"):
        reward_step(rm, optimizer, tokens, mask, grad_clip=1.0, step=7)


def test_training_refuses_pairs_longer_than_the_context():
    with pytest.raises(ValueError, match="context"):
        train_reward_model(tiny_rm(), [("review: soup\n", "the soup was warm." * 9, "x")], steps=1)
