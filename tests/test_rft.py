"""rft.py: rejection-sampling fine-tuning (sample, keep the verified answers, SFT on them) on tiny models."""
import pytest
import torch

from minirlhf.rft import RFTConfig, kept_responses, train_rft
from minirlhf.utils import seed_everything
from helpers import LEARN_PROMPT, early_and_late, tiny_models, train_tiny_policy


def starts_with_a(prompt: str, response: str) -> float:
    """1 if the response starts with "a": rare for a random tiny policy (about 1 answer in 30), so most
    groups hold no right answer at first."""
    return float(response.startswith("a"))


def rft_curve(config, seed=0, reward_fn=starts_with_a):
    return train_tiny_policy(train_rft, config, reward_fn, seed)


def test_kept_responses_keeps_the_right_ones_in_order_each_distinct_pair_once():
    prompts = ["p", "p", "p", "q", "q"]
    texts = ["1", "2", "1", "1", "1"]
    rewards = [1.0, 0.0, 1.0, 1.0, 0.5]
    assert kept_responses(prompts, texts, rewards, 1.0, deduplicate=True) == [("p", "1"), ("q", "1")]
    assert kept_responses(prompts, texts, rewards, 1.0, deduplicate=False) == [("p", "1"), ("p", "1"), ("q", "1")]
    assert kept_responses(prompts, texts, rewards, 0.5, deduplicate=True) == [("p", "1"), ("q", "1")]
    assert kept_responses(prompts, texts, [0.0] * 5, 1.0, deduplicate=True) == []


def test_rft_config_refuses_empty_batches():
    with pytest.raises(ValueError, match="num_generations"):
        RFTConfig(num_generations=0)


def test_train_rft_raises_the_reward_and_records_every_metric():
    config = RFTConfig(steps=40, prompts_per_step=4, num_generations=8, max_completion_length=6, lr=1e-2)
    history = rft_curve(config)
    first, last = early_and_late(history["reward"], k=5)
    assert last > first + 0.3 and last > 0.5, (first, last)
    for key in ("reward", "accuracy", "frac_reward_zero_std", "kept", "loss", "samples_seen", "samples"):
        assert len(history[key]) == 40, key
    assert history["samples_seen"][-1] == 40 * 4 * 8
    assert all(k <= 4 * 8 for k in history["kept"])


def test_a_step_with_nothing_right_changes_nothing():
    config = RFTConfig(steps=2, prompts_per_step=2, num_generations=4, max_completion_length=6)
    seed_everything(0, threads=1)
    policy, reference, _ = tiny_models(0)
    _, history = train_rft(policy, [LEARN_PROMPT], lambda p, r: 0.0, config)
    assert history["kept"] == [0, 0] and history["loss"] == [0.0, 0.0]
    assert all(torch.equal(a, b) for a, b in zip(policy.state_dict().values(), reference.state_dict().values()))


def test_eval_fn_is_called_before_every_eval_every_steps_and_at_the_end():
    config = RFTConfig(steps=5, prompts_per_step=2, num_generations=2, max_completion_length=4)
    seed_everything(0, threads=1)
    policy, _, _ = tiny_models(0)
    _, history = train_rft(policy, [LEARN_PROMPT], starts_with_a, config, eval_fn=lambda m: 0.5, eval_every=2)
    assert history["eval"] == [0.5] * 4 and history["eval_samples_seen"] == [0, 8, 16, 20]
