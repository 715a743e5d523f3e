"""Preference labels from the gold human, with Bradley-Terry noise, and the best accuracy possible on them.

A simulated human compares responses a and b with gold rewards g_a, g_b and prefers a with probability

    P(a > b) = sigma((g_a - g_b) / temperature)

Temperature 0 is a perfectly consistent human; a large temperature is a coin flip. Because the labels
are noisy, no reward model can predict all of them: the Bayes-optimal predictor says "a" whenever
P(a > b) > 1/2 and is right with probability max(p, 1 - p). Its mean over the pairs is the ceiling
any reward model's accuracy on these labels can reach.
"""
from __future__ import annotations

import math

import torch

# The simulated human's noise throughout the course: a gold margin of 1 is preferred 73% of the time.
DEFAULT_TEMPERATURE = 1.0


def _as_tensor(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def bt_probability(gold_a, gold_b, temperature: float) -> torch.Tensor:
    """P(a preferred over b) = sigma((g_a - g_b) / temperature); shapes (N,) -> (N,).

    temperature 0 gives the noiseless order (1, 0, or 1/2 for a tie).
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    diff = _as_tensor(gold_a) - _as_tensor(gold_b)
    if temperature == 0:
        return 0.5 * (1 + torch.sign(diff))
    return torch.sigmoid(diff / temperature)


def sample_bt_labels(gold_a, gold_b, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """Draw labels y ~ Bernoulli(P(a > b)); y = 1 means the human preferred a. Shapes (N,) -> (N,) long."""
    p = bt_probability(gold_a, gold_b, temperature)
    return (torch.rand(p.shape, generator=generator, dtype=torch.float64) < p).long()


def bayes_optimal_accuracy(gold_a, gold_b, temperature: float) -> float:
    """Expected accuracy of the best possible predictor on labels drawn at this temperature.

    mean over pairs of max(p, 1 - p), p = P(a > b): the ceiling for any reward model's accuracy.
    """
    p = bt_probability(gold_a, gold_b, temperature)
    return float(torch.maximum(p, 1 - p).mean())


def finite_gold(gold_fn, prompt: str, response: str):
    """gold_fn(prompt, response), returned unchanged if it is a finite number, else a ValueError that names them.

    A NaN compares false with everything, so the human would "prefer b" on every such pair, silently."""
    gold = gold_fn(prompt, response)
    if not math.isfinite(gold):
        raise ValueError(f"the gold reward of the response {response!r} to the prompt {prompt!r} is {gold}, not a "
                         "finite number, so no preference can be drawn from it: fix gold_fn for this response, or leave "
                         "the pair out")
    return gold


def label_pairs(prompts: list[str], responses_a: list[str], responses_b: list[str], gold_fn,
                temperature: float = DEFAULT_TEMPERATURE, seed: int = 0) -> list[dict]:
    """Let the simulated human compare each (a, b) and return the labelled pairs.

    Each pair is a dict {prompt, chosen, rejected, gold_chosen, gold_rejected}: "chosen" is what the
    noisy human preferred, which need not be the one with the higher gold reward.
    gold_fn(prompt, response) -> float is the hidden taste (e.g. reviews.gold_reward); a gold reward that is
    NaN or infinite raises ValueError naming the response and its prompt.
    """
    gold_a = [finite_gold(gold_fn, p, a) for p, a in zip(prompts, responses_a)]
    gold_b = [finite_gold(gold_fn, p, b) for p, b in zip(prompts, responses_b)]
    prefers_a = sample_bt_labels(gold_a, gold_b, temperature, torch.Generator().manual_seed(seed)).tolist()
    pairs = []
    for p, a, b, ga, gb, first in zip(prompts, responses_a, responses_b, gold_a, gold_b, prefers_a):
        (c, gc), (r, gr) = ((a, ga), (b, gb)) if first else ((b, gb), (a, ga))
        pairs.append({"prompt": p, "chosen": c, "rejected": r, "gold_chosen": gc, "gold_rejected": gr})
    return pairs
