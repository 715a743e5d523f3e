"""grpo.py: the group trainer (GRPO, Dr. GRPO, RLOO, dynamic sampling) on tiny models."""
import math

import pytest
import torch

from minirlhf import grpo
from minirlhf.grpo import GRPOConfig, dr_grpo_config, group_rollout, merge_groups, rloo_config, train_grpo
from minirlhf.losses import grpo_loss
from minirlhf.tokenizer import TOKENIZER
from helpers import early_and_late, tiny_models, train_tiny_policy
from minirlhf.utils import seed_everything


def letter_share(prompt: str, response: str) -> float:
    """The share of lowercase letters in the response (a random tiny policy: about 0.45)."""
    return sum(c.islower() for c in response) / max(1, len(response))


def tiny_grpo(**overrides):
    return GRPOConfig(**{**dict(steps=3, prompts_per_step=2, num_generations=4, max_completion_length=8, seed=0),
                         **overrides})


def grpo_curve(config, seed=0, reward_fn=letter_share):
    return train_tiny_policy(train_grpo, config, reward_fn, seed)


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


# ---------------------------------------------------------------- with a tool (notebook 16)
def _tool_rollout(mask_tool_output):
    from minirlhf import zoo
    from minirlhf.calculator import tool_output
    from minirlhf.tasks import tool_arithmetic

    policy = zoo.load("arithmetic-tool-sft")
    g = torch.Generator().manual_seed(0)
    return group_rollout(policy, ["q: 37*48\na: ", "q: 3+4\na: "], tool_arithmetic.make_reward(0.1), 4, 26, 1.0, g,
                         tool_output, mask_tool_output)[0]


def test_group_rollout_with_a_tool_leaves_the_tools_output_out_of_the_loss_mask():
    r = _tool_rollout(True)
    assert r.generation.tool_calls[:4].tolist() == [1, 1, 1, 1]       # the tool model calls on every product
    gen = r.generation
    for row in range(4):
        assert "1776" in r.texts[row] and r.rewards[0, row] == pytest.approx(0.9)
        response = gen.tokens[row, gen.prompt_length:]
        text_at = lambda cols: TOKENIZER.decode(response[cols].tolist())
        unmasked = gen.response_mask[row] & ~r.loss_mask[row]
        assert text_at(unmasked) == "1776\n"                          # exactly the tool's output is left out
        assert text_at(r.loss_mask[row]).startswith("<calc>37*48</calc>")
    for row in range(4, 8):                                           # a row without a call keeps every token
        if gen.tool_calls[row] == 0:
            assert torch.equal(r.loss_mask[row], gen.response_mask[row])
    bug = _tool_rollout(False)                                        # the bug notebook 16 reproduces
    assert torch.equal(bug.loss_mask, bug.generation.response_mask)


@pytest.mark.slow
def test_train_grpo_with_a_tool_learns_when_a_call_pays():
    """Sums, where the SFT model calls about a tenth of the time at T = 1 and is right more often with a call
    than without: at c = 0 calling is learned (0.09 -> 0.8 in 16 steps here), at c = 2 (a call scores -1 at
    best) it is dropped. The tool's output is masked; the calls' own tokens are trained on."""
    from minirlhf import zoo
    from minirlhf.calculator import tool_output
    from minirlhf.tasks import tool_arithmetic

    threads = torch.get_num_threads()
    curves = {}
    try:
        for cost in (0.0, 2.0):
            seed_everything(0, threads=1)
            config = GRPOConfig(steps=16, prompts_per_step=8, num_generations=8, max_completion_length=26, lr=1e-3,
                                success_reward=-1.0)
            _, history = train_grpo(zoo.load("arithmetic-tool-sft"), tool_arithmetic.prompts(200, seed=3, product_share=0.0),
                                    tool_arithmetic.make_reward(cost), config, tool=tool_output)
            curves[cost] = history["tool_calls"]
    finally:
        torch.set_num_threads(threads)
    (free_early, free_late), (_, dear_late) = early_and_late(curves[0.0], 4), early_and_late(curves[2.0], 4)
    assert free_early < 0.4 and free_late > 0.6 and dear_late < 0.02, curves


def test_the_length_bandit_shows_grpos_length_bias_and_dr_grpo_without_it():
    """Length earns nothing; only the aggregation differs. Per-sequence mean: wrong answers grow (2 -> 5.6),
    right ones shrink to 1 token; Dr. GRPO's constant normaliser leaves both at about 2."""
    biased, constant = grpo.length_bandit("grpo"), grpo.length_bandit("dr_grpo")
    assert biased["expected_wrong"] > 4.5 and biased["expected_right"] < 1.2
    assert abs(constant["expected_wrong"] - 2) < 0.3 and abs(constant["expected_right"] - 2) < 0.3
    assert len(biased["length_wrong"]) == 300 and sum(biased["length_wrong"][-20:]) / 20 > sum(biased["length_wrong"][:20]) / 20 + 2
    with pytest.raises(ValueError, match="loss_type"):
        grpo.length_bandit("token")
