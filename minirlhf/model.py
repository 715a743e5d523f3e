"""A tiny GPT: the policy, the reference model and (with a ScalarHead) the reward and value models.

Shapes used throughout: B batch, T new tokens in this call, S = all positions so far (KV cache + the T
new ones), V vocabulary, d = d_model, H heads, D = d / H per-head width.

Padding convention: batched prompts are LEFT-padded, so every row's last column is its newest token.
An `attention_mask` (B, S), True on real tokens, tells the model which positions are padding.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    """Hyper-parameters of a GPT. Defaults are the course's laptop-sized model (~0.8M parameters)."""

    vocab_size: int = 57
    context_length: int = 128
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{f.name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}): "
                f"each head gets d_model / n_heads channels"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        """Plain dict (what a checkpoint stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        """Inverse of to_dict. Unknown keys are an error, so a typo in a checkpoint cannot pass silently."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown GPTConfig keys {sorted(unknown)}; expected a subset of {cls().to_dict()}")
        return cls(**d)


class KVCache:
    """Keys and values of every layer for all positions seen so far, preallocated once.

    keys[layer], values[layer]: (B, H, max_length, D); positions [0, length) are filled. Writing new
    entries in place (instead of torch.cat-ing a growing tensor at each step) means a decoding step
    allocates nothing and copies only the new token's keys and values.
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_length: int | None = None,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        max_length = config.context_length if max_length is None else max_length
        if not 1 <= max_length <= config.context_length:
            raise ValueError(f"KVCache max_length must be in 1..{config.context_length}, got {max_length}")
        shape = (batch_size, config.n_heads, max_length, config.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layers)]
        self.length = 0

    @property
    def max_length(self) -> int:
        return self.keys[0].shape[2]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, H, T, D) after the cached positions; return all keys, values (B, H, S, D).

        `length` is advanced by GPT.hidden_states once every layer has written, not here.
        """
        T = k.shape[2]
        self.keys[layer].narrow(2, self.length, T).copy_(k)
        self.values[layer].narrow(2, self.length, T).copy_(v)
        end = self.length + T
        return self.keys[layer].narrow(2, 0, end), self.values[layer].narrow(2, 0, end)


def attention_bias(attention_mask: torch.Tensor, start: int, T: int, dtype: torch.dtype) -> torch.Tensor:
    """The additive attention mask: (B, S) padding mask -> (B, 1, T, S), 0 = attend, -inf = don't.

    Query i sits at position start + i and may attend to key j if (j <= start + i and mask[b, j]) or
    j == start + i. The second term lets a padding query attend to itself: otherwise its row would
    have no allowed key and softmax would return NaN (0/0), which would spread through the gradients.
    Real tokens never attend to padding. Built once per forward and shared by all layers.
    """
    S = attention_mask.shape[1]
    q_pos = torch.arange(start, start + T, device=attention_mask.device).unsqueeze(1)
    k_pos = torch.arange(S, device=attention_mask.device)
    allowed = ((k_pos <= q_pos) & attention_mask.bool()[:, None, None, :]) | (k_pos == q_pos)
    return torch.where(allowed, 0.0, float("-inf")).to(dtype)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, S) mask -> (B, S) positions that skip padding: cumsum(mask) - 1, clamped at 0.

    A left-padded row then sees its first real token at position 0, exactly as without padding.
    """
    return (attention_mask.long().cumsum(1) - 1).clamp(min=0)


class CausalSelfAttention(nn.Module):
    """Multi-head attention: softmax(Q K^T / sqrt(D) + mask) V, per head, then an output projection.

    One fused Linear produces Q, K and V (one large matmul is faster than three small ones).
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, kv_cache: KVCache | None,
                layer: int) -> torch.Tensor:
        """x (B, T, d) -> (B, T, d). mask (B, 1, T, S) additive, or None for plain causal attention."""
        B, T, d = x.shape
        # Three (B, H, T, D) views into the qkv output, no copies; their gradients flow back with one cat.
        q, k, v = (t.view(B, T, self.n_heads, d // self.n_heads).transpose(1, 2) for t in self.qkv(x).split(d, -1))
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)
        # One fused kernel for softmax(Q K^T / sqrt(D) + mask) V that never stores the (T, S) attention
        # matrix. Without a mask, is_causal=True is its fast path for training (and the prefill).
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and T > 1)
        return self.proj(y.transpose(1, 2).reshape(B, T, d))


class MLP(nn.Module):
    """Position-wise feed-forward: W2 GELU(W1 x), with a 4x wider hidden layer."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, 4 * config.d_model, bias=False)
        self.proj = nn.Linear(4 * config.d_model, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(self, x, mask, kv_cache, layer):
        x = x + self.attn(self.ln_1(x), mask, kv_cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Decoder-only transformer: logits[b, t] = p(token t + 1 | tokens <= t), unnormalised.

    The LM head is tied to the token embedding (logits = h E^T): fewer parameters, and it helps small
    models. The Linear layers have no bias (as in PaLM and LLaMA): LayerNorm's bias already shifts
    every layer's input, and on a CPU the bias broadcasts and bias-gradient sums cost ~5% of a step.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.context_length, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.apply(_init_gpt2)
        # GPT-2: each block adds two residual branches, so shrink their output projections to keep the
        # residual stream's variance roughly independent of depth.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

    def forward(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None,
                kv_cache: KVCache | None = None) -> torch.Tensor:
        """idx (B, T) long -> logits (B, T, V). See hidden_states for the mask and the cache."""
        return F.linear(self.hidden_states(idx, attention_mask, kv_cache), self.tok_emb.weight)

    def hidden_states(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      kv_cache: KVCache | None = None) -> torch.Tensor:
        """idx (B, T) long -> final-LayerNorm output (B, T, d), what a reward or value head reads.

        attention_mask: (B, S) bool or 0/1 over ALL positions so far (cached + new), True = real token.
        With it, positions skip padding and padding keys are never attended to. Without it: plain
        causal attention, positions start, ..., start + T - 1 where start = cached length (0 if none).
        kv_cache: if given, the new keys/values are appended and attention covers everything so far.
        """
        start = 0 if kv_cache is None else kv_cache.length
        self._check_length(start + idx.shape[1], kv_cache)
        pos, mask = self._positions_and_mask(idx, attention_mask, start)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        for layer, block in enumerate(self.blocks):
            x = block(x, mask, kv_cache, layer)
        if kv_cache is not None:
            kv_cache.length = start + idx.shape[1]
        return self.ln_f(x)

    def _positions_and_mask(self, idx: torch.Tensor, attention_mask: torch.Tensor | None,
                            start: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Position ids, (T,) or (B, T), and the additive attention mask (B or 1, 1, T, S) or None.

        None means attention needs no explicit mask: SDPA's is_causal handles T new tokens when
        nothing precedes them, and a single new token may attend to everything cached.
        """
        B, T = idx.shape
        S = start + T
        dtype = self.tok_emb.weight.dtype
        if attention_mask is None:
            pos = torch.arange(start, S, device=idx.device)
            if start == 0 or T == 1:
                return pos, None
            return pos, attention_bias(torch.ones(1, S, dtype=torch.bool, device=idx.device), start, T, dtype)
        if attention_mask.shape != (B, S):
            raise ValueError(f"attention_mask must have shape (B, cached + new) = {(B, S)}, "
                             f"got {tuple(attention_mask.shape)}")
        return position_ids(attention_mask)[:, start:], attention_bias(attention_mask, start, T, dtype)

    def _check_length(self, S: int, kv_cache: KVCache | None) -> None:
        limit = self.config.context_length if kv_cache is None else kv_cache.max_length
        if S > limit:
            what = "model's context_length" if kv_cache is None else "KV cache's max_length"
            raise ValueError(
                f"sequence length {S} exceeds the {what} {limit}: shorten the prompt or reduce "
                f"max_new_tokens so that prompt + generated tokens <= {limit}"
            )


class ScalarHead(nn.Module):
    """One number per position: (B, T, d) hidden states -> (B, T), r = w . h + b.

    Reward head (default): w ~ N(0, std 1 / sqrt(d + 1)), b = 0, as in InstructGPT, so initial rewards
    have unit-ish scale. Value head (zero_init=True): w = b = 0, so PPO starts with V = 0 everywhere and
    the value loss does not kick the shared trunk with large random errors.
    """

    def __init__(self, d_model: int, zero_init: bool = False):
        super().__init__()
        self.linear = nn.Linear(d_model, 1)
        if zero_init:
            nn.init.zeros_(self.linear.weight)
        else:
            nn.init.normal_(self.linear.weight, std=1.0 / math.sqrt(d_model + 1))
        nn.init.zeros_(self.linear.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h).squeeze(-1)


def extend_context(model: GPT, context_length: int, new_rows: str = "fresh") -> GPT:
    """A copy of `model` whose position table has context_length rows (>= the model's). Rows [0, old)
    are the learned ones; every other weight is copied unchanged. The model has never seen the new
    positions, so their rows must be trained; they start as
      - "fresh": a fresh model's (N(0, 0.02));
      - "repeat": the learned rows again, position p as position p mod old (the RLAIF judge's start).
    """
    if new_rows not in ("fresh", "repeat"):
        raise ValueError(f"new_rows must be 'fresh' or 'repeat', got {new_rows!r}")
    old = model.config.context_length
    if context_length < old:
        raise ValueError(f"context_length {context_length} is shorter than the base model's {old}: this only "
                         f"extends it")
    config = GPTConfig.from_dict({**model.config.to_dict(), "context_length": context_length})
    longer = GPT(config).to(next(model.parameters()).device)
    state = dict(model.state_dict())
    learned = state["pos_emb.weight"]
    if new_rows == "repeat":
        pos = learned[torch.arange(context_length, device=learned.device) % old].clone()
    else:
        pos = longer.pos_emb.weight.detach().clone()
        pos[:old] = learned
    state["pos_emb.weight"] = pos
    longer.load_state_dict(state)
    return longer


def _init_gpt2(module: nn.Module) -> None:
    """GPT-2 init: weights ~ N(0, 0.02) (LayerNorm keeps its weight 1, bias 0)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)


def num_params(model: nn.Module) -> int:
    """Number of parameters (a tied weight is counted once)."""
    return sum(p.numel() for p in model.parameters())


def training_flops_per_token(config: GPTConfig, seq_len: int | None = None) -> int:
    """FLOPs of one training step (forward + backward) per token, PaLM-style: 6 N + 12 L d T.

    N counts only weights used in matrix multiplies: the blocks' Linear weights (12 d^2 per layer)
    plus the LM head (d V). Each such weight costs 2 FLOPs (multiply + add) per token forward and 4
    backward, hence 6 N. Embedding lookups, LayerNorms, GELU, softmax and the optimizer are not
    counted (they are memory-bound and comparatively cheap). 12 L d T is attention's Q K^T and
    (attention) V: 2 * 2 * T * d per token and layer forward, times 3 with backward; T = seq_len
    (default context_length), counting the full T x T matrix although the causal mask hides half.
    """
    T = config.context_length if seq_len is None else seq_len
    d, L = config.d_model, config.n_layers
    n_matmul = 12 * d * d * L + d * config.vocab_size
    return 6 * n_matmul + 12 * L * d * T
