"""Sampling text from a policy: samples for evaluation, labelled pairs, and scored rollouts for RL.

Above `generation` (token ids in, token ids out) and `logprobs`: every trainer that learns from its
own samples (PPO, REINFORCE, and later RLOO, GRPO, online DPO) gets them here, with the same
`SamplingConfig`, so that the temperature that sampled a response is the one that scores it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from .generation import Generation, generate
from .logprobs import response_logprobs
from .preferences import DEFAULT_TEMPERATURE, label_pairs
from .tokenizer import TOKENIZER
from .utils import POSITIVE, POSITIVE_INT, check_settings, optional


@dataclass(frozen=True)
class SamplingConfig:
    """How responses are sampled, and so how their log-probabilities must be computed.

    max_new_tokens: the response budget; temperature and top_k: the sampling distribution
    (`logprobs.sampling_logits`), used for both sampling and scoring.
    """
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int | None = None

    def __post_init__(self):
        check_settings(type(self).__name__, self, SAMPLING_RULES)


# The rules of the sampling settings, shared by every config that samples (PPOConfig, ReinforceConfig, ...).
SAMPLING_RULES = {"max_new_tokens": POSITIVE_INT, "temperature": POSITIVE, "top_k": optional(POSITIVE_INT)}


# ---------------------------------------------------------------- text samples
@dataclass
class Sample:
    prompt: str
    response: str
    finished: bool   # emitted EOS within the token budget


def sample(model, prompt_texts: list[str], *, max_new_tokens: int | None = None, seed: int = 0,
           batch_size: int = 256, fit_with_eos: bool = False, **kwargs) -> list[Sample]:
    """Sample one response per prompt (kwargs as in `generate`), reproducibly from `seed`.

    max_new_tokens defaults to whatever the context leaves after the longest prompt. fit_with_eos: for responses
    that will be trained on or scored, which `data.encode_pairs` ends with EOS even when the sample never ended:
    each response is cut to what the context leaves after its own prompt and that EOS.
    """
    generator = torch.Generator().manual_seed(seed)
    context = model.config.context_length
    out = []
    for start in range(0, len(prompt_texts), batch_size):
        chunk = prompt_texts[start:start + batch_size]
        ids = [TOKENIZER.encode(p, bos=True) for p in chunk]
        budget = max_new_tokens or context - max(map(len, ids))
        gen = generate(model, ids, budget, generator=generator, **kwargs)
        for p, prompt_ids, r, done in zip(chunk, ids, gen.responses, gen.finished.tolist()):
            # Cut after sampling, not a smaller budget: only a sample that would not fit loses its last token, and
            # every draw (so every other sample of the run) stays what it was.
            r = r[:context - len(prompt_ids) - 1] if fit_with_eos else r
            out.append(Sample(p, TOKENIZER.decode(r), done))
    return out


def sample_preference_pairs(policy, prompts: list[str], gold_fn, temperature: float = DEFAULT_TEMPERATURE,
                            seed: int = 0) -> list[dict]:
    """Two responses per prompt sampled from `policy`, then labelled by the simulated human
    (preferences.label_pairs; gold_fn(prompt, response) is the hidden taste). Each pair fits the policy's context
    with its EOS, so a trainer can take it even where a sample never ended."""
    samples = sample(policy, prompts + prompts, seed=seed, fit_with_eos=True)
    n = len(prompts)
    return label_pairs(prompts, [s.response for s in samples[:n]], [s.response for s in samples[n:]],
                       gold_fn, temperature, seed=seed + 1)


# ---------------------------------------------------------------- rollouts
@dataclass
class Rollout:
    """What one batch of prompts produced, with everything that needs no gradient.

    prompts: the B prompt texts; generation: tokens, masks, P, finished (see generation.Generation);
    scores (B,): reward-model scores; ref_logprobs (B, N): log pi_ref of the response tokens.
    """

    prompts: list[str]
    generation: Generation
    scores: torch.Tensor
    ref_logprobs: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        return self.generation.response_mask

    def response_texts(self) -> list[str]:
        return [TOKENIZER.decode(r) for r in self.generation.responses]


def rollout(policy, reference, reward_model, prompt_texts: list[str], sampling: SamplingConfig,
            generator: torch.Generator) -> tuple[Rollout, float, float]:
    """Sample, then score with the reward model and the reference (no gradient).

    Returns (rollout, t_generate, t_score) with the two timings in seconds.
    """
    start = time.perf_counter()
    ids = [TOKENIZER.encode(p, bos=True) for p in prompt_texts]
    gen = generate(policy, ids, sampling.max_new_tokens, temperature=sampling.temperature, top_k=sampling.top_k,
                   generator=generator)
    t_generate = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        scores = one_score_per_row(reward_model(gen.tokens, gen.attention_mask), len(ids)).float()
        ref_logprobs, _ = response_logprobs(reference, gen.tokens, gen.attention_mask, gen.prompt_length,
                                            sampling.temperature, sampling.top_k)
    return Rollout(list(prompt_texts), gen, scores, ref_logprobs), t_generate, time.perf_counter() - start


def one_score_per_row(scores, rows: int) -> torch.Tensor:
    """A reward model's output, checked to be (rows,): a (B, 1) one would broadcast against the (B,) tensors it
    meets (B x B rewards) instead of failing."""
    shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
    if shape != (rows,):
        raise ValueError(f"the reward model returned {shape} for {rows} rows: it must return one scalar per row, a "
                         f"tensor of shape ({rows},); a head that outputs (B, 1) needs .squeeze(-1)")
    return scores


def prompt_source(prompts, batch_size: int, seed: int, generator: torch.Generator) -> Callable[[int], list[str]]:
    """iteration -> the batch's prompt texts. prompts: a list (sampled with replacement, from `generator`)
    or a function (n, seed) -> list, like a task's `prompts` (called with a per-iteration seed)."""
    if callable(prompts):
        return lambda it: list(prompts(batch_size, seed=seed * 1_000_003 + it))
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty: pass a list of prompt texts or a function (n, seed) -> prompts")
    return lambda it: [prompts[i] for i in torch.randint(len(prompts), (batch_size,), generator=generator)]
