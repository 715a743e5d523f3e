"""Sampling from a GPT: a batch of prompts in, a batch of responses (with every mask PPO needs) out.

Prompts have different lengths, so they are LEFT-padded: the newest token of every row is then in the
last column and one forward step extends all rows at once. With a KV cache each step feeds only the
newest token; without it each step recomputes the whole context (slower, kept as the baseline).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .logprobs import sampling_logits
from .model import GPT, KVCache
from .tokenizer import EOS_ID, PAD_ID


@dataclass
class Generation:
    """A batch of prompts and their sampled continuations. P = padded prompt width, N = generated steps.

    tokens:         (B, P + N) long, left-padded prompt then response; PAD after a row's EOS.
    attention_mask: (B, P + N) bool, True on real tokens (prompt, response, and the EOS itself).
    prompt_length:  P, so responses are tokens[:, P:].
    response_mask:  (B, N) bool, True on generated real tokens (incl. EOS): where PPO's losses apply.
    finished:       (B,) bool, True if the row emitted EOS.
    """

    tokens: torch.Tensor
    attention_mask: torch.Tensor
    prompt_length: int
    response_mask: torch.Tensor
    finished: torch.Tensor

    @property
    def response_tokens(self) -> torch.Tensor:
        """(B, N) the generated ids, PAD after EOS."""
        return self.tokens[:, self.prompt_length:]

    @property
    def responses(self) -> list[list[int]]:
        """Each row's generated ids without PAD (EOS kept if emitted)."""
        return [row[keep].tolist() for row, keep in zip(self.response_tokens, self.response_mask)]


def pick_next_token(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                    greedy: bool = False, generator: torch.Generator | None = None,
                    pad_id: int = PAD_ID) -> torch.Tensor:
    """(B, V) logits -> (B,) next token ids: argmax if greedy, else a sample from sampling_logits."""
    if greedy:
        return sampling_logits(logits, pad_id=pad_id).argmax(-1)
    probs = F.softmax(sampling_logits(logits, temperature, top_k, pad_id), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def left_pad(prompts: list[list[int]], width: int, pad_id: int = PAD_ID,
             device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts -> tokens (B, width) long and attention_mask (B, width) bool, each prompt right-aligned.

    Columns after the longest prompt are left as PAD / False, room for the tokens still to generate.
    """
    tokens = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(prompts), width), dtype=torch.bool, device=device)
    P = max(len(p) for p in prompts)
    for row, prompt in enumerate(prompts):
        tokens[row, P - len(prompt):P] = torch.tensor(prompt, dtype=torch.long)
        mask[row, P - len(prompt):P] = True
    return tokens, mask


def generate(model: GPT, prompts: list[list[int]], max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, greedy: bool = False, use_cache: bool = True,
             generator: torch.Generator | None = None, eos_id: int | None = EOS_ID,
             pad_id: int = PAD_ID) -> Generation:
    """Continue each prompt (a list of ids starting with BOS) by up to max_new_tokens tokens.

    At each step: logits (B, V) of the last position -> next token, the argmax if greedy, else drawn
    from softmax(sampling_logits(logits, temperature, top_k)). PPO must score the tokens with that
    same temperature, or its probability ratios compare against a distribution that never produced
    them. A row that has emitted eos_id is finished: it then gets PAD, masked out. Generation stops
    early once every row is finished, so N <= max_new_tokens; eos_id=None never stops (benchmarks).
    use_cache=False recomputes the full context each step; greedy outputs are identical either way.
    Sampling draws from `generator`, so the same seeded generator gives the same samples.
    """
    _check_generate_args(model, prompts, max_new_tokens, temperature, top_k)
    P = max(len(p) for p in prompts)
    param = next(model.parameters())
    # inference_mode skips all autograd bookkeeping (~10% faster than no_grad at batch 1), but its
    # tensors can never enter autograd: the results are cloned out of it below.
    with torch.inference_mode():
        tokens, attention_mask = left_pad(prompts, P + max_new_tokens, pad_id, param.device)
        cache = KVCache(model.config, len(prompts), P + max_new_tokens, param.dtype, param.device) if use_cache else None
        finished = torch.zeros(len(prompts), dtype=torch.bool, device=param.device)
        # Equal-length prompts need no attention mask: the PAD a finished row gets only changes that
        # row's own later outputs, which are discarded. Skipping the mask saves ~20% of a step at batch 1.
        model_mask = attention_mask if any(len(p) < P for p in prompts) else None
        length = P
        while length < P + max_new_tokens and not finished.all():
            logits = next_token_logits(model, tokens, model_mask, length, cache)
            token = pick_next_token(logits, temperature=temperature, top_k=top_k, greedy=greedy,
                                    generator=generator, pad_id=pad_id).masked_fill(finished, pad_id)
            tokens[:, length] = token
            attention_mask[:, length] = ~finished
            if eos_id is not None:
                finished |= token == eos_id
            length += 1
    # Ordinary tensors again, so PPO can feed them to a model that needs gradients.
    tokens, attention_mask = tokens[:, :length].clone(), attention_mask[:, :length].clone()
    return Generation(tokens, attention_mask, P, attention_mask[:, P:], finished.clone())


def next_token_logits(model: GPT, tokens: torch.Tensor, attention_mask: torch.Tensor | None, length: int,
                      cache: KVCache | None) -> torch.Tensor:
    """Logits (B, V) predicting position `length` from tokens[:, :length] (and attention_mask, if any).

    With a cache only the positions not yet cached are fed (the whole prompt at the first step, then
    one token); without one the whole context is recomputed.
    """
    start = 0 if cache is None else cache.length
    mask = None if attention_mask is None else attention_mask[:, :length]
    return model(tokens[:, start:length], mask, cache)[:, -1]


def sample_text(model: GPT, tokenizer, prompt_texts: list[str], max_new_tokens: int, **kwargs) -> list[str]:
    """Strings in, strings out: encode with BOS, generate (kwargs as in generate), decode the responses."""
    prompts = [tokenizer.encode(text, bos=True) for text in prompt_texts]
    return [tokenizer.decode(r) for r in generate(model, prompts, max_new_tokens, **kwargs).responses]


def _check_generate_args(model, prompts, max_new_tokens, temperature, top_k) -> None:
    if not prompts:
        raise ValueError("prompts is empty: pass a list of prompts (each a list of token ids)")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (start prompts with BOS)")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; for deterministic decoding use greedy=True")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or None for no top-k filtering), got {top_k}")
    total, limit = max(len(p) for p in prompts) + max_new_tokens, model.config.context_length
    if total > limit:
        raise ValueError(
            f"longest prompt + max_new_tokens = {total} exceeds the model's context_length {limit}: "
            f"shorten the prompt or reduce max_new_tokens"
        )
