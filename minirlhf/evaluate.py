"""Measuring a policy against the hidden gold human: samples, grammar, format, accuracy, and an RL policy's
reward and KL. `sample` is sampling.sample, here too so that samples and their measures share one name space."""
from __future__ import annotations

import torch

from .logprobs import kl_k1, response_logprobs
from .sampling import Sample, SamplingConfig, rollout, sample
from .tasks import arithmetic, reviews

__all__ = ["Sample", "sample", "grammatical_rate", "format_rate", "mean_gold", "arithmetic_accuracy", "evaluate_policy"]


def grammatical_rate(samples: list[Sample]) -> float:
    """Share of samples that ended and parse under the reviews grammar."""
    return sum(s.finished and reviews.is_grammatical(s.response) for s in samples) / len(samples)


def format_rate(samples: list[Sample]) -> float:
    """Share of samples answering their 'review: <noun>' prompt in the SFT format."""
    return sum(reviews.follows_format(s.prompt, s.response, s.finished) for s in samples) / len(samples)


def mean_gold(samples: list[Sample]) -> float:
    """Mean gold reward (prompts are judged only if they are review prompts)."""
    def judge(s):
        return reviews.gold_reward(s.prompt if s.prompt.startswith("review:") else None, s.response)
    return sum(judge(s) for s in samples) / len(samples)


def arithmetic_accuracy(model, prompt_texts: list[str], *, raw: bool = False) -> float:
    """Greedy accuracy on 'q: a+b\\na: ' prompts. raw=True asks the base model its own way: 'a+b='."""
    if raw:
        problems = [arithmetic.parse_prompt(p) for p in prompt_texts]
        samples = sample(model, [f"{p.expression}=" for p in problems], max_new_tokens=4, greedy=True)
        return sum(s.finished and s.response.isdigit() and int(s.response) == p.answer
                   for s, p in zip(samples, problems)) / len(samples)
    samples = sample(model, prompt_texts, max_new_tokens=4, greedy=True)
    return sum(s.finished and arithmetic.verify(s.prompt, s.response) for s in samples) / len(samples)


@torch.no_grad()
def evaluate_policy(policy, reference, reward_model, prompt_texts: list[str], *,
                    max_new_tokens: int = 64, temperature: float = 1.0, gold_fn=None, seed: int = 0,
                    batch_size: int = 256) -> dict:
    """One sample per prompt: mean RM score ("proxy"), gold (if gold_fn(prompt, response)), KL (mean summed
    k1 vs the reference), response length and share finished. Deterministic in seed."""
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature)
    generator = torch.Generator().manual_seed(seed)
    sums = {"proxy": 0.0, "kl": 0.0, "length": 0.0, "finished": 0.0, "gold": 0.0}
    for s in range(0, len(prompt_texts), batch_size):
        r, _, _ = rollout(policy, reference, reward_model, prompt_texts[s:s + batch_size], sampling, generator)
        gen = r.generation
        logp, _ = response_logprobs(policy, gen.tokens, gen.attention_mask, gen.prompt_length, temperature)
        sums["proxy"] += float(r.scores.sum())
        sums["kl"] += float((kl_k1(logp, r.ref_logprobs) * r.mask).sum())
        sums["length"] += float(r.mask.sum())
        sums["finished"] += float(gen.finished.sum())
        if gold_fn is not None:
            sums["gold"] += sum(gold_fn(p, t) for p, t in zip(r.prompts, r.response_texts()))
    out = {k: v / len(prompt_texts) for k, v in sums.items()}
    if gold_fn is None:
        del out["gold"]
    return out
