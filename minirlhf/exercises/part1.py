"""Checks of Part I's exercises (notebooks 01-05: RL basics, toy worlds, the transformer, pretraining, SFT)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .. import losses, preferences
from ..advantages import discounted_returns
from ..model import GPT, Block, GPTConfig, attention_bias
from ..tokenizer import TOKENIZER
from ..train import sft_step
from .engine import ExerciseError, describe, mistaken_step, run_check, seeded

# ---------------------------------------------------------------- 01 RL basics
def check_discounted_returns(fn: Callable) -> Callable:
    """fn(rewards (T,), gamma) -> returns (T,) with G_t = r_t + gamma * G_{t+1}."""
    g = seeded(1)
    cases = [
        ("three steps, gamma 0.5", (torch.tensor([1.0, 0.0, 2.0]), 0.5)),
        ("reward only at the end, gamma 0.9", (torch.tensor([0.0, 0.0, 0.0, 1.0]), 0.9)),
        ("random rewards, gamma 1", (torch.randn(7, generator=g), 1.0)),
        ("random rewards, gamma 0", (torch.randn(5, generator=g), 0.0)),
    ]
    mistakes = {
        "your returns run forward in time: G_t sums the rewards from t to the END, so loop backwards.":
            lambda r, gamma: discounted_returns(r.flip(-1), gamma).flip(-1),
        "you returned the plain sum for every step: each step's return only counts rewards from that step on.":
            lambda r, gamma: torch.full_like(r, float(discounted_returns(r, gamma)[0])),
        "you discounted the first reward too: G_t = r_t + gamma * G_{t+1}, r_t itself is not discounted.":
            lambda r, gamma: gamma * discounted_returns(r, gamma),
    }
    return run_check("discounted_returns", fn, discounted_returns, cases, mistakes)


def check_reinforce_loss(fn: Callable) -> Callable:
    """fn(logprobs (N,), returns (N,), baseline) -> scalar loss whose gradient is minus the policy gradient.

        L = -mean_i [ log pi(a_i) * (G_i - b_i) ],   dL/d logprobs_i = -(G_i - b_i) / N

    The gradient is compared too: it must reach the log-probs and nothing else, since (G - b) is a
    constant (a baseline from a value network must not be trained by the policy's loss)."""
    g = seeded(2)
    lp = -torch.rand(6, generator=g) * 3
    ret = torch.randn(6, generator=g)
    cases = [
        ("no baseline", (lp, ret, 0.0)),
        ("scalar baseline 0.5", (lp, ret, 0.5)),
        ("per-sample baseline", (lp, ret, torch.randn(6, generator=g))),
    ]
    mistakes = {
        "the sign is flipped: optimisers MINIMISE the loss, and we want to MAXIMISE E[log pi * (G - b)], so L = -mean(...).":
            lambda lp, r, b: -losses.reinforce_loss(lp, r, b),
        "the baseline is not subtracted: use (G - b).":
            lambda lp, r, b: losses.reinforce_loss(lp, r, 0.0),
        "use the mean over samples, not the sum.":
            lambda lp, r, b: losses.reinforce_loss(lp, r, b) * lp.numel(),
    }
    grad_mistakes = {
        "gradient flows into the returns (and the baseline). Treat (G - b) as a constant: .detach() it.":
            lambda lp, r, b: -(lp * (r - b)).mean(),
    }
    return run_check("reinforce_loss", fn, losses.reinforce_loss, cases, mistakes,
                     grad_args={0: "logprobs", 1: "returns", 2: "baseline"}, grad_mistakes=grad_mistakes)


# ---------------------------------------------------------------- 02 toy worlds
def check_bayes_optimal_accuracy(fn: Callable) -> Callable:
    """fn(gold_a (N,), gold_b (N,), temperature) -> float, the mean of max(p, 1 - p)."""
    g = seeded(3)
    a, b = torch.randn(50, generator=g) * 2, torch.randn(50, generator=g) * 2
    cases = [
        ("one pair, margin 1, temperature 1", (torch.tensor([1.0]), torch.tensor([0.0]), 1.0)),
        ("the order of a and b does not matter", (torch.tensor([0.0]), torch.tensor([1.0]), 1.0)),
        ("50 random pairs, temperature 0.5", (a, b, 0.5)),
        ("50 random pairs, temperature 3", (a, b, 3.0)),
    ]
    mistakes = {
        "you averaged P(a > b) itself: the best predictor picks the more likely side, so it is right with max(p, 1 - p).":
            lambda a, b, t: float(preferences.bt_probability(a, b, t).mean()),
        "the temperature is missing: p = sigmoid((g_a - g_b) / temperature).":
            lambda a, b, t: preferences.bayes_optimal_accuracy(a, b, 1.0) if t != 1.0 else float("nan"),
        "you multiplied by the temperature: p = sigmoid((g_a - g_b) / temperature).":
            lambda a, b, t: preferences.bayes_optimal_accuracy(a * t * t, b * t * t, t),
    }
    # the notebook prints, compares and plots the ceiling: a 0-d tensor does all of that as well as a float
    return run_check("bayes_optimal_accuracy", fn, preferences.bayes_optimal_accuracy, cases, mistakes, atol=1e-6,
                     scalar_tensor_ok=True)


# ---------------------------------------------------------------- 03 the tiny transformer
def reference_attention(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def check_causal_attention(fn: Callable) -> Callable:
    """fn(q, k, v each (B, H, T, D)) -> (B, H, T, D) = softmax(q k^T / sqrt(D) + causal mask) v.

    The model trains through it: the gradients with respect to q, k and v are compared too."""
    g = seeded(4)

    def qkv(*shape):
        return tuple(torch.randn(*shape, generator=g) for _ in range(3))

    cases = [("B=1, H=1, T=4, D=8", qkv(1, 1, 4, 8)), ("B=2, H=3, T=5, D=16", qkv(2, 3, 5, 16)),
             ("a single position", qkv(1, 2, 1, 4))]
    scale = lambda q: q.size(-1) ** -0.5  # noqa: E731
    mistakes = {
        "position t sees the future: mask out keys after t (the causal mask is lower-triangular).":
            lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
        "the scores are not scaled by 1/sqrt(D).":
            lambda q, k, v: F.scaled_dot_product_attention(q * q.size(-1) ** 0.5, k, v, is_causal=True),
        "the mask is the wrong way round: each position may attend to itself and EARLIER positions.":
            lambda q, k, v: (torch.softmax((q @ k.transpose(-2, -1) * scale(q)).masked_fill(
                torch.ones(q.size(-2), q.size(-2), dtype=torch.bool).tril(-1), float("-inf")), -1) @ v),
        "the softmax runs over the queries: normalise over the keys (the last dimension).":
            lambda q, k, v: (torch.softmax((q @ k.transpose(-2, -1) * scale(q)).masked_fill(
                ~torch.ones(q.size(-2), q.size(-2), dtype=torch.bool).tril(), float("-inf")), -2).nan_to_num() @ v),
    }
    return run_check("causal_attention", fn, reference_attention, cases, mistakes, atol=1e-5,
                     grad_args={0: "q", 1: "k", 2: "v"})


def _fresh(build: Callable):
    """build() with the caller's global RNG state restored afterwards (module constructors draw from it)."""
    state = torch.get_rng_state()
    try:
        return build()
    finally:
        torch.set_rng_state(state)


def reference_block_forward(block, x, mask):
    return block(x, mask, None, 0)


class _Applied(torch.nn.Module):
    """block_forward(block, x, mask) as a module, so that torch.func.functional_call can run it with the
    block's parameters replaced by given tensors (whose gradients the check then compares)."""

    def __init__(self, block_forward: Callable, block: Block):
        super().__init__()
        self.block_forward, self.block = block_forward, block

    def forward(self, x, mask):
        return self.block_forward(self.block, x, mask)


def _on_parameters(block_forward: Callable, block: Block, names: list[str]) -> Callable:
    """block_forward as a function of (x, mask, *parameters), the parameters in the order of names."""
    applied = _Applied(block_forward, block)

    def run(x, mask, *parameters):
        values = {f"block.{name}": p for name, p in zip(names, parameters)}
        return torch.func.functional_call(applied, values, (x, mask))
    return run


def _block_variant(*, post_norm=False, attn_residual=True, mlp_residual=True, one_norm=False, use_mask=True,
                   parallel=False, normed_residual=False) -> Callable:
    """The block's forward with one known mistake switched on (for the check's hints)."""
    def forward(block, x, mask):
        ln_2 = block.ln_1 if one_norm else block.ln_2
        attn = lambda u: block.attn(u, mask if use_mask else None, None, 0)  # noqa: E731
        if post_norm:
            x = block.ln_1(x + attn(x))
            return ln_2(x + block.mlp(x))
        h = block.ln_1(x)
        a = attn(h)
        y = (h if normed_residual else x) + a if attn_residual else a
        m = block.mlp(ln_2(x if parallel else y))
        return y + m if mlp_residual else m
    return forward


def check_block_forward(fn: Callable) -> Callable:
    """fn(block, x (B, T, d), mask (B, 1, T, T) additive or None) -> (B, T, d), the pre-LayerNorm block:

        x <- x + block.attn(block.ln_1(x), mask, None, 0);   out = x + block.mlp(block.ln_2(x))

    Compared with the package's Block on left-padded rows (the mask of model.attention_bias) and on plain
    causal attention (mask None), values and gradients with respect to the input and every parameter of
    the block (LayerNorm scales and shifts drawn at random, so that ln_1 and ln_2 differ)."""
    g = seeded(6)
    config = GPTConfig(vocab_size=TOKENIZER.vocab_size, context_length=8, d_model=16, n_layers=1, n_heads=2)
    block = _fresh(lambda: Block(config))
    names = [name for name, _ in block.named_parameters()]

    def parameters():
        """Random values for every parameter: weights of a trained block's size, norms away from (1, 0)."""
        out = []
        for name, p in block.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            out.append(1 + 0.3 * noise if name.endswith("ln_1.weight") or name.endswith("ln_2.weight")
                       else 0.2 * noise if "ln_" in name else noise / p.shape[-1] ** 0.5)
        return out

    B, T = 3, 6
    padded = torch.arange(T)[None, :] >= torch.tensor([0, 2, 3])[:, None]       # rows left-padded by 0, 2, 3
    cases = [
        ("3 left-padded rows of 6 positions, d = 16, 2 heads",
         (torch.randn(B, T, 16, generator=g), attention_bias(padded, 0, T, torch.float32), *parameters())),
        ("plain causal attention (mask None), 2 rows of 5", (torch.randn(2, 5, 16, generator=g), None, *parameters())),
    ]
    mistakes = {
        "that is the post-norm block (normalise the sum): pre-norm normalises the INPUT of each branch and adds the "
        "branch to the raw stream, x + attn(ln_1(x)).": _block_variant(post_norm=True),
        "the residual of the attention is missing: x = x + block.attn(...), not x = block.attn(...).":
            _block_variant(attn_residual=False),
        "the residual of the MLP is missing: return x + block.mlp(block.ln_2(x)).": _block_variant(mlp_residual=False),
        "both residuals are missing: each sub-layer ADDS to the stream, x = x + sublayer(norm(x)).":
            _block_variant(attn_residual=False, mlp_residual=False),
        "ln_1 is used twice: the MLP has its own LayerNorm, block.ln_2 (with its own learned scale and shift).":
            _block_variant(one_norm=True),
        "the attention ignores the mask: pass it on, block.attn(block.ln_1(x), mask, None, 0), or real tokens "
        "attend to the padding.": _block_variant(use_mask=False),
        "the MLP reads the block's input, not the stream after attention: compute x = x + attn(...) first, then "
        "x + mlp(ln_2(x)) with that new x.": _block_variant(parallel=True),
        "the residual adds the normalised input: x + attn(ln_1(x)), not ln_1(x) + attn(ln_1(x)); the stream itself "
        "is never normalised.": _block_variant(normed_residual=True),
    }
    mistakes = {hint: _on_parameters(wrong, block, names) for hint, wrong in mistakes.items()}
    grad_args = {0: "input x", **{2 + i: f"parameter block.{name}" for i, name in enumerate(names)}}
    reference = _on_parameters(reference_block_forward, block, names)
    checked = run_check("block_forward", _on_parameters(fn, block, names), reference, cases, mistakes,
                        atol=1e-5, grad_args=grad_args,
                        crash_hint="Call the block's parts: block.ln_1(x), block.attn(h, mask, None, 0), block.ln_2, "
                                   "block.mlp.")
    return reference_block_forward if checked is reference else fn


# ---------------------------------------------------------------- 04 pretraining
def reference_next_token_loss(logits, tokens):
    return losses.next_token_loss(logits, tokens)


def check_next_token_loss(fn: Callable) -> Callable:
    """fn(logits (B, T, V), tokens (B, T)) -> scalar mean cross-entropy of tokens[:, 1:] given logits[:, :-1].

    The model trains on it: the gradient with respect to the logits, softmax - one_hot(target) over the
    number of predicted tokens, is compared too."""
    g = seeded(5)
    cases = [
        ("B=2, T=5, V=7", (torch.randn(2, 5, 7, generator=g), torch.randint(0, 7, (2, 5), generator=g))),
        ("confident logits (large values)", (torch.randn(3, 6, 11, generator=g) * 40, torch.randint(0, 11, (3, 6), generator=g))),
    ]
    mistakes = {
        "no shift (off by one): the logits at position t predict the token at t + 1, so compare logits[:, :-1] with tokens[:, 1:].":
            lambda lg, tk: F.cross_entropy(lg.reshape(-1, lg.size(-1)), tk.reshape(-1)),
        "shifted the wrong way: logits[:, :-1] predict tokens[:, 1:], not logits[:, 1:] -> tokens[:, :-1].":
            lambda lg, tk: F.cross_entropy(lg[:, 1:].reshape(-1, lg.size(-1)), tk[:, :-1].reshape(-1)),
        "use the mean over predicted tokens, not the sum.":
            lambda lg, tk: F.cross_entropy(lg[:, :-1].reshape(-1, lg.size(-1)), tk[:, 1:].reshape(-1), reduction="sum"),
        "numerically unstable on large logits: use log_softmax (or F.cross_entropy), not log(softmax(...)).":
            lambda lg, tk: -torch.log(torch.softmax(lg[:, :-1], -1)).gather(-1, tk[:, 1:, None]).mean(),
    }
    return run_check("next_token_loss", fn, reference_next_token_loss, cases, mistakes, atol=1e-4,
                     grad_args={0: "logits"})


# ---------------------------------------------------------------- 05 SFT
def check_sft_loss_mask(fn: Callable) -> Callable:
    """fn(tokens (B, T), prompt_lengths (B,)) -> (B, T) bool, True on response tokens (incl. EOS) only.

    The mask must be bool (the engine's type rule): notebook 05 combines it with & and ~, which a float
    or long mask with the right values would break a few cells later."""
    tokens = torch.tensor([[1, 20, 21, 22, 30, 31, 2, 0, 0],
                           [1, 20, 21, 30, 31, 32, 33, 34, 2],
                           [1, 25, 26, 27, 28, 2, 0, 0, 0]])
    cases = [("three right-padded rows", (tokens, torch.tensor([4, 3, 5])))]
    pos = lambda t: torch.arange(t.size(1))[None, :]  # noqa: E731
    mistakes = {
        "the prompt is not masked: SFT should only learn the response, the prompt is given.":
            lambda t, n: t != 0,
        "the padding is not masked: PAD tokens must never count in the loss.":
            lambda t, n: pos(t) >= n[:, None],
        "off by one: the first response token sits at index prompt_length (it counts BOS and the prompt).":
            lambda t, n: (pos(t) > n[:, None]) & (t != 0),
        "off by one: the last prompt token is included; the response starts at index prompt_length.":
            lambda t, n: (pos(t) >= n[:, None] - 1) & (t != 0),
        "EOS is not learned: keep it in the mask, or the model never learns to stop.":
            lambda t, n: (pos(t) >= n[:, None]) & (t != 0) & (t != 2),
    }
    return run_check("sft_loss_mask", fn, losses.sft_loss_mask, cases, mistakes)


def _sft_case(seed: int):
    """A tiny GPT (its .grad holding an earlier batch's gradients) and 4 ragged right-padded SFT rows
    "BOS prompt response EOS PAD...", built the same way on every call: (model, tokens, prompt_lengths)."""
    g = seeded(seed)
    config = GPTConfig(vocab_size=TOKENIZER.vocab_size, context_length=16, d_model=16, n_layers=1, n_heads=2)
    model = _fresh(lambda: (torch.manual_seed(seed), GPT(config))[1])
    prompt_lengths = torch.tensor([3, 5, 2, 4])
    ends = torch.tensor([9, 12, 5, 7])                                        # EOS positions
    columns = torch.arange(13)
    tokens = torch.randint(4, TOKENIZER.vocab_size, (4, 13), generator=g)
    tokens[:, 0] = TOKENIZER.bos_id
    tokens = torch.where(columns == ends[:, None], TOKENIZER.eos_id, tokens)
    tokens = torch.where(columns > ends[:, None], TOKENIZER.pad_id, tokens)
    for p in model.parameters():     # left over from an earlier step: zero_grad must clear it
        p.grad = torch.randn(p.shape, generator=g)
    return model, tokens, prompt_lengths


def _after_sft_step(step: Callable) -> Callable:
    """step(model, optimizer, tokens, prompt_lengths, grad_clip) -> a function of (seed, grad_clip, lr): the
    returned loss followed by every parameter after the step, one float64 tensor (1 + n_params,)."""
    def loss_and_parameters(seed, grad_clip, lr):
        model, tokens, prompt_lengths = _sft_case(seed)
        # plain SGD, not Adam: Adam divides by the gradient's own size, so it turns a rounding-level difference in a
        # near-zero gradient (a sum taken in another order) into a full step; SGD keeps equal answers equal
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        loss = step(model, optimizer, tokens, prompt_lengths, grad_clip)
        if isinstance(loss, torch.Tensor) or not isinstance(loss, (float, int)) or isinstance(loss, bool):
            graph = " with its autograd graph" if isinstance(loss, torch.Tensor) and loss.requires_grad else ""
            raise ExerciseError(f"sft_step must return the loss as a Python float, got {describe(loss)}{graph}. "
                                f"Return loss.item(): the training loop stores one loss per step, and a tensor "
                                f"would keep each step's whole graph alive.")
        parameters = [p.detach().reshape(-1) for p in model.parameters()]
        return torch.cat([torch.tensor([float(loss)]), *parameters]).double()
    return loss_and_parameters


def _sft_variant(*, mask="response", shift=1, zero_grad=True, clip=True, reduce="mean"):
    """sft_step with one known mistake switched on (for the check's hints)."""
    def step(model, optimizer, tokens, prompt_lengths, grad_clip):
        keep = {"response": losses.sft_loss_mask(tokens, prompt_lengths),
                "all": tokens != TOKENIZER.pad_id,
                "with padding": torch.arange(tokens.size(1))[None, :] >= prompt_lengths[:, None]}[mask]
        logits = model(tokens)
        if shift == 1:
            loss = losses.next_token_loss(logits, tokens, keep)
        else:   # no shift: the logits at t "predict" the token at t
            loss = F.cross_entropy(logits[keep], tokens[keep])
        if reduce == "sum":
            loss = loss * keep[:, 1:].sum()
        mistaken_step(model.parameters(), optimizer, loss, grad_clip, zero_grad=zero_grad, clip=clip)
        return loss.item()
    return step


def check_sft_step(fn: Callable) -> Callable:
    """fn(model, optimizer, tokens (B, T), prompt_lengths (B,), grad_clip) -> float: one SFT update.

    The prompt-masked next-token loss (response tokens and EOS, never prompt or PAD, predicted by the logits
    one position earlier), zero_grad, backward, clip the gradient norm to grad_clip, step; the loss before the
    update returned as a Python float. Checked by running fn and train.sft_step from the same tiny GPT (whose
    .grad holds stale gradients) with plain SGD: the loss and every parameter afterwards must agree."""
    cases = [("4 ragged right-padded rows, gradient norm clipped to 0.5, lr 1", (0, 0.5, 1.0)),
             ("another model and batch, clip 0.2, lr 2", (1, 0.2, 2.0))]
    mistakes = {
        "the prompt is not masked: the loss must cover only the response and its EOS, "
        "sft_loss_mask(tokens, prompt_lengths).": _after_sft_step(_sft_variant(mask="all")),
        "the padding counts in the loss: mask out PAD tokens too (sft_loss_mask does).":
            _after_sft_step(_sft_variant(mask="with padding")),
        "no shift (off by one): the logits at position t - 1 predict the token at t; next_token_loss(logits, tokens, "
        "mask) does the shift.": _after_sft_step(_sft_variant(shift=0)),
        "optimizer.zero_grad() is missing: the model's .grad still held an earlier batch's gradients, and backward() "
        "ADDS to them.": _after_sft_step(_sft_variant(zero_grad=False)),
        "the gradient norm is not clipped: torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip) between "
        "backward() and step().": _after_sft_step(_sft_variant(clip=False)),
        "the loss is a sum over tokens: take the mean over the masked tokens, as next_token_loss does.":
            _after_sft_step(_sft_variant(reduce="sum")),
    }
    reference = _after_sft_step(sft_step)
    checked = run_check("sft_step", _after_sft_step(fn), reference, cases, mistakes, atol=2e-5)
    return sft_step if checked is reference else fn
