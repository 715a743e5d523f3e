"""Measuring a policy against the hidden gold human: samples, grammar, format, accuracy, and an RL policy's
reward and KL. `sample` is sampling.sample, here too so that samples and their measures share one name space."""
from __future__ import annotations

import torch

from .logprobs import kl_k1, response_logprobs
from .sampling import Sample, SamplingConfig, rollout, sample
from .tasks import arithmetic, reviews, tool_arithmetic
from .tokenizer import TOKENIZER
from .tools import sample_text_with_tools

__all__ = ["Sample", "sample", "grammatical_rate", "format_rate", "mean_gold", "arithmetic_accuracy", "evaluate_policy",
           "tool_use_accuracy", "pass_at_k", "correct_counts", "majority_accuracy"]

TOOL_MAX_NEW_TOKENS = 40     # room for one call (18 tokens), its output (5), the answer and EOS, and a spare


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


def tool_use_accuracy(model, prompt_texts: list[str], *, use_tool: bool = True,
                      max_new_tokens: int = TOOL_MAX_NEW_TOKENS, batch_size: int = 256,
                      temperature: float | None = None, seed: int = 0) -> dict[str, dict[str, float]]:
    """Greedy accuracy and call rate on tool_arithmetic prompts, overall and for sums and products apart:
    {"all" | "sums" | "products": {"accuracy", "call_rate", "n"}}; call_rate = the share of responses with a call.
    temperature: sample at this temperature (seeded by seed) instead of greedy, e.g. 1.0 for what RL samples.

    use_tool=False samples with plain `generate`: the model alone, which must write a call's result itself
    (calls then count the closing tags it wrote). max_new_tokens is cut to what the model's context allows.
    """
    longest = max(len(TOKENIZER.encode(p, bos=True)) for p in prompt_texts)
    max_new_tokens = min(max_new_tokens, model.config.context_length - longest)
    greedy = temperature is None
    mode = {"greedy": True} if greedy else {"temperature": temperature}
    generator = None if greedy else torch.Generator().manual_seed(seed)
    responses, calls = [], []
    for i in range(0, len(prompt_texts), batch_size):
        chunk = prompt_texts[i:i + batch_size]
        if use_tool:
            texts, counts = sample_text_with_tools(model, chunk, max_new_tokens, generator=generator, **mode)
        else:
            texts = [s.response for s in sample(model, chunk, max_new_tokens=max_new_tokens, seed=seed, **mode)]
            counts = [tool_arithmetic.parse_response(t)[1] for t in texts]
        responses += texts
        calls += counts
    rows = [(tool_arithmetic.is_product(p), tool_arithmetic.verify(p, r), n > 0)
            for p, r, n in zip(prompt_texts, responses, calls)]
    out = {}
    for name, keep in (("all", lambda product: True), ("sums", lambda product: not product),
                       ("products", lambda product: product)):
        chosen = [(right, called) for product, right, called in rows if keep(product)]
        out[name] = {"accuracy": sum(r for r, _ in chosen) / max(len(chosen), 1),
                     "call_rate": sum(c for _, c in chosen) / max(len(chosen), 1), "n": len(chosen)}
    return out


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


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021): the chance that at least one
    of k samples drawn without replacement from the n is correct.

        pass@k = 1 - C(n - c, k) / C(n, k) = 1 - prod_{i = n - c + 1}^{n} (1 - k / i)

    The product form never builds the huge binomials. Needs 1 <= k <= n and 0 <= c <= n."""
    if not (1 <= k <= n and 0 <= c <= n):
        raise ValueError(f"pass@k needs 1 <= k <= n and 0 <= c <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    out = 1.0
    for i in range(n - c + 1, n + 1):
        out *= 1.0 - k / i
    return 1.0 - out


def correct_counts(model, prompt_texts: list[str], reward_fn, n: int, *, max_new_tokens: int, seed: int = 0,
                   temperature: float = 1.0) -> list[int]:
    """For each prompt, how many of n samples (at `temperature`) reward_fn(prompt, response) scores >= 1."""
    samples = sample(model, [p for p in prompt_texts for _ in range(n)], max_new_tokens=max_new_tokens, seed=seed,
                     temperature=temperature)
    ok = [s.finished and reward_fn(s.prompt, s.response) >= 1.0 for s in samples]
    return [sum(ok[i * n:(i + 1) * n]) for i in range(len(prompt_texts))]


def majority_accuracy(model, prompt_texts: list[str], reward_fn, k: int, *, max_new_tokens: int, seed: int = 0,
                      temperature: float = 1.0) -> float:
    """maj@k (self-consistency, Wang et al. 2023): sample k responses per prompt, take the most frequent finished
    response (the first sampled wins a tie; unfinished ones never vote) and score it with reward_fn >= 1.
    Returns the share of prompts whose vote is right."""
    samples = sample(model, [p for p in prompt_texts for _ in range(k)], max_new_tokens=max_new_tokens, seed=seed,
                     temperature=temperature)
    right = 0
    for i, prompt in enumerate(prompt_texts):
        votes: dict[str, int] = {}
        for s in samples[i * k:(i + 1) * k]:
            if s.finished:
                answer = s.response.strip()
                votes[answer] = votes.get(answer, 0) + 1
        if votes:
            winner = max(votes, key=votes.get)         # dicts keep insertion order: ties go to the first sampled
            right += reward_fn(prompt, winner) >= 1.0
    return right / len(prompt_texts)
