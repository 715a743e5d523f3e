"""Checks for the notebooks' exercises.

Every `check_<name>(fn)` runs the student's `fn` on fixed cases against the package's reference:
- all cases right: prints one line saying so and returns `fn`;
- `fn` raises NotImplementedError (the stub): says so and returns the reference, so the rest of the
  notebook still runs;
- a case wrong: raises ExerciseError saying which case, expected vs got, and, when the answer matches a
  known mistake (a sign error, a missing mask, an off-by-one...), what that mistake is.

Cases come from the check's own torch.Generator, so a check never disturbs the notebook's random state.
`exercise_summary()` lists what passed and what is left.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from . import losses, preferences
from .advantages import discounted_returns

_STATUS: dict[str, str] = {}


class ExerciseError(AssertionError):
    """A student's function gave a wrong answer; the message says where and why."""


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _clone(args):
    return tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)


def _close(got, expected, atol: float, rtol: float = 1e-4) -> bool:
    got = torch.as_tensor(got, dtype=torch.float64) if not isinstance(got, torch.Tensor) else got.double()
    expected = torch.as_tensor(expected, dtype=torch.float64) if not isinstance(expected, torch.Tensor) else expected.double()
    return got.shape == expected.shape and bool(torch.allclose(got, expected, atol=atol, rtol=rtol, equal_nan=False))


def _show(x) -> str:
    if isinstance(x, torch.Tensor):
        if x.numel() <= 12:
            return str(x.detach().double().numpy().round(4).tolist())
        return f"tensor of shape {tuple(x.shape)}, first values {x.detach().flatten()[:6].double().numpy().round(4).tolist()}"
    return repr(x)


def _diagnose(name: str, label: str, got, expected, args, mistakes, atol) -> str:
    where = f"{name} is wrong on case '{label}'"
    if got is None:
        return f"{where}: it returned None. Did you forget the `return`?"
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"{where}: expected a torch.Tensor, got {type(got).__name__}."
        if got.shape != expected.shape:
            return f"{where}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}."
        if got.dtype == torch.bool and expected.dtype != torch.bool or got.dtype != torch.bool and expected.dtype == torch.bool:
            return f"{where}: expected dtype {expected.dtype}, got {got.dtype}."
    if isinstance(got, (torch.Tensor, float, tuple)) and torch.isnan(torch.as_tensor(got, dtype=torch.float64)).any():
        return (f"{where}: it returned NaN, expected {_show(expected)}. Look for log(0), 0 / 0 or 0 * inf "
                "(torch gives nan for 0 * log(0); the limit of d log d at d = 0 is 0).")
    for hint, wrong in mistakes.items():
        try:
            if _close(got, wrong(*_clone(args)), atol):
                return f"{where}: {hint}"
        except Exception:  # a mistake variant that does not apply to this case
            continue
    return f"{where}: expected {_show(expected)}, got {_show(got)}."


def run_check(name: str, fn: Callable, reference: Callable, cases: list[tuple[str, tuple]],
              mistakes: dict[str, Callable] | None = None, atol: float = 1e-5, crash_hint: str = "") -> Callable:
    """Compare fn with reference on each (label, args) case; see the module docstring for what it does.
    If fn crashes on a case, the ExerciseError names the case and adds crash_hint."""
    if not callable(fn):
        raise TypeError(f"check_{name} takes your function itself, e.g. check_{name}({name}), not its result")
    try:
        for label, args in cases:
            try:
                got = fn(*_clone(args))
            except (NotImplementedError, ExerciseError):
                raise
            except Exception as e:
                raise ExerciseError(f"{name} raised {type(e).__name__} on case '{label}': {e}. {crash_hint}".strip()) from e
            expected = reference(*_clone(args))
            if not (isinstance(got, (torch.Tensor, float, int, tuple)) and _close(got, expected, atol)):
                raise ExerciseError(_diagnose(name, label, got, expected, args, mistakes or {}, atol))
    except NotImplementedError:
        _STATUS[name] = "not implemented"
        print(f"[ ] {name}: not implemented yet; the notebook goes on with the package's reference.")
        return reference
    _STATUS[name] = "passed"
    print(f"[x] {name}: correct on all {len(cases)} test cases." if len(cases) > 1 else f"[x] {name}: correct on the test case.")
    return fn


def exercise_summary(names: list[str]) -> None:
    """Print which of this notebook's exercises pass and which remain."""
    done = [n for n in names if _STATUS.get(n) == "passed"]
    left = [n for n in names if n not in done]
    if not left:
        print("The exercise of this notebook passes." if len(names) == 1 else
              f"All {len(names)} exercises of this notebook pass.")
    else:
        print(f"{len(done)} of {len(names)} exercises pass. Still to do: {', '.join(left)} "
              f"(the notebook used the package's reference for them).")


# ---------------------------------------------------------------- 01 RL basics
def check_discounted_returns(fn: Callable) -> Callable:
    """fn(rewards (T,), gamma) -> returns (T,) with G_t = r_t + gamma * G_{t+1}."""
    g = _gen(1)
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
    """fn(logprobs (N,), returns (N,), baseline) -> scalar loss whose gradient is minus the policy gradient."""
    g = _gen(2)
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
    checked = run_check("reinforce_loss", fn, losses.reinforce_loss, cases, mistakes)
    if checked is fn:  # the value is right; the gradient must not flow into the returns or the baseline
        r = ret.clone().requires_grad_(True)
        fn(lp.clone().requires_grad_(True), r, 0.5).backward()
        if r.grad is not None and r.grad.abs().sum() > 0:
            _STATUS["reinforce_loss"] = "wrong"
            raise ExerciseError("reinforce_loss: gradient flows into the returns. Treat (G - b) as a constant: .detach() it.")
    return checked


# ---------------------------------------------------------------- 02 toy worlds
def check_bayes_optimal_accuracy(fn: Callable) -> Callable:
    """fn(gold_a (N,), gold_b (N,), temperature) -> float, the mean of max(p, 1 - p)."""
    g = _gen(3)
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
    return run_check("bayes_optimal_accuracy", fn, preferences.bayes_optimal_accuracy, cases, mistakes, atol=1e-6)


# ---------------------------------------------------------------- 03 the tiny transformer
def _attention(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def check_causal_attention(fn: Callable) -> Callable:
    """fn(q, k, v each (B, H, T, D)) -> (B, H, T, D) = softmax(q k^T / sqrt(D) + causal mask) v."""
    g = _gen(4)

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
    return run_check("causal_attention", fn, _attention, cases, mistakes, atol=1e-5)


# ---------------------------------------------------------------- 04 pretraining
def _next_token_loss(logits, tokens):
    return losses.next_token_loss(logits, tokens)


def check_next_token_loss(fn: Callable) -> Callable:
    """fn(logits (B, T, V), tokens (B, T)) -> scalar mean cross-entropy of tokens[:, 1:] given logits[:, :-1]."""
    g = _gen(5)
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
    return run_check("next_token_loss", fn, _next_token_loss, cases, mistakes, atol=1e-4)


# ---------------------------------------------------------------- 05 SFT
def check_sft_loss_mask(fn: Callable) -> Callable:
    """fn(tokens (B, T), prompt_lengths (B,)) -> (B, T) bool, True on response tokens (incl. EOS) only."""
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


# ---------------------------------------------------------------- 07 reward model
def check_bradley_terry_loss(fn: Callable) -> Callable:
    """fn(reward_chosen (B,), reward_rejected (B,)) -> scalar -mean log sigma(r_chosen - r_rejected)."""
    g = _gen(7)
    cases = [
        ("one pair, margin 1", (torch.tensor([1.0]), torch.tensor([0.0]))),
        ("margin +100: confidently right", (torch.tensor([100.0]), torch.tensor([0.0]))),
        ("margin -100: confidently wrong", (torch.tensor([0.0]), torch.tensor([100.0]))),
        ("a batch of 8 random pairs", (torch.randn(8, generator=g) * 2, torch.randn(8, generator=g) * 2)),
    ]
    mistakes = {
        "numerically unstable at large margins: sigmoid(-100) underflows to 0 in float32 and log(0) = -inf "
        "(log(1 + exp(100)) overflows the same way). Use F.logsigmoid(r_chosen - r_rejected).":
            lambda c, r: -torch.log(torch.sigmoid(c - r)).mean(),
        "chosen and rejected are swapped: the loss is low when the CHOSEN response has the higher reward, "
        "-log sigma(r_chosen - r_rejected).":
            lambda c, r: losses.bradley_terry_loss(r, c),
        "use the mean over pairs, not the sum.":
            lambda c, r: losses.bradley_terry_loss(c, r) * c.numel(),
        "the minus sign is missing: log sigma(margin) is a log-likelihood (<= 0) to maximise; the loss is "
        "its negative.":
            lambda c, r: -losses.bradley_terry_loss(c, r),
    }
    return run_check("bradley_terry_loss", fn, losses.bradley_terry_loss, cases, mistakes, atol=1e-4)


def check_gather_last(fn: Callable) -> Callable:
    """fn(values (B, T), attention_mask (B, T)) -> (B,) each row's value at its last real (mask True) token."""
    from .reward import gather_last

    g = _gen(8)
    right = torch.tensor([[1, 1, 1, 0, 0, 0],
                          [1, 1, 1, 1, 1, 0],
                          [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    left = right.flip(1)
    cases = [
        ("right-padded rows (training data)", (torch.randn(3, 6, generator=g), right)),
        ("left-padded rows (generated samples)", (torch.randn(3, 6, generator=g), left)),
        ("left and right padding in one batch", (torch.randn(2, 6, generator=g), torch.stack([right[0], left[1]]))),
    ]
    T = lambda m: m.size(1)  # noqa: E731
    mistakes = {
        "you always read the last column: with right padding that is a PAD position. Find each row's last "
        "True in the mask.":
            lambda v, m: v[:, -1],
        "off by one: mask.sum(1) counts the real tokens, so the last one sits at index count - 1 (and only "
        "in a right-padded row).":
            lambda v, m: v.gather(1, m.long().sum(1, keepdim=True).clamp(max=T(m) - 1)).squeeze(1),
        "mask.sum(1) - 1 is the last real token only for RIGHT padding; a left-padded row ends in the last "
        "column. Use the position of the last True, e.g. max over where(mask, positions, -1).":
            lambda v, m: v.gather(1, m.long().sum(1, keepdim=True) - 1).squeeze(1),
        "you read the first token: the reward is read at the LAST real token, the one that has seen the "
        "whole prompt and response.":
            lambda v, m: v[:, 0],
    }
    return run_check("gather_last", fn, gather_last, cases, mistakes)


def check_ranking_loss(fn: Callable) -> Callable:
    """fn(rewards (B, K) in rank order, best first) -> scalar InstructGPT K-wise loss:
    -mean_b 1/C(K,2) sum_{i<j} log sigma(r[b, i] - r[b, j])."""
    g = _gen(9)
    cases = [
        ("one prompt, K = 2 (plain Bradley-Terry)", (torch.tensor([[1.0, 0.0]]),)),
        ("one prompt, K = 3", (torch.tensor([[2.0, 0.5, -1.0]]),)),
        ("4 prompts, K = 4, random rewards", (torch.randn(4, 4, generator=g) * 2,)),
        ("margins of 100: must stay finite", (torch.tensor([[100.0, 0.0, -100.0], [-100.0, 0.0, 100.0]]),)),
    ]

    def pairs(r):
        i, j = torch.triu_indices(r.size(1), r.size(1), offset=1)
        return r[:, i] - r[:, j]

    def adjacent_only(r):
        return -F.logsigmoid(r[:, :-1] - r[:, 1:]).mean()

    def best_vs_rest(r):
        return -F.logsigmoid(r[:, :1] - r[:, 1:]).mean()

    mistakes = {
        "you compare only neighbours (1 vs 2, 2 vs 3, ...): a ranking of K gives all C(K, 2) pairs i < j, "
        "e.g. from torch.triu_indices(K, K, offset=1).": adjacent_only,
        "you compare only the best response with the others: every pair i < j of the ranking counts.": best_vs_rest,
        "the order is reversed: rewards are given best first, so response i beats j when i < j: "
        "log sigma(r_i - r_j).": lambda r: -F.logsigmoid(-pairs(r)).mean(),
        "divide by the number of pairs, C(K, 2), not only by the number of prompts (InstructGPT's 1/C(K,2) "
        "keeps prompts with many pairs from dominating).": lambda r: -F.logsigmoid(pairs(r)).sum(1).mean(),
        "numerically unstable: use F.logsigmoid, not log(sigmoid(...)), which gives inf at a margin of -100.":
            lambda r: -torch.log(torch.sigmoid(pairs(r))).mean(),
    }
    return run_check("ranking_loss", fn, losses.ranking_loss, cases, mistakes, atol=1e-4)


# ---------------------------------------------------------------- 08 best-of-N
def check_best_of_n_weights(fn: Callable) -> Callable:
    """fn(m, n) -> (m,) tensor, w_i = C(i - 1, n - 1) / C(m, n) for the i-th SMALLEST of m (i = 1..m)."""
    import math

    from .best_of_n import best_of_n_weights

    cases = [
        ("m = 5, n = 1: every sample is the best of 1", (5, 1)),
        ("m = 5, n = 5: only the largest can win", (5, 5)),
        ("m = 6, n = 3", (6, 3)),
        ("m = 64, n = 8", (64, 8)),
        ("m = 1200, n = 600: C(1200, 600) ~ 1e359 is beyond float64", (1200, 600)),
    ]

    def ranks(m):
        return torch.arange(1, m + 1, dtype=torch.float64)

    def comb_ratio(top, k, m, n):   # C(top_i, k) / C(m, n), exact integers, for the small cases
        return torch.tensor([math.comb(int(t), k) / math.comb(m, n) if t >= 0 else 0.0 for t in top],
                            dtype=torch.float64)

    def finite(m, n):
        out = fn(m, n)
        if isinstance(out, torch.Tensor) and out.is_floating_point() and not torch.isfinite(out).all():
            raise ExerciseError(f"best_of_n_weights is wrong on m = {m}, n = {n}: it returned inf or nan. "
                                f"C({m}, {n}) overflows float64: use Python's exact integers (math.comb, "
                                f"then divide) or logarithms (torch.lgamma).")
        return out

    mistakes = {
        "the weights are reversed: they are for the i-th SMALLEST proxy (sorted ascending), so the largest "
        "sample gets the biggest weight, C(m - 1, n - 1) / C(m, n) = n / m.":
            lambda m, n: best_of_n_weights(m, n).flip(0),
        "that is the WITH-replacement probability (i/m)^n - ((i-1)/m)^n: best-of-n from a pool takes n "
        "DIFFERENT samples (without replacement), so count subsets: C(i - 1, n - 1) / C(m, n).":
            lambda m, n: (ranks(m) / m) ** n - ((ranks(m) - 1) / m) ** n,
        "off by one: the i-th smallest wins when the subset holds it and n - 1 of the i - 1 values BELOW "
        "it: C(i - 1, n - 1), not C(i, n - 1).":
            lambda m, n: comb_ratio(ranks(m), n - 1, m, n),
        "off by one: choose the n - 1 OTHER members (the winner is the n-th): C(i - 1, n - 1), not C(i - 1, n).":
            lambda m, n: comb_ratio(ranks(m) - 1, n, m, n),
        "the weights are not normalised: divide by the number of subsets, C(m, n) (they must sum to 1).":
            lambda m, n: comb_ratio(ranks(m) - 1, n - 1, 1, 1),
    }
    checked = run_check("best_of_n_weights", finite, best_of_n_weights, cases, mistakes, atol=1e-9)
    return fn if checked is finite else checked


def check_kl_best_of_n_exact(fn: Callable) -> Callable:
    """fn(rewards (M,), n) -> scalar KL(best-of-n || pool) in nats, identical rewards merged into one outcome."""
    import math

    from .best_of_n import best_of_n_probs, kl_best_of_n_analytic, kl_best_of_n_exact

    g = _gen(80)
    cases = [
        ("6 distinct rewards, n = 2", (torch.tensor([0.3, -1.0, 2.0, 0.5, 1.2, -0.2]), 2)),
        ("ties: rewards [1, 1, 1, 2, 3, 3], n = 3", (torch.tensor([1.0, 1.0, 1.0, 2.0, 3.0, 3.0]), 3)),
        ("n = 1 is the policy itself: KL 0", (torch.tensor([0.5, 0.1, 0.1, 0.9]), 1)),
        ("40 rewards with many ties, n = 8", (torch.randint(0, 6, (40,), generator=g).float(), 8)),
        ("n = 60, far more draws than the 10 samples of the pool", (torch.randn(10, generator=g), 60)),
    ]

    def parts(r):
        p = torch.unique(r, return_counts=True)[1].double() / len(r)
        return p, torch.cumsum(p, 0)

    def kl(q, p):
        return (q * (q.log() - p.log())).sum()

    def distinct(r, n):
        i = torch.arange(1, len(r) + 1, dtype=torch.float64)
        q = (i / len(r)) ** n - ((i - 1) / len(r)) ** n
        return kl(q, torch.full_like(q, 1 / len(r)))

    def no_lower_term(r, n):
        p, cdf = parts(r)
        return kl(cdf ** n, p)

    def density(r, n):
        p, cdf = parts(r)
        return kl(n * cdf ** (n - 1) * p, p)

    def reversed_kl(r, n):
        p = parts(r)[0]
        q = best_of_n_probs(p, n)
        return (p * (p.log() - q.log())).sum()

    mistakes = {
        "identical rewards are ONE outcome (the same response): merge ties first, e.g. "
        "torch.unique(rewards, return_counts=True), with p_k = count_k / M.": distinct,
        "that is the formula log n - (n - 1) / n: it assumes a continuous reward with no ties; compute the "
        "KL of the pool's own distribution.": lambda r, n: torch.tensor(kl_best_of_n_analytic(n)),
        "q_k = F_k^n - F_(k-1)^n: F_k^n alone is P(best <= v_k), not P(best = v_k).": no_lower_term,
        "n F^(n-1) p is the density of a CONTINUOUS reward; with discrete outcomes use q_k = F_k^n - F_(k-1)^n.":
            density,
        "the KL is the wrong way round: KL(best-of-n || pi) = sum_k q_k log(q_k / p_k), weighted by q.": reversed_kl,
        "use the natural log (nats), not log2.": lambda r, n: kl_best_of_n_exact(r, n) / math.log(2),
    }
    return run_check("kl_best_of_n_exact", fn, kl_best_of_n_exact, cases, mistakes, atol=1e-6)


# ---------------------------------------------------------------- 09 policy gradient on a language model
def _sequence_logprobs(logits, targets, mask, temperature):
    from .ppo import logprobs_from_logits
    return logprobs_from_logits(logits, targets, mask, temperature)[0].sum(1)


def check_sequence_logprobs(fn: Callable) -> Callable:
    """fn(logits (B, N, V), targets (B, N), mask (B, N) bool, temperature) -> (B,)
    log pi(y | x) = sum_t mask[b, t] * log softmax(logits[b, t] / temperature)[targets[b, t]].

    As in the real model's sampling distribution, PAD (id 0) has logit -inf, so the PAD targets after
    EOS have log-prob -inf: they must be left out of the sum, not multiplied by 0 (-inf * 0 = nan)."""
    g = _gen(10)
    logits = torch.randn(3, 5, 7, generator=g) * 2
    logits[..., 0] = float("-inf")
    targets = torch.randint(3, 7, (3, 5), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    targets = torch.where(mask, targets, torch.zeros_like(targets))          # PAD (id 0) after EOS
    cases = [
        ("no padding, temperature 1", (logits[:1], targets[:1], mask[:1], 1.0)),
        ("responses of 5, 3 and 1 tokens, temperature 0.7", (logits, targets, mask, 0.7)),
        ("temperature 1.5", (logits, targets, mask, 1.5)),
    ]

    def token_logp(lg, t, temperature):
        return F.log_softmax(lg / temperature, -1).gather(-1, t[..., None]).squeeze(-1)

    def summed(lg, t, m, temperature):
        return torch.where(m, token_logp(lg, t, temperature), 0.0).sum(1)

    mistakes = {
        "the temperature is missing: log-probs must come from the distribution the tokens were sampled from, "
        "softmax(logits / temperature).":
            lambda lg, t, m, T: summed(lg, t, m, 1.0),
        "the padding after EOS is counted: multiply by the mask (PAD tokens are not part of the response).":
            lambda lg, t, m, T: token_logp(lg, t, T).sum(1),
        "sum the token log-probs over the response (log of a product of probabilities), not their mean.":
            lambda lg, t, m, T: summed(lg, t, m, T) / m.sum(1),
        "you multiplied the logits by the temperature: divide them by it.":
            lambda lg, t, m, T: summed(lg, t, m, 1 / T),
    }

    def no_nan(*args):
        out = fn(*args)
        if isinstance(out, torch.Tensor) and out.isnan().any():
            raise ExerciseError("sequence_logprobs returned nan: the PAD targets after EOS have log-prob -inf, and "
                                "-inf * 0 = nan. Select instead of multiplying: torch.where(mask, logp, 0.0).")
        return out

    checked = run_check("sequence_logprobs", no_nan, _sequence_logprobs, cases, mistakes)
    return fn if checked is no_nan else checked


def _leave_one_out_baseline(returns):
    from .ppo import sequence_baseline
    return sequence_baseline(returns, "leave_one_out")


def check_leave_one_out_baseline(fn: Callable) -> Callable:
    """fn(returns (B,)) -> (B,) b_i = mean of the OTHER B - 1 returns = (sum_j G_j - G_i) / (B - 1)."""
    g = _gen(11)
    cases = [
        ("two samples", (torch.tensor([1.0, 3.0]),)),
        ("four samples", (torch.tensor([0.5, -1.0, 2.0, 0.0]),)),
        ("16 random returns", (torch.randn(16, generator=g) * 3 + 1,)),
    ]
    mistakes = {
        "that is the plain batch mean: it includes G_i itself, so b_i is correlated with the sample it "
        "is subtracted from. Leave sample i out: (sum - G_i) / (B - 1).":
            lambda G: G.mean().expand_as(G),
        "divide by the number of OTHER samples, B - 1, not B.":
            lambda G: (G.sum() - G) / len(G),
        "return the baseline b_i, not the advantage G_i - b_i.":
            lambda G: G - (G.sum() - G) / (len(G) - 1),
    }
    return run_check("leave_one_out_baseline", fn, _leave_one_out_baseline, cases, mistakes)


# ---------------------------------------------------------------- 06 preference data
def _cohens_kappa(x, y):
    from .feedback import _kappa
    return _kappa(list(x), list(y))


def check_cohens_kappa(fn: Callable) -> Callable:
    """fn(labels_1, labels_2: equal-length lists of categories) -> float (p_o - p_e) / (1 - p_e)."""
    cases = [
        ("two raters, a/b only", (list("aabbabab"), list("abbbabaa"))),
        ("with ties, unbalanced", (["a", "a", "a", "tie", "b", "a", "a", "b", "a", "a"],
                                   ["a", "a", "b", "tie", "b", "a", "tie", "b", "a", "a"])),
        ("one rater says 'a' far more often", (list("aaaaaaaab"), list("aaaaabbbb"))),
    ]

    def observed(x, y):
        return sum(a == b for a, b in zip(x, y)) / len(x)

    def chance(x, y):
        return sum((x.count(c) / len(x)) * (y.count(c) / len(y)) for c in set(x) | set(y))

    def uniform_chance(x, y):
        k = len(set(x) | set(y))
        return (observed(x, y) - 1 / k) / (1 - 1 / k)

    mistakes = {
        "that is the raw agreement p_o: kappa corrects it for chance, (p_o - p_e) / (1 - p_e).": observed,
        "chance agreement p_e must use each rater's own label frequencies, sum_c f1(c) * f2(c), not 1 / #categories.":
            uniform_chance,
        "the denominator is 1 - p_e: (p_o - p_e) / (1 - p_e).": lambda x, y: observed(x, y) - chance(x, y),
    }
    return run_check("cohens_kappa", fn, _cohens_kappa, cases, mistakes, atol=1e-9)


# ---- 10 PPO
def check_ppo_clip_loss(fn: Callable) -> Callable:
    """fn(logprobs, old_logprobs, advantages (all (N,) or (B, T)), clip_eps) -> scalar clipped surrogate loss.

        L = -mean[ min(r A, clip(r, 1 - eps, 1 + eps) A) ],  r = exp(logprobs - old_logprobs)
    """
    g = _gen(10)
    old = -torch.rand(12, generator=g) * 3
    adv = torch.randn(12, generator=g)
    old2 = -torch.rand(3, 5, generator=g) * 3
    cases = [
        ("ratios close to 1 (inside the clip range)", (old + 0.05 * torch.randn(12, generator=g), old, adv, 0.2)),
        ("ratios far from 1, positive and negative advantages", (old + 0.8 * torch.randn(12, generator=g), old, adv, 0.2)),
        ("(B, T) tensors, clip 0.1",
         (old2 + 0.5 * torch.randn(3, 5, generator=g), old2, torch.randn(3, 5, generator=g), 0.1)),
    ]

    def ratio(lp, old):
        return torch.exp(lp - old)

    mistakes = {
        "the sign is flipped: the optimiser MINIMISES, and PPO MAXIMISES the surrogate, so L = -mean(min(...)).":
            lambda lp, old, a, e: -losses.ppo_clip_loss(lp, old, a, e),
        "nothing is clipped: use min(r A, clip(r, 1 - eps, 1 + eps) A), so a sample whose ratio already moved "
        "past the clip range stops pushing.":
            lambda lp, old, a, e: -(ratio(lp, old) * a).mean(),
        "you took the max of the two terms: PPO is pessimistic, it takes the MIN of the clipped and unclipped objective.":
            lambda lp, old, a, e: -torch.max(ratio(lp, old) * a, ratio(lp, old).clamp(1 - e, 1 + e) * a).mean(),
        "only the clipped term: it must be min(r A, clip(r) A); the clipped term alone also removes the gradient "
        "of samples whose ratio moved the WRONG way.":
            lambda lp, old, a, e: -(ratio(lp, old).clamp(1 - e, 1 + e) * a).mean(),
        "the ratio is not exponentiated: r = pi_new / pi_old = exp(logprobs - old_logprobs).":
            lambda lp, old, a, e: -torch.min((lp - old) * a, (lp - old).clamp(1 - e, 1 + e) * a).mean(),
        "the ratio is upside down: r = pi_new / pi_old = exp(logprobs - old_logprobs).":
            lambda lp, old, a, e: losses.ppo_clip_loss(old, lp, a, e),
        "use the mean over samples (tokens), not the sum.":
            lambda lp, old, a, e: losses.ppo_clip_loss(lp, old, a, e) * lp.numel(),
    }
    checked = run_check("ppo_clip_loss", fn, losses.ppo_clip_loss, cases, mistakes)
    if checked is fn:  # right value; the old log-probs and the advantages must be constants
        lp, old_c, adv_c = (t.clone().requires_grad_(True) for t in (cases[1][1][0], old, adv))
        fn(lp, old_c, adv_c, 0.2).backward()
        for what, t in (("old_logprobs", old_c), ("advantages", adv_c)):
            if t.grad is not None and t.grad.abs().sum() > 0:
                _STATUS["ppo_clip_loss"] = "wrong"
                raise ExerciseError(f"ppo_clip_loss: gradient flows into the {what}. They come from the rollout "
                                    f"and are constants: .detach() them.")
    return checked


def _gae_pair(fn: Callable) -> Callable:
    """fn returning (advantages, returns) -> a function returning them stacked, (2, B, T), for run_check."""
    def stacked(*args):
        out = fn(*args)
        if out is None:
            return None
        if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(x, torch.Tensor) for x in out)):
            raise ExerciseError(f"gae must return a tuple (advantages, returns) of two tensors, got {type(out).__name__}.")
        if out[0].shape != args[0].shape or out[1].shape != args[0].shape:
            raise ExerciseError(f"gae: advantages and returns must both have the rewards' shape {tuple(args[0].shape)}, "
                                f"got {tuple(out[0].shape)} and {tuple(out[1].shape)}.")
        return torch.stack(out)
    return stacked


def check_gae(fn: Callable) -> Callable:
    """fn(rewards (B, T), values (B, T), mask (B, T) bool, gamma, lam) -> (advantages, returns), each (B, T).

        delta_t = r_t + gamma V_{t+1} - V_t,  A_t = delta_t + gamma lam A_{t+1},  R_t = A_t + V_t,
        nothing after a row's last real token (V = A = 0 there), and 0 on padding.
    """
    from .advantages import discounted_returns as _disc, gae

    g = _gen(11)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1],
                         [1, 1, 1, 0, 0, 0],
                         [1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    r = torch.randn(3, 6, generator=g)     # padding holds garbage rewards and values: they must be ignored
    v = torch.randn(3, 6, generator=g)
    cases = [
        ("one row, no padding, gamma 1, lam 0.95", (r[:1], v[:1], mask[:1], 1.0, 0.95)),
        ("three rows with padding, gamma 1, lam 0.95", (r, v, mask, 1.0, 0.95)),
        ("padding, gamma 0.9, lam 0.7", (r, v, mask, 0.9, 0.7)),
        ("lam 0: one-step TD errors", (r, v, mask, 0.8, 0.0)),
    ]
    ones = lambda m: torch.ones_like(m)  # noqa: E731

    def forward_loop(r, v, m, gamma, lam):
        mf = m.float()
        next_v = torch.cat([v[:, 1:] * mf[:, 1:], torch.zeros_like(v[:, :1])], 1)
        delta = r + gamma * next_v - v
        a, prev = torch.zeros_like(r), torch.zeros_like(r[:, 0])
        for t in range(r.size(1)):
            prev = (delta[:, t] + gamma * lam * prev) * mf[:, t]
            a[:, t] = prev
        return torch.stack((a, (a + v) * mf))

    def no_bootstrap(r, v, m, gamma, lam):
        mf = m.float()
        delta = (r - v) * mf
        a = torch.zeros_like(r)
        nxt = torch.zeros_like(r[:, 0])
        for t in reversed(range(r.size(1))):
            nxt = delta[:, t] + gamma * lam * nxt * mf[:, t]
            a[:, t] = nxt
        return torch.stack((a * mf, (a + v) * mf))

    mistakes = {
        "your loop runs forward in time: A_t depends on A_{t+1}, so go from the last token back to the first.":
            forward_loop,
        "the padding is not ignored: the episode ends at the last real token, so bootstrap V = 0 after it "
        "(and return 0 on padding).":
            lambda r, v, m, gamma, lam: torch.stack(gae(r, v, ones(m), gamma, lam)),
        "you masked the outputs, but still bootstrapped from the value of the padding after the last real token: "
        "after it V = 0.":
            lambda r, v, m, gamma, lam: torch.stack(gae(r, v, ones(m), gamma, lam)) * m,
        "gamma and lam are swapped: delta_t = r_t + GAMMA V_{t+1} - V_t and A_t = delta_t + GAMMA LAM A_{t+1}.":
            lambda r, v, m, gamma, lam: torch.stack(gae(r, v, m, lam, gamma)),
        "lam is missing: A_t = delta_t + gamma * lam * A_{t+1}.":
            lambda r, v, m, gamma, lam: torch.stack(gae(r, v, m, gamma, 1.0)),
        "delta has no bootstrap term: delta_t = r_t + gamma * V_{t+1} - V_t.": no_bootstrap,
        "the returns are the discounted rewards; the value head's target is R_t = A_t + V_t (GAE's lambda-return).":
            lambda r, v, m, gamma, lam: torch.stack((gae(r, v, m, gamma, lam)[0], _disc(r * m, gamma) * m)),
        "the returns are the advantages; the value head's target is R_t = A_t + V_t.":
            lambda r, v, m, gamma, lam: torch.stack((gae(r, v, m, gamma, lam)[0],) * 2),
    }
    reference = _gae_pair(gae)
    return gae if run_check("gae", _gae_pair(fn), reference, cases, mistakes) is reference else fn


def check_kl_penalty_rewards(fn: Callable) -> Callable:
    """fn(score (B,), logp (B, N), logp_ref (B, N), mask (B, N) bool, beta, finished (B,) bool, no_eos_penalty)
    -> per-token rewards (B, N): -beta (logp - logp_ref) on real tokens, + score (- no_eos_penalty if not
    finished) at each row's last real token, 0 on padding."""
    from .ppo import rlhf_rewards

    g = _gen(12)
    mask = torch.tensor([[1, 1, 1, 1, 1],
                         [1, 1, 0, 0, 0],
                         [1, 1, 1, 1, 0]], dtype=torch.bool)
    logp = -torch.rand(3, 5, generator=g) * 3          # padding holds garbage: it must not count
    logp_ref = -torch.rand(3, 5, generator=g) * 3
    score = torch.tensor([1.5, -0.5, 0.25])
    cases = [
        ("one row, finished, beta 0.1", (score[:1], logp[:1], logp_ref[:1], mask[:1], 0.1, torch.tensor([True]), 1.0)),
        ("three rows with padding, all finished", (score, logp, logp_ref, mask, 0.1, torch.tensor([True, True, True]), 1.0)),
        ("the first row never emitted EOS", (score, logp, logp_ref, mask, 0.2, torch.tensor([False, True, True]), 1.0)),
    ]
    last = lambda m: m.long().cumsum(1).argmax(1)  # noqa: E731   (first index of the maximum = last True)
    rows = lambda m: torch.arange(m.size(0))  # noqa: E731

    def kl_part(lp, lr, m, beta):
        return -beta * (lp - lr) * m

    def place(kl, m, value, column):
        out = kl.clone()
        out[rows(m), column] += value
        return out

    final = lambda s, f, pen: s - pen * (~f).float()  # noqa: E731
    mistakes = {
        "the score sits in the last COLUMN, a padding position for shorter responses: add it at each row's last "
        "real token.":
            lambda s, lp, lr, m, b, f, pen: place(kl_part(lp, lr, m, b), m, final(s, f, pen), -1),
        "off by one: the score goes on the last real token (index mask.sum(1) - 1), not the one after it.":
            lambda s, lp, lr, m, b, f, pen: place(kl_part(lp, lr, m, b), m, final(s, f, pen),
                                                  m.sum(1).clamp(max=m.size(1) - 1)),
        "the score is on the first response token: the reward model judges the finished response, so it goes "
        "on the LAST real token.":
            lambda s, lp, lr, m, b, f, pen: place(kl_part(lp, lr, m, b), m, final(s, f, pen), 0),
        "the score is added to every token: it is given once, at the last real token.":
            lambda s, lp, lr, m, b, f, pen: kl_part(lp, lr, m, b) + final(s, f, pen)[:, None] * m,
        "the KL penalty has the wrong sign: the reward is -beta * (logp - logp_ref), lower where the policy "
        "is more sure than the reference.":
            lambda s, lp, lr, m, b, f, pen: place(-kl_part(lp, lr, m, b), m, final(s, f, pen), last(m)),
        "the KL penalty is also applied on the padding: only real response tokens (mask True) get it.":
            lambda s, lp, lr, m, b, f, pen: place(kl_part(lp, lr, torch.ones_like(m), b), m, final(s, f, pen), last(m)),
        "beta is missing: the per-token penalty is -beta * (logp - logp_ref).":
            lambda s, lp, lr, m, b, f, pen: place(kl_part(lp, lr, m, 1.0), m, final(s, f, pen), last(m)),
        "responses that never emitted EOS must lose no_eos_penalty from their score.":
            lambda s, lp, lr, m, b, f, pen: place(kl_part(lp, lr, m, b), m, s, last(m)),
        "the EOS penalty went to the FINISHED responses: subtract it where finished is False.":
            lambda s, lp, lr, m, b, f, pen: place(kl_part(lp, lr, m, b), m, final(s, ~f, pen), last(m)),
        "the unfinished response's score was REPLACED by -no_eos_penalty; here the penalty is subtracted from "
        "the score (score - no_eos_penalty), so the reward model still ranks unfinished responses.":
            lambda s, lp, lr, m, b, f, pen: place(kl_part(lp, lr, m, b), m, torch.where(f, s, torch.full_like(s, -pen)),
                                                  last(m)),
    }
    return run_check("kl_penalty_rewards", fn, rlhf_rewards, cases, mistakes)


# ---------------------------------------------------------------- 11 reward hacking
def check_fit_gao(fn: Callable) -> Callable:
    """fn(d (K,), gain (K,), form) -> (alpha, beta): least squares of gain ~ alpha d - beta f(d), no intercept,
    f(d) = d^2 for form "best_of_n" and d log d (0 at d = 0) for form "rl"."""
    from .overoptimization import fit_gao, gao_curve, gao_penalty

    g = _gen(13)
    d = torch.linspace(0, 3, 13, dtype=torch.float64)
    noise = 0.05 * torch.randn(13, generator=g, dtype=torch.float64)
    cases = [
        ("an exact best-of-N curve", (d, gao_curve(d, 1.0, 0.2, "best_of_n"), "best_of_n")),
        ("a noisy best-of-N curve", (d, gao_curve(d, 0.8, 0.3, "best_of_n") + noise, "best_of_n")),
        ("a noisy RL curve, d = 0 included", (d, gao_curve(d, 0.9, 0.5, "rl") + noise, "rl")),
    ]

    def lstsq(columns, gain):
        return tuple(torch.linalg.lstsq(torch.stack(columns, 1), gain[:, None]).solution.squeeze(1).tolist())

    mistakes = {
        "the fit has an intercept: R(d) = d (alpha - beta f(d)) is 0 at d = 0 by definition (no drift, no gain), "
        "so the design matrix is [d, -f(d)] with no column of ones.":
            lambda d, y, form: lstsq([torch.ones_like(d), d, -gao_penalty(d, form)], y)[1:],
        "beta came out with the wrong sign: the model is alpha d MINUS beta f(d), so the second column is -f(d).":
            lambda d, y, form: lstsq([d, gao_penalty(d, form)], y),
        "the RL form is d (alpha - beta log d): its penalty is d log d, not d^2 (that is best-of-N's).":
            lambda d, y, form: lstsq([d, -d * d], y),
        "the best-of-N form is d (alpha - beta d): its penalty is d^2, not d log d (that is RL's).":
            lambda d, y, form: lstsq([d, -gao_penalty(d, "rl")], y),
        "return (alpha, beta) in that order.":
            lambda d, y, form: lstsq([d, -gao_penalty(d, form)], y)[::-1],
    }
    return run_check("fit_gao", fn, fit_gao, cases, mistakes,
                     crash_hint="If a case has d = 0: d * log(d) is nan there (0 * -inf), and a solver fed a nan "
                                "fails; the limit of d log d at d = 0 is 0, so set it with torch.where.")


# ---------------------------------------------------------------- 12 iterated online RLHF
def check_gold_order_agreement(fn: Callable) -> Callable:
    """fn(reward_a, reward_b, gold_a, gold_b: (N,)) -> float: share of pairs with gold_a != gold_b that the
    rewards order the same way as gold; a reward tie counts 1/2."""
    from .reward import gold_order_agreement

    g = _gen(14)
    gold_a = torch.randint(-2, 3, (40,), generator=g).double()
    gold_b = torch.randint(-2, 3, (40,), generator=g).double()
    r_a = torch.randn(40, generator=g)
    r_b = torch.where(torch.arange(40) % 7 == 0, r_a, torch.randn(40, generator=g))   # some reward ties
    cases = [
        ("three pairs, no ties", (torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 1.0, 3.0]),
                                  torch.tensor([2.0, -1.0, 0.0]), torch.tensor([1.0, 1.0, 1.0]))),
        ("40 pairs with gold ties and reward ties", (r_a, r_b, gold_a, gold_b)),
    ]

    def agree(ra, rb, ga, gb):
        return ((ra - rb) * (ga - gb) > 0).double() + 0.5 * (ra == rb).double()

    mistakes = {
        "pairs with EQUAL gold have no right order: leave them out of the mean, do not count them as wrong.":
            lambda ra, rb, ga, gb: float(agree(ra, rb, ga, gb).mean()),
        "pairs with equal gold must be left out, not counted as agreeing.":
            lambda ra, rb, ga, gb: float(torch.where(ga != gb, agree(ra, rb, ga, gb), 1.0).mean()),
        "a reward tie (r_a == r_b) is a coin flip: count it 1/2, not 0.":
            lambda ra, rb, ga, gb: float(((ra - rb) * (ga - gb) > 0).double()[ga != gb].mean()),
        "that is DISagreement: the rewards agree with gold when r_a - r_b has the same sign as g_a - g_b.":
            lambda ra, rb, ga, gb: float((1 - agree(ra, rb, ga, gb))[ga != gb].mean()),
    }
    return run_check("gold_order_agreement", fn, gold_order_agreement, cases, mistakes)
