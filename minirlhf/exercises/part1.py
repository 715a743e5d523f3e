"""Checks of Part I's exercises (notebooks 01-05: RL basics, toy worlds, the transformer, pretraining, SFT)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .. import losses, preferences
from ..advantages import discounted_returns
from .engine import run_check, seeded

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
