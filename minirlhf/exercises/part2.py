"""Checks of Part II's exercises (notebooks 06-08: preference data, the reward model, best-of-N)."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from .. import losses
from ..best_of_n import best_of_n_probs, best_of_n_weights, kl_best_of_n_analytic, kl_best_of_n_exact
from ..feedback import category_kappa
from ..logprobs import gather_last
from ..model import GPTConfig
from ..reward import RewardModel, pairwise_accuracy, reward_step
from ..tokenizer import TOKENIZER
from .engine import ExerciseError, _type_problem, mistaken_step, run_check, seeded

# ---------------------------------------------------------------- 06 preference data
def _cohens_kappa(x, y):
    return category_kappa(list(x), list(y))


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
    # the notebook only prints kappa: a 0-d tensor prints as well as a float
    return run_check("cohens_kappa", fn, _cohens_kappa, cases, mistakes, atol=1e-9, scalar_tensor_ok=True)


# ---------------------------------------------------------------- 07 reward model
def check_bradley_terry_loss(fn: Callable) -> Callable:
    """fn(reward_chosen (B,), reward_rejected (B,)) -> scalar -mean log sigma(r_chosen - r_rejected).

    The reward model trains on it: the gradients with respect to both rewards, -/+ sigma(r_rejected -
    r_chosen) / B, are compared too."""
    g = seeded(7)
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
    return run_check("bradley_terry_loss", fn, losses.bradley_terry_loss, cases, mistakes, atol=1e-4,
                     grad_args={0: "reward_chosen", 1: "reward_rejected"})


def check_gather_last(fn: Callable) -> Callable:
    """fn(values (B, T), attention_mask (B, T)) -> (B,) each row's value at its last real (mask True) token.

    Rows come padded on the right (training data), on the left, and on BOTH sides: `generate` returns a
    left-padded prompt, then the response, then PAD after EOS. Only the position of the last True,
    max_t where(mask, t, -1), is right for all three; shortcuts that treat the padding as one block fail on
    the last. The gradient reaches the values (a reward model's per-token outputs) at that position only."""

    g = seeded(8)
    right = torch.tensor([[1, 1, 1, 0, 0, 0],
                          [1, 1, 1, 1, 1, 0],
                          [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    left = right.flip(1)
    mixed = torch.tensor([[0, 0, 1, 1, 1, 1, 0, 0],         # as generate returns rows: left-padded prompt,
                          [0, 1, 1, 1, 1, 1, 1, 0],         # then the response, then PAD after EOS
                          [1, 1, 1, 1, 1, 0, 0, 0],         # right-padded
                          [0, 0, 0, 1, 1, 1, 1, 1]], dtype=torch.bool)   # left-padded
    cases = [     # three cases: the notebook prints their number
        ("right-padded rows (training data)", (torch.randn(3, 6, generator=g), right)),
        ("left-padded rows (generated samples)", (torch.randn(3, 6, generator=g), left)),
        ("padding on both sides (as generate returns rows), on the right and on the left, in one batch",
         (torch.randn(4, 8, generator=g), mixed)),
    ]
    T = lambda m: m.size(1)  # noqa: E731
    rows = lambda m: torch.arange(m.size(0))  # noqa: E731
    last_true = "Take the position of the last True directly, e.g. max over where(mask, positions, -1)."
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
        "you read the last column when a row ends with a real token and mask.sum(1) - 1 otherwise: a row that "
        "generate returns is padded on BOTH sides (left-padded prompt, response, PAD after EOS), and there "
        "sum - 1 falls before its last real token. " + last_true:
            lambda v, m: v[rows(m), torch.where(m[:, -1], T(m) - 1, m.long().sum(1) - 1)],
        "you take the token before the first False: a row that generate returns is padded on BOTH sides "
        "(left-padded prompt, response, PAD after EOS), so its first False is the left padding, and index -1 "
        "wraps around to the last column, a PAD. " + last_true:
            lambda v, m: v[rows(m), (~m).long().argmax(1) - 1],
    }
    return run_check("gather_last", fn, gather_last, cases, mistakes, grad_args={0: "values"})


def check_ranking_loss(fn: Callable) -> Callable:
    """fn(rewards (B, K) in rank order, best first) -> scalar InstructGPT K-wise loss:
    -mean_b 1/C(K,2) sum_{i<j} log sigma(r[b, i] - r[b, j]).

    The reward model trains on it: the gradient with respect to the rewards is compared too."""
    g = seeded(9)
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
    return run_check("ranking_loss", fn, losses.ranking_loss, cases, mistakes, atol=1e-4, grad_args={0: "rewards"})


# ---------------------------------------------------------------- 07 the reward model's training step
def _reward_case(seed: int, head_gain: float):
    """A tiny reward model with stale gradients in .grad (the previous batch's) and a batch of 4 pairs: 8 ragged
    right-padded rows, 4 chosen then the 4 rejected, built the same way on every call: (rm, tokens, mask).
    head_gain multiplies the head's weights: a large gain makes a confident model, with margins of hundreds."""
    g = seeded(seed)
    torch.manual_seed(seed)   # the tiny model's initial weights; the caller's RNG state is restored around the check
    rm = RewardModel(GPTConfig(vocab_size=TOKENIZER.vocab_size, context_length=16, d_model=16, n_layers=1, n_heads=2))
    with torch.no_grad():
        rm.head.linear.weight.mul_(head_gain)
    for p in rm.parameters():
        p.grad = torch.randn(p.shape, generator=g)
    lengths = torch.tensor([5, 9, 3, 7, 8, 4, 9, 6])
    mask = torch.arange(int(lengths.max())) < lengths[:, None]
    tokens = torch.randint(4, TOKENIZER.vocab_size, mask.shape, generator=g)
    return rm, torch.where(mask, tokens, torch.full_like(tokens, TOKENIZER.pad_id)), mask


def _returned_problem(got) -> str | None:
    """Why got cannot be reward_step's (loss, accuracy), or None."""
    if got is None:
        return "it returned None. Did you forget `return loss, accuracy`?"
    if isinstance(got, (tuple, list)) and got and isinstance(got[0], torch.Tensor) and got[0].requires_grad:
        return ("the loss is returned as a tensor with its graph: return loss.item(), a Python float. A training "
                "loop keeps every step's loss, and each such tensor would keep its step's whole graph (every "
                "activation of the forward pass) alive in memory.")
    return _type_problem(got, (0.0, 0.0), scalar_tensor_ok=False)


def _after_step(step: Callable) -> Callable:
    """step(rm, optimizer, tokens, mask, grad_clip) -> (loss, accuracy), as a function of a case: the returned
    loss and accuracy, then all the model's parameters after the step, flattened: (2 + n_params,)."""
    def values_after(seed, head_gain, grad_clip):
        state = torch.get_rng_state()
        try:
            rm, tokens, mask = _reward_case(seed, head_gain)
        finally:
            torch.set_rng_state(state)
        # plain SGD, not Adam: Adam divides by the gradient's own size, so it turns a rounding-level difference in a
        # near-zero gradient (a sum taken in another order) into a full step; SGD keeps equal answers equal
        optimizer = torch.optim.SGD(rm.parameters(), lr=0.5)
        returned = step(rm, optimizer, tokens, mask, grad_clip)
        problem = _returned_problem(returned)
        if problem:
            raise ExerciseError(f"reward_step must return (loss, accuracy), two Python floats: {problem}")
        parameters = [p.detach().reshape(-1) for p in rm.parameters()]
        return torch.cat([torch.tensor([float(returned[0]), float(returned[1])]), *parameters])
    return values_after


def _step_variant(*, swap="", last_column=False, zero_grad=True, clip=True):
    """reward_step with one known mistake switched on (for the check's hints). swap: "both" swaps chosen and
    rejected everywhere, "loss" only in the loss."""
    def step(rm, optimizer, tokens, mask, grad_clip):
        if last_column:   # the head read at the last column: a PAD position for all rows but the longest
            rewards = rm.scale * rm.head(rm.gpt.hidden_states(tokens, mask))[:, -1] + rm.bias
        else:
            rewards = rm(tokens, mask)
        chosen, rejected = rewards.chunk(2)[::-1] if swap == "both" else rewards.chunk(2)
        margin = rejected - chosen if swap == "loss" else chosen - rejected
        loss = -F.logsigmoid(margin).mean()
        mistaken_step(rm.parameters(), optimizer, loss, grad_clip, zero_grad=zero_grad, clip=clip)
        return loss.item(), pairwise_accuracy(chosen.detach(), rejected.detach())
    return step


def check_reward_step(fn: Callable) -> Callable:
    """fn(rm: RewardModel, optimizer, tokens (2B, T), attention_mask (2B, T), grad_clip) -> (loss, accuracy):
    rows 0..B-1 are the chosen responses, B..2B-1 the rejected ones; score them (one forward pass), the
    Bradley-Terry loss on the margins, zero_grad, backward, clip the gradient norm to grad_clip, step; return the
    loss and the share of pairs ranked right, as Python floats.

    Checked by running fn and the package's reward.reward_step from the same tiny model (with the previous batch's
    gradients still in .grad) and batch of ragged right-padded rows: the returned values and every parameter after
    the step must agree.
    """
    cases = [
        ("4 pairs of ragged right-padded rows, the previous batch's gradients still in .grad", (0, 1.0, 0.5)),
        ("a confident reward model (head weights x 300): margins of hundreds, some pairs confidently wrong",
         (2, 300.0, 1.0)),
    ]
    mistakes = {
        "chosen and rejected are swapped: the first B rows are the CHOSEN responses, so rewards.chunk(2) gives "
        "(r_chosen, r_rejected), and the loss is -log sigma(r_chosen - r_rejected).":
            _after_step(_step_variant(swap="both")),
        "the loss has chosen and rejected swapped: it must be low when the CHOSEN response has the higher reward, "
        "-log sigma(r_chosen - r_rejected).": _after_step(_step_variant(swap="loss")),
        "the rewards are read at the last column, a PAD position for every row but the longest: call rm(tokens, "
        "attention_mask), which reads each row at its last real token.": _after_step(_step_variant(last_column=True)),
        "optimizer.zero_grad() is missing: the gradients of the previous batch, still in .grad, are added to this "
        "batch's.": _after_step(_step_variant(zero_grad=False)),
        "the gradient norm is not clipped: torch.nn.utils.clip_grad_norm_(rm.parameters(), grad_clip) between "
        "backward() and step().": _after_step(_step_variant(clip=False)),
    }
    reference = _after_step(reward_step)
    checked = run_check("reward_step", _after_step(fn), reference, cases, mistakes, atol=2e-5,
                        nonfinite_hint="At margins of -100 and below, sigmoid underflows to 0 and log(0) = -inf, "
                                       "whose gradient is nan: use F.logsigmoid(r_chosen - r_rejected) (exercise 1).")
    return reward_step if checked is reference else fn


# ---------------------------------------------------------------- 08 best-of-N
def check_best_of_n_weights(fn: Callable) -> Callable:
    """fn(m, n) -> (m,) tensor, w_i = C(i - 1, n - 1) / C(m, n) for the i-th SMALLEST of m (i = 1..m)."""

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
    return run_check("best_of_n_weights", fn, best_of_n_weights, cases, mistakes, atol=1e-9,
                     nonfinite_hint="C(m, n) overflows float64 for large m: use Python's exact integers (math.comb, "
                                    "then divide) or logarithms (torch.lgamma).")


def check_kl_best_of_n_exact(fn: Callable) -> Callable:
    """fn(rewards (M,), n) -> scalar KL(best-of-n || pool) in nats, identical rewards merged into one outcome."""

    g = seeded(80)
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
