"""Log-probabilities of responses: the one place PPO, REINFORCE, best-of-N, DPO, GRPO and the judge get them.

Every RL-style algorithm needs log pi(y_t | x, y_<t) of the tokens a policy sampled, under exactly the
distribution it sampled them from (same temperature, same top-k, PAD banned), with the prompt and
the padding masked out. The functions here do that once:

- `sampling_logits`: raw logits -> the logits `generate` samples from (temperature applied here, once);
- `logprobs_from_logits`: per-token log pi and entropy, masked, finite on padding;
- `response_logprobs`: the same straight from a model and a left-padded Generation (one forward pass);
- `sequence_logprobs`, `text_logprobs`: summed log pi(y | x) of right-padded "BOS prompt response EOS"
  rows (with gradient, for DPO's policy) or of texts (no gradient, for a reference or best-of-N);
- `kl_k1`, `kl_k3`: per-token KL estimators; `last_token_index`, `gather_last`: the last real token.

Gradient: these functions never detach. Wrap a call in `torch.no_grad()` for a reference model or a
rollout's old log-probs (`text_logprobs` does so itself).

Shapes: B rows, T tokens per row, P padded prompt width, N response tokens, V vocabulary.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import encode_pairs
from .tokenizer import PAD_ID, TOKENIZER


def sampling_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                    pad_id: int = PAD_ID) -> torch.Tensor:
    """(..., V) raw logits -> logits of the distribution `generate` samples from.

    p(token) = softmax(logits / temperature), with PAD banned (it only fills batches and is never a
    real token) and, if top_k, everything but the k largest logits removed (set to -inf).
    PPO must compute its log-probabilities with this same function and temperature: its ratios
    pi_new / pi_old and its KL penalty are only correct for the distribution the samples came from.
    """
    logits = logits / temperature
    logits[..., pad_id] = float("-inf")
    if top_k is not None and top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    return logits


def logprobs_from_logits(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                         temperature: float = 1.0, top_k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(target) and the entropy of pi, per position, under the distribution `generate` samples from.

        pi = softmax(sampling_logits(logits, temperature, top_k))
        logp[b, t] = log pi(targets[b, t] | ...)        H[b, t] = -sum_v pi(v) log pi(v)

    logits (B, N, V) predict targets (B, N); mask (B, N) bool. Returns (logp, entropy), both (B, N),
    0 where mask is False (the PAD after EOS has probability 0 and must not enter any sum).
    The temperature MUST be the sampling temperature: a ratio or a KL against another distribution
    than the one that produced the samples is simply wrong (and makes the KL rise too fast).
    """
    logp_all = F.log_softmax(sampling_logits(logits, temperature, top_k), dim=-1)
    # Padding targets (PAD, probability 0) are swapped for a finite stand-in, then zeroed by the mask.
    safe = torch.where(mask, targets, logp_all.argmax(-1))
    logp = logp_all.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    # 0 * log 0 = 0 for banned tokens (PAD, top-k): zero the -inf first so neither value nor grad is NaN
    finite = logp_all.masked_fill(torch.isinf(logp_all), 0.0)
    entropy = -(logp_all.exp() * finite).sum(-1)
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    return torch.where(mask, logp, zero), torch.where(mask, entropy, zero)


def response_logprobs(model, tokens: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int,
                      temperature: float = 1.0, top_k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logp, entropy), each (B, N): log pi of the response tokens tokens[:, P:] and pi's entropy there.

    tokens, attention_mask (B, P + N) as in a Generation (left-padded prompt, response, PAD after EOS);
    prompt_length = P. Logits at position t predict token t + 1, so the response's N tokens are
    predicted by positions P - 1 ... P + N - 2 and the last column is never fed. One forward pass.
    """
    logits = model(tokens[:, :-1], attention_mask[:, :-1])[:, prompt_length - 1:]
    return logprobs_from_logits(logits, tokens[:, prompt_length:], attention_mask[:, prompt_length:],
                                temperature, top_k)


def response_mask(tokens: torch.Tensor, prompt_lengths: torch.Tensor, finished: torch.Tensor | None = None,
                  pad_id: int = PAD_ID) -> torch.Tensor:
    """(B, T) bool: the response tokens (EOS included) of right-padded rows "BOS prompt response EOS PAD...".

        mask[b, t] = t >= prompt_lengths[b] and tokens[b, t] != PAD

    finished (B,) bool, optional: rows False never emitted EOS (they were cut at the token budget), so
    their last real token is a response token that was encoded as EOS by `encode_pairs`: it is left out.
    """
    positions = torch.arange(tokens.size(1), device=tokens.device)[None, :]
    real = tokens != pad_id
    mask = (positions >= prompt_lengths[:, None]) & real
    if finished is not None:
        is_eos = positions == real.sum(1, keepdim=True) - 1
        mask &= ~(is_eos & ~finished.to(tokens.device).view(-1, 1).bool())
    return mask


def sequence_logprobs(model, tokens: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0,
                      top_k: int | None = None, dtype: torch.dtype | None = None, pad_id: int = PAD_ID) -> torch.Tensor:
    """(B,) log pi(y | x) = sum_t mask[b, t] log pi(tokens[b, t] | tokens[b, <t]) of right-padded rows.

    tokens (B, T) "BOS prompt response EOS PAD..." (as `data.encode_pairs` makes them); mask (B, T) bool,
    True on the tokens to score (see `response_mask`). With gradient unless called under no_grad: DPO
    calls it on the policy with gradient and on the reference without. dtype: cast the logits first
    (float64 for exact sums of many small numbers).
    """
    logits = model(tokens, tokens != pad_id)[:, :-1]
    if dtype is not None:
        logits = logits.to(dtype)
    return logprobs_from_logits(logits, tokens[:, 1:], mask[:, 1:], temperature, top_k)[0].sum(1)


@torch.no_grad()
def text_logprobs(policy, prompts: list[str], responses: list[str], finished: torch.Tensor | None = None,
                  batch_size: int = 256) -> torch.Tensor:
    """(N,) float64: log pi(y | x) = sum_t log pi(y_t | x, y_<t) of each whole response, EOS included.

    Per-token log-probabilities at temperature 1 (PAD banned), the distribution that `generate` samples
    from; texts in, where `response_logprobs` takes a Generation. finished (N,) bool: rows False did not
    emit EOS, so EOS is not counted. Rows are batched by length (little padding per batch).
    """
    tokens, prompt_lengths = encode_pairs(list(zip(prompts, responses)))
    mask = response_mask(tokens, prompt_lengths, finished)
    lengths = (tokens != TOKENIZER.pad_id).sum(1)
    order = torch.argsort(lengths, stable=True)
    device = next(policy.parameters()).device
    out = torch.empty(len(prompts), dtype=torch.float64)
    for i in range(0, len(prompts), batch_size):
        rows = order[i:i + batch_size]
        width = int(lengths[rows].max())
        out[rows] = sequence_logprobs(policy, tokens[rows, :width].to(device), mask[rows, :width].to(device),
                                      dtype=torch.float64).cpu()
    return out


# ---------------------------------------------------------------- KL estimators
def kl_k1(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """k1 = log pi(x) - log pi_ref(x), per sampled token (any shape).

    E_{x ~ pi}[k1] = KL(pi || pi_ref) exactly (unbiased), but a single sample can be negative and
    its variance is high. The per-token RLHF penalty uses k1: summed over a response it is the
    log-ratio of the whole sequence, whose expectation is the sequence-level KL.
    """
    return logp - logp_ref


def kl_k3(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """k3 = (r - 1) - log r with r = pi_ref(x) / pi(x), per sampled token (any shape).

    Computed as expm1(x) - x with x = logp_ref - logp: exact for tiny x (where r - 1 - log r would
    cancel to 0 or go negative by rounding) and >= 0 always, since e^x >= 1 + x. Unbiased
    (E_pi[r] = 1) and lower variance than k1 when pi and pi_ref are close (Schulman's blog "Approximating
    KL divergence"). Large x overflows to +inf in float32 (x > ~88): a real, huge divergence.
    """
    x = logp_ref - logp
    return torch.expm1(x) - x


# ---------------------------------------------------------------- the last real token
def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) mask, True on real tokens -> (B,) long, the column of each row's last real token.

        index[b] = max { t : attention_mask[b, t] }

    Right for left padding (T - 1), right padding (sum(mask) - 1) and rows with padding on both sides.
    """
    positions = torch.arange(attention_mask.size(1), device=attention_mask.device)
    index = torch.where(attention_mask.bool(), positions, -1).max(1).values
    if (index < 0).any():
        raise ValueError("a row of attention_mask has no real token: every sequence needs at least one")
    return index


def gather_last(values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """values (B, T), attention_mask (B, T) -> (B,) each row's value at its last real token."""
    return values.gather(1, last_token_index(attention_mask)[:, None]).squeeze(1)
