"""grpo.py: the group trainer (GRPO, Dr. GRPO, RLOO, dynamic sampling) on tiny models."""
import math

import pytest
import torch

from minirlhf import grpo
from minirlhf.grpo import GRPOConfig, dr_grpo_config, group_rollout, merge_groups, rloo_config, train_grpo
from minirlhf.losses import grpo_loss
from minirlhf.tokenizer import TOKENIZER
from helpers import LEARN_PROMPT, early_and_late, tiny_models
from minirlhf.utils import seed_everything


def letter_share(prompt: str, response: str) -> float:
    """The share of lowercase letters in the response (a random tiny policy: about 0.45)."""
    return sum(c.islower() for c in response) / max(1, len(response))


def tiny_grpo(**overrides):
    return GRPOConfig(**{**dict(steps=3, prompts_per_step=2, num_generations=4, max_completion_length=8, seed=0),
                         **overrides})


def grpo_curve(config, seed=0, reward_fn=letter_share):
    threads = torch.get_num_threads()
    try:
        seed_everything(seed, threads=1)
        policy, _, _ = tiny_models(seed)
        _, history = train_grpo(policy, [LEARN_PROMPT], reward_fn, config)
    finally:
        torch.set_num_threads(threads)
    return history


@pytest.mark.parametrize("make", [GRPOConfig, dr_grpo_config, rloo_config])
def test_train_grpo_end_to_end_every_metric_every_step(make):
    config = make(**dict(steps=3, prompts_per_step=2, num_generations=4, max_completion_length=8, beta=0.1,
                         num_iterations=2))
    history = grpo_curve(config)
    for key in ("reward", "accuracy", "reward_std", "frac_reward_zero_std", "completion_length", "loss", "clip_ratio",
                "entropy", "kl", "samples_seen", "groups_used", "t_generate", "t_score", "t_update"):
        assert len(history[key]) == 3 and all(math.isfinite(x) for x in history[key]), key
    assert history["samples_seen"] == [8, 16, 24]
    assert history["kl"][0] == pytest.approx(0.0, abs=1e-6)
    assert len(history["samples"][0]) == 3 and history["config"]["num_generations"] == 4


def test_grpo_config_bad_options_say_what_is_allowed():
    for bad in (dict(loss_type="bnpo"), dict(scale_rewards="std"), dict(baseline="median"), dict(num_generations=1),
                dict(baseline="none")):
        with pytest.raises(ValueError):
            GRPOConfig(**bad)


# ---------------------------------------------------------------- it learns
# The share of lowercase letters (~0.45 for the random tiny policy): each method raises it to > 0.8 in 15 steps
# of 4 groups of 8; with the loss's sign flipped it falls. Moves of ~0.4 against a noise of ~0.03.
LEARN = dict(steps=15, prompts_per_step=4, num_generations=8, max_completion_length=10, lr=1e-2)


@pytest.mark.parametrize("make", [GRPOConfig, dr_grpo_config, rloo_config])
def test_train_grpo_raises_a_fixed_reward(make):
    first, last = early_and_late(grpo_curve(make(**LEARN))["reward"])
    assert last > first + 0.3 and last > 0.8, (first, last)


def test_train_grpo_with_a_flipped_loss_lowers_the_reward(monkeypatch):
    monkeypatch.setattr(grpo, "grpo_loss", lambda *a, **k: -grpo_loss(*a, **k))
    first, last = early_and_late(grpo_curve(GRPOConfig(**LEARN))["reward"])
    assert last < first - 0.25, (first, last)


# ---------------------------------------------------------------- groups with nothing to teach
def test_zero_variance_groups_are_counted_and_give_no_update():
    history = grpo_curve(tiny_grpo(), reward_fn=lambda p, r: 1.0)
    assert history["frac_reward_zero_std"] == [1.0, 1.0, 1.0]
    assert history["loss"] == [0.0, 0.0, 0.0]


def test_dynamic_sampling_draws_more_groups_until_the_batch_teaches():
    def coin(prompt, response):          # reward depends on the first letter: some groups mixed, some not
        return float(response[:1] < "m")
    plain = grpo_curve(tiny_grpo(num_generations=2, prompts_per_step=4), reward_fn=coin)
    dynamic = grpo_curve(tiny_grpo(num_generations=2, prompts_per_step=4, dynamic_sampling=True), reward_fn=coin)
    assert dynamic["samples_seen"][-1] > plain["samples_seen"][-1]
    assert all(g == 4 for g in dynamic["groups_used"]) or dynamic["samples_seen"][-1] == 3 * 8 * 4
    # all-equal groups are never trained on: with an all-equal reward nothing is left to train on
    none = grpo_curve(tiny_grpo(dynamic_sampling=True, max_resample_rounds=2), reward_fn=lambda p, r: 0.0)
    assert none["groups_used"] == [0, 0, 0] and none["samples_seen"] == [24, 48, 72]


def test_merge_groups_repacks_rows_of_different_prompt_widths():
    seed_everything(0)
    policy, _, _ = tiny_models()
    g = torch.Generator().manual_seed(0)
    a, _, _ = group_rollout(policy, ["q: 1+2\na: ", "q: 10+20\na: "], letter_share, 2, 5, 1.0, g)
    b, _, _ = group_rollout(policy, ["q: 1+1\na: "], letter_share, 2, 3, 1.0, g)
    m = merge_groups([(a, torch.tensor([False, True])), (b, torch.tensor([True]))])
    assert m.prompts == ["q: 10+20\na: "] * 2 + ["q: 1+1\na: "] * 2
    assert m.texts == a.texts[2:] + b.texts
    torch.testing.assert_close(m.rewards, torch.cat([a.rewards[1:], b.rewards]))
    gen = m.generation
    for row, (p, t) in enumerate(zip(m.prompts, m.texts)):
        real = gen.tokens[row][gen.attention_mask[row]].tolist()
        assert TOKENIZER.decode(real[1:]).startswith(p) and m.loss_mask[row].sum() == gen.response_mask[row].sum()


# ---------------------------------------------------------------- the verifier as a reward model (for PPO)
def test_verifier_reward_scores_left_padded_rows_like_the_reward_fn():
    from minirlhf.generation import left_pad
    from minirlhf.grpo import VerifierReward
    from minirlhf.tasks import arithmetic
    pairs = [("q: 2+3\na: ", "5"), ("q: 23+48\na: ", "61"), ("q: 50+50\na: ", "100")]
    rows = [TOKENIZER.encode(p + r, bos=True) + [TOKENIZER.eos_id] for p, r in pairs]
    tokens, mask = left_pad(rows, max(map(len, rows)) + 2)           # PAD after the longest row too
    scores = VerifierReward(arithmetic.reward, "\na: ")(tokens, mask)
    assert scores.tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="prompt end"):
        VerifierReward(arithmetic.reward, "=")(tokens, mask)
