"""sampling.py: the sampling config, text samples, labelled pairs, scored rollouts and prompt sources."""
import dataclasses

import pytest
import torch

from minirlhf.generation import generate
from minirlhf.logprobs import response_logprobs
from minirlhf.ppo import PPOConfig
from minirlhf.reinforce import ReinforceConfig
from minirlhf.sampling import SamplingConfig, prompt_source, rollout, sample, sample_preference_pairs
from minirlhf.tasks import reviews
from minirlhf.tokenizer import TOKENIZER
from helpers import tiny_models

PROMPTS = ["review: soup\n", "review: fries\n", "review: tea\n"]


def test_sampling_config_defaults_is_frozen_and_comes_from_the_trainer_configs():
    assert SamplingConfig() == SamplingConfig(max_new_tokens=64, temperature=1.0, top_k=None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        SamplingConfig().temperature = 0.5
    want = SamplingConfig(max_new_tokens=9, temperature=0.7, top_k=5)
    assert PPOConfig(max_new_tokens=9, temperature=0.7, top_k=5).sampling == want
    assert ReinforceConfig(max_new_tokens=9, temperature=0.7, top_k=5).sampling == want


def test_rollout_scores_with_the_reward_model_and_the_reference_under_the_sampling_distribution():
    policy, reference, rm = tiny_models()
    with torch.no_grad():
        for p in reference.parameters():        # a reference that differs from the policy
            p.add_(0.1 * torch.randn_like(p))
    sampling = SamplingConfig(max_new_tokens=7, temperature=0.8, top_k=20)
    r, t_generate, t_score = rollout(policy, reference, rm, PROMPTS, sampling, torch.Generator().manual_seed(3))
    gen = r.generation
    B, N = len(PROMPTS), gen.tokens.shape[1] - gen.prompt_length
    assert r.prompts == PROMPTS and t_generate >= 0 and t_score >= 0
    assert gen.prompt_length == max(len(TOKENIZER.encode(p, bos=True)) for p in PROMPTS) and 1 <= N <= 7
    assert r.scores.shape == (B,) and r.ref_logprobs.shape == r.mask.shape == (B, N)
    assert r.mask is gen.response_mask and r.response_texts() == [TOKENIZER.decode(x) for x in gen.responses]
    # the samples are generate's, from the same generator, at the config's temperature and top-k
    want = generate(policy, [TOKENIZER.encode(p, bos=True) for p in PROMPTS], 7, temperature=0.8, top_k=20,
                    generator=torch.Generator().manual_seed(3))
    assert torch.equal(gen.tokens, want.tokens) and torch.equal(gen.finished, want.finished)
    with torch.no_grad():
        torch.testing.assert_close(r.scores, rm(gen.tokens, gen.attention_mask))
        ref, _ = response_logprobs(reference, gen.tokens, gen.attention_mask, gen.prompt_length, 0.8, 20)
        own, _ = response_logprobs(policy, gen.tokens, gen.attention_mask, gen.prompt_length, 0.8, 20)
    torch.testing.assert_close(r.ref_logprobs, ref)
    assert not torch.allclose(r.ref_logprobs, own)          # the reference's log-probs, not the policy's
    assert not r.ref_logprobs.requires_grad and not r.scores.requires_grad
    assert (r.ref_logprobs[~r.mask] == 0).all() and (r.ref_logprobs[r.mask] < 0).all()


def test_prompt_source_draws_from_a_list_or_calls_a_function_with_a_seed_per_iteration():
    generator = torch.Generator().manual_seed(0)
    draw = prompt_source(PROMPTS, 8, seed=0, generator=generator)
    batch = draw(0)
    assert len(batch) == 8 and set(batch) <= set(PROMPTS)
    again = prompt_source(PROMPTS, 8, seed=0, generator=torch.Generator().manual_seed(0))
    assert again(0) == batch                                  # reproducible from the generator
    calls = []

    def prompts(n, seed):
        calls.append((n, seed))
        return [f"review: {seed}\n"] * n

    draw = prompt_source(prompts, 4, seed=2, generator=generator)
    assert draw(5) == ["review: 2000011\n"] * 4 and draw(6) != draw(5)
    assert calls[0] == (4, 2 * 1_000_003 + 5)
    batch = prompt_source(reviews.prompts, 4, seed=1, generator=generator)(0)
    assert len(batch) == 4 and all(p.startswith("review: ") for p in batch)
    with pytest.raises(ValueError, match="empty"):
        prompt_source([], 4, seed=0, generator=generator)


def test_sample_is_one_reproducible_response_per_prompt():
    policy, _, _ = tiny_models()
    out = sample(policy, PROMPTS, max_new_tokens=6, seed=1)
    assert [s.prompt for s in out] == PROMPTS
    assert all(len(TOKENIZER.encode(s.response)) <= 6 for s in out)
    assert [(s.response, s.finished) for s in sample(policy, PROMPTS, max_new_tokens=6, seed=1)] == \
        [(s.response, s.finished) for s in out]
    assert [s.response for s in sample(policy, PROMPTS, max_new_tokens=6, seed=2)] != [s.response for s in out]


def test_sample_preference_pairs_labels_two_samples_of_each_prompt():
    policy, _, _ = tiny_models()
    pairs = sample_preference_pairs(policy, PROMPTS, reviews.gold_reward, seed=4)
    assert [p["prompt"] for p in pairs] == PROMPTS
    for p in pairs:
        assert set(p) == {"prompt", "chosen", "rejected", "gold_chosen", "gold_rejected"}
        assert p["gold_chosen"] == reviews.gold_reward(p["prompt"], p["chosen"])
        assert p["gold_rejected"] == reviews.gold_reward(p["prompt"], p["rejected"])
    assert sample_preference_pairs(policy, PROMPTS, reviews.gold_reward, seed=4) == pairs
