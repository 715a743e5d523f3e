"""dpo.py: the DPO trainer learns preferences, logs TRL's metrics, and fails where the theory says it does."""
import copy
import math
import random

import numpy as np
import pytest
import torch

from minirlhf import dpo
from minirlhf.dpo import DPOConfig, preference_bandit, train_dpo
from minirlhf.logprobs import text_logprobs
from minirlhf.tasks import reviews

from helpers import never_ending_model, tiny_model

TRL_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
               "logps/rejected", "loss")


def sentiment_pairs(nouns, n, seed):
    """Pairs that prefer a positive one-clause review of the prompt's noun to a negative one."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        noun = rng.choice(nouns)
        be = "were" if noun in reviews.PLURAL else "was"
        out.append({"prompt": reviews.make_prompt(noun), "chosen": f"the {noun} {be} {rng.choice(reviews.POSITIVE)}.",
                    "rejected": f"the {noun} {be} {rng.choice(reviews.NEGATIVE)}."})
    return out


def implicit_accuracy(policy, reference, pairs):
    """Share of pairs whose implicit reward log pi/pi_ref is higher for the chosen response."""
    prompts = [p["prompt"] for p in pairs]
    margin = sum(sign * (text_logprobs(policy, prompts, [p[side] for p in pairs])
                         - text_logprobs(reference, prompts, [p[side] for p in pairs]))
                 for sign, side in ((1, "chosen"), (-1, "rejected")))
    return float((margin > 0).double().mean())


def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="loss_type"):
        DPOConfig(loss_type="hinge")
    with pytest.raises(ValueError, match="label_smoothing"):
        DPOConfig(loss_type="ipo", label_smoothing=0.1)
    with pytest.raises(ValueError, match="beta"):
        DPOConfig(beta=0)
    with pytest.raises(ValueError, match="'prompt', 'chosen' and 'rejected'"):
        train_dpo(tiny_model(context_length=48), [{"prompt": "a", "chosen": "b"}], DPOConfig(steps=1))
    with pytest.raises(ValueError, match="eval_every needs"):
        train_dpo(tiny_model(context_length=48), sentiment_pairs(reviews.NOUNS, 4, 0), DPOConfig(steps=1, eval_every=1))


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "kto_pair"])
def test_train_dpo_learns_held_out_preferences(loss_type):
    train = sentiment_pairs(reviews.NOUNS[:14], 256, seed=0)
    test = sentiment_pairs(reviews.NOUNS[14:], 64, seed=1)               # nouns never seen in training
    policy = tiny_model(context_length=48)
    reference = copy.deepcopy(policy)
    assert implicit_accuracy(policy, reference, test) == 0.0              # pi = pi_ref: no margin anywhere
    history = train_dpo(policy, train, DPOConfig(loss_type=loss_type, beta=0.5, learning_rate=3e-3, steps=40,
                                                 batch_size=16), reference=reference)
    assert set(TRL_METRICS) <= set(history) and all(len(history[k]) == 40 for k in TRL_METRICS)
    if loss_type == "sigmoid":
        assert history["loss"][0] == pytest.approx(math.log(2), abs=1e-6)
    assert history["rewards/margins"][0] == pytest.approx(0.0, abs=1e-6)
    assert sum(history["rewards/accuracies"][-10:]) / 10 > 0.9
    assert implicit_accuracy(policy, reference, test) > 0.9


def test_precomputed_reference_log_probs_change_nothing_but_the_cost():
    pairs = sentiment_pairs(reviews.NOUNS, 64, seed=0)
    histories = []
    for precompute in (True, False):
        policy = tiny_model(context_length=48)
        histories.append(train_dpo(policy, pairs, DPOConfig(steps=5, batch_size=8, learning_rate=1e-3,
                                                            precompute_ref_log_probs=precompute)))
    for k in TRL_METRICS:    # step 0's margins are float rounding (pi = pi_ref), so its accuracy is noise
        assert histories[0][k][k == "rewards/accuracies":] == pytest.approx(histories[1][k][k == "rewards/accuracies":],
                                                                            rel=1e-4, abs=1e-5)


def test_metrics_follow_trl_definitions():
    beta = 0.3
    pc, pr = torch.tensor([-1.0, -5.0]), torch.tensor([-3.0, -2.0])
    rc, rr = torch.tensor([-2.0, -4.0]), torch.tensor([-2.0, -2.0])
    config = DPOConfig(beta=beta)
    m = dpo.dpo_metrics(config, pc, pr, rc, rr, dpo.pair_loss(config, pc, pr, rc, rr))
    assert m["rewards/chosen"] == pytest.approx(beta * (1 - 1) / 2)
    assert m["rewards/rejected"] == pytest.approx(beta * (-1 + 0) / 2)
    assert m["rewards/accuracies"] == 0.5                                   # pair 1: 0.3 > -0.3; pair 2: -0.3 < 0
    assert m["rewards/margins"] == pytest.approx(m["rewards/chosen"] - m["rewards/rejected"])
    assert m["logps/chosen"] == -3.0 and m["logps/rejected"] == -2.5


def test_an_sft_term_keeps_the_chosen_log_prob_up():
    pairs = sentiment_pairs(reviews.NOUNS, 128, seed=0)
    final = {}
    for alpha in (None, 1.0):
        policy = tiny_model(context_length=48)
        history = train_dpo(policy, pairs, DPOConfig(beta=0.5, learning_rate=3e-3, steps=30, batch_size=16,
                                                     rpo_alpha=alpha))
        final[alpha] = sum(history["logps/chosen"][-5:]) / 5
    assert final[1.0] > final[None] + 1.0


def test_gold_and_kl_of_a_policy_against_itself_has_zero_kl():
    policy = tiny_model(context_length=48)
    m = dpo.gold_and_kl(policy, policy, reviews.prompts(8, seed=0), reviews.gold_reward, max_new_tokens=12)
    assert m["kl"] == 0.0 and m["kl_se"] == 0.0
    assert set(m) == {"gold", "gold_se", "kl", "kl_se", "length", "finished"}


def test_eval_every_traces_gold_and_kl_along_the_run():
    history = train_dpo(tiny_model(context_length=48), sentiment_pairs(reviews.NOUNS, 32, 0),
                        DPOConfig(steps=4, batch_size=8, eval_every=2, eval_max_new_tokens=8),
                        gold_fn=reviews.gold_reward, eval_prompts=reviews.prompts(4, seed=0))
    assert history["eval/step"] == [0, 2, 4]
    assert history["eval/kl"][0] == 0.0 and history["eval/kl"][-1] != 0.0


def test_preference_bandit_dpo_margin_grows_without_bound_while_ipo_stops_at_half_over_beta():
    ipo = preference_bandit(DPOConfig(beta=0.1, loss_type="ipo"))
    assert ipo["margin"][-1] == pytest.approx(1 / (2 * 0.1), abs=1e-6)
    dpo_run = preference_bandit(DPOConfig(beta=0.1))
    assert dpo_run["margin"][-1] > 2 * ipo["margin"][-1] and dpo_run["margin"][-1] > dpo_run["margin"][-100] + 1
    assert dpo_run["kl"][-1] > ipo["kl"][-1]
    cdpo = preference_bandit(DPOConfig(beta=0.1, label_smoothing=0.1), steps=2000)
    assert cdpo["margin"][-1] == pytest.approx(math.log(0.9 / 0.1) / 0.1, rel=1e-3)   # sigma(beta h) = 1 - eps


def test_label_noise_rate_is_the_bradley_terry_flip_probability():
    pairs = [{"gold_chosen": 1.0, "gold_rejected": 0.0}, {"gold_chosen": -2.0, "gold_rejected": 0.0}]
    expected = (1 / (1 + math.exp(1 / 0.5)) + 1 / (1 + math.exp(2 / 0.5))) / 2
    assert dpo.label_noise_rate(pairs, 0.5) == pytest.approx(expected)


def test_online_dpo_labels_fresh_pairs_each_round():
    policy = tiny_model(context_length=48)
    out = dpo.online_dpo(policy, reviews.prompts, reviews.gold_reward,
                         DPOConfig(steps=2, batch_size=4, eval_max_new_tokens=8), rounds=2, pairs_per_round=4,
                         eval_prompts=reviews.prompts(4, seed=0))
    assert [r["labels"] for r in out["rounds"]] == [4, 8]
    assert len(out["steps"]["loss"]) == 4 and out["rounds"][-1]["kl"] != 0.0


def test_reference_log_probs_carried_by_the_pairs_are_used_as_they_are():
    pairs = sentiment_pairs(reviews.NOUNS, 8, seed=0)
    reference = tiny_model(context_length=48)
    carried = dpo.with_reference_logprobs(reference, pairs)
    chosen, rejected = dpo.reference_logprobs(tiny_model(seed=1, context_length=48), carried)   # another model: unused
    assert torch.allclose(chosen, dpo.reference_logprobs(reference, pairs)[0])
    assert chosen.dtype == torch.float32 and rejected.shape == (8,)


def test_length_grouped_batches_cover_every_row_once_with_similar_lengths():
    lengths = torch.randint(5, 140, (1000,), generator=torch.Generator().manual_seed(0))
    batches = dpo.length_grouped_batches(lengths, 16, torch.Generator().manual_seed(1), megabatch=10)
    assert sorted(torch.cat(batches).tolist()) == list(range(1000))
    spread = sum(float(lengths[b].max() - lengths[b].min()) for b in batches) / len(batches)
    assert spread < 30                                # random batches of 16 would spread about 110


def test_kto_reads_desirable_as_a_real_bool_and_refuses_what_is_not_one():
    assert [dpo.thumb(v, 0) for v in (True, False, "true", "false", "False", np.bool_(True))] == \
        [True, False, True, False, False, True]
    for bad in ("no", "0", 1, None, "yes"):
        with pytest.raises(ValueError, match=r"examples\[1\]\['desirable'\] is .*: it must be True or False"):
            dpo.train_kto(tiny_model(context_length=48), [{"prompt": "a", "response": "b", "desirable": True},
                                                          {"prompt": "a", "response": "c", "desirable": bad}],
                          DPOConfig(steps=1))


def test_online_dpo_samples_that_never_end_still_fit_the_context():
    """A sample of the longest prompt that never emits EOS used the whole context, then got EOS appended: one token
    too many for the model, in the middle of a run."""
    from minirlhf.data import encode_pairs
    from minirlhf.sampling import sample_preference_pairs

    policy = never_ending_model(context_length=24)
    pairs = sample_preference_pairs(policy, reviews.prompts(6, seed=0), reviews.gold_reward, seed=0)
    for side in ("chosen", "rejected"):        # every sample ran to the budget, and the longest fits exactly
        assert encode_pairs([(p["prompt"], p[side]) for p in pairs])[0].shape[1] == 24
    out = dpo.online_dpo(policy, reviews.prompts, reviews.gold_reward, DPOConfig(steps=1, batch_size=4), rounds=2,
                         pairs_per_round=6)
    assert len(out["steps"]["loss"]) == 2
