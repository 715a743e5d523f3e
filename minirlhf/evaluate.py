"""Measuring a policy against the hidden gold human: samples, grammar, format, accuracy."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .generation import generate
from .tasks import arithmetic, reviews
from .tokenizer import TOKENIZER


@dataclass
class Sample:
    prompt: str
    response: str
    finished: bool   # emitted EOS within the token budget


def sample(model, prompt_texts: list[str], *, max_new_tokens: int | None = None, seed: int = 0,
           batch_size: int = 256, **kwargs) -> list[Sample]:
    """Sample one response per prompt (kwargs as in `generate`), reproducibly from `seed`.

    max_new_tokens defaults to whatever the context leaves after the longest prompt.
    """
    generator = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, len(prompt_texts), batch_size):
        chunk = prompt_texts[start:start + batch_size]
        ids = [TOKENIZER.encode(p, bos=True) for p in chunk]
        budget = max_new_tokens or model.config.context_length - max(map(len, ids))
        gen = generate(model, ids, budget, generator=generator, **kwargs)
        for p, r, done in zip(chunk, gen.responses, gen.finished.tolist()):
            out.append(Sample(p, TOKENIZER.decode(r), done))
    return out


def grammatical_rate(samples: list[Sample]) -> float:
    """Share of samples that ended and parse under the reviews grammar."""
    return sum(s.finished and reviews.is_grammatical(s.response) for s in samples) / len(samples)


def format_rate(samples: list[Sample]) -> float:
    """Share of samples answering their 'review: <noun>' prompt in the SFT format."""
    return sum(reviews.follows_format(s.prompt, s.response, s.finished) for s in samples) / len(samples)


def mean_gold(samples: list[Sample]) -> float:
    """Mean gold reward (prompts are judged only if they are review prompts)."""
    def judge(s):
        return reviews.gold_reward(s.response, s.prompt if s.prompt.startswith("review:") else None)
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
