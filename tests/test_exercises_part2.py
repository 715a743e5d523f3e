"""exercises/part2.py: every check of notebooks 06-08 accepts right answers (the reference and one written
differently), falls back on a stub, and rejects plausible mistakes, right values of a wrong type and, for
the functions that feed an optimiser, right values with a wrong gradient."""
import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minirlhf import exercises as ex
from minirlhf import losses
from minirlhf.best_of_n import best_of_n_probs, best_of_n_weights, kl_best_of_n_exact
from minirlhf.feedback import category_kappa
from minirlhf.logprobs import gather_last
from minirlhf.reward import pairwise_accuracy, reward_step
from conftest import assert_check_behaves


# ---------------------------------------------------------------- 06 Cohen's kappa
def kappa_counter(x, y):                  # right: with collections.Counter
    n, fx, fy = len(x), Counter(x), Counter(y)
    p_o = sum(a == b for a, b in zip(x, y)) / n
    p_e = sum(fx[c] * fy[c] for c in fx) / n ** 2
    return (p_o - p_e) / (1 - p_e)


def raw_agreement(x, y):
    return sum(a == b for a, b in zip(x, y)) / len(x)


def uniform_chance(x, y):
    k = len(set(x) | set(y))
    return (raw_agreement(x, y) - 1 / k) / (1 - 1 / k)


def kappa_no_denominator(x, y):
    n = len(x)
    return raw_agreement(x, y) - sum(x.count(c) / n * y.count(c) / n for c in set(x) | set(y))


# ---------------------------------------------------------------- 07 Bradley-Terry loss
def bt_softplus(c, r):                    # right: -log sigma(m) = softplus(-m), stable
    return F.softplus(r - c).mean()


def bt_unstable(c, r):
    return -torch.log(torch.sigmoid(c - r)).mean()


def bt_softplus_by_hand(c, r):
    return torch.log1p(torch.exp(r - c)).mean()


def bt_swapped(c, r):
    return -F.logsigmoid(r - c).mean()


def bt_sum(c, r):
    return -F.logsigmoid(c - r).sum()


def bt_no_minus(c, r):
    return F.logsigmoid(c - r).mean()


# ---------------------------------------------------------------- 07 the last real token
def last_by_where(v, m):                  # right: the notebook's max over where(mask, positions, -1)
    last = torch.where(m.bool(), torch.arange(m.size(1)), -1).max(dim=1).values
    return v.gather(1, last[:, None]).squeeze(1)


def last_by_flip(v, m):                   # right: the first True of the reversed row
    last = m.size(1) - 1 - m.long().flip(1).argmax(1)
    return v[torch.arange(v.size(0)), last]


def last_by_one_hot(v, m):                # right: a one-hot product (the gradient reaches that position only)
    first_of_rest = m.long().flip(1).cumsum(1).flip(1) == 1
    return (v * (first_of_rest & m)).sum(1)


def last_column(v, m):
    return v[:, -1]


def count_not_index(v, m):
    return v.gather(1, m.long().sum(1, keepdim=True).clamp(max=v.size(1) - 1)).squeeze(1)


def right_padding_only(v, m):
    return v[torch.arange(v.size(0)), m.long().sum(1) - 1]


def first_token(v, m):
    return v[:, 0]


def last_column_or_count(v, m):           # right on left- and right-padded rows only
    last = torch.where(m[:, -1], m.size(1) - 1, m.long().sum(1) - 1)
    return v[torch.arange(v.size(0)), last]


def before_first_false(v, m):             # right on left- and right-padded rows only (-1 wraps around)
    return v[torch.arange(v.size(0)), (~m).long().argmax(1) - 1]


# ---------------------------------------------------------------- 07 ranking loss
def ranking_loops(r):                     # right: every pair i < j, one by one
    K = r.size(1)
    pairs = [F.logsigmoid(r[:, i] - r[:, j]) for i in range(K) for j in range(i + 1, K)]
    return -torch.stack(pairs, 1).mean()


def ranking_sum_of_pairs(r):
    i, j = torch.triu_indices(r.size(1), r.size(1), offset=1)
    return -F.logsigmoid(r[:, i] - r[:, j]).sum(1).mean()


def ranking_unstable(r):
    i, j = torch.triu_indices(r.size(1), r.size(1), offset=1)
    return -torch.log(torch.sigmoid(r[:, i] - r[:, j])).mean()


def ranking_losers_detached(r):           # right value; only the better response of each pair is trained
    i, j = torch.triu_indices(r.size(1), r.size(1), offset=1)
    return -F.logsigmoid(r[:, i] - r.detach()[:, j]).mean()


# ---------------------------------------------------------------- 08 best-of-N
def weights_reversed(m, n):
    return best_of_n_weights(m, n).flip(0)


def weights_with_replacement(m, n):
    i = torch.arange(1, m + 1, dtype=torch.float64)
    return (i / m) ** n - ((i - 1) / m) ** n


def weights_off_by_one(m, n):
    return torch.tensor([math.comb(i, n - 1) / math.comb(m, n) for i in range(1, m + 1)], dtype=torch.float64)


def weights_choose_n(m, n):
    return torch.tensor([math.comb(i - 1, n) / math.comb(m, n) for i in range(1, m + 1)], dtype=torch.float64)


def weights_unnormalised(m, n):
    return torch.tensor([float(math.comb(i - 1, n - 1)) for i in range(1, m + 1)], dtype=torch.float64)


def weights_float_binomials(m, n):      # right formula, computed in float: overflows at m = 1200
    i = torch.arange(1, m + 1, dtype=torch.float64)
    lg = torch.lgamma
    comb = lambda a, b: torch.exp(lg(a + 1) - lg(b + 1) - lg(a - b + 1))  # noqa: E731
    c = comb(i - 1, torch.tensor(float(n - 1))) * (i >= n)
    total = comb(torch.tensor(float(m)), torch.tensor(float(n)))
    return c / total if total < 1e300 else c * float("inf")


def weights_python_ints(m, n):           # a correct answer with exact integers
    return torch.tensor([math.comb(i - 1, n - 1) / math.comb(m, n) for i in range(1, m + 1)], dtype=torch.float64)


def kl_ties_not_merged(r, n):
    m = len(r)
    i = torch.arange(1, m + 1, dtype=torch.float64)
    q = (i / m) ** n - ((i - 1) / m) ** n
    return (q * (q * m).log()).sum()


def kl_formula(r, n):
    return torch.tensor(math.log(n) - (n - 1) / n)


def _p_cdf(r):
    p = torch.unique(r, return_counts=True)[1].double() / len(r)
    return p, torch.cumsum(p, 0)


def kl_no_lower_term(r, n):
    p, cdf = _p_cdf(r)
    q = cdf ** n
    return (q * (q / p).log()).sum()


def kl_density(r, n):
    p, cdf = _p_cdf(r)
    q = n * cdf ** (n - 1) * p
    return (q * (q / p).log()).sum()


def kl_reversed(r, n):
    p, _ = _p_cdf(r)
    q = best_of_n_probs(p, n)
    return (p * (p / q).log()).sum()


def kl_log2(r, n):
    return kl_best_of_n_exact(r, n) / math.log(2)


def kl_plain(r, n):                       # a correct answer, written the plain way
    values, counts = torch.unique(r, return_counts=True)
    p = counts.double() / len(r)
    cdf = torch.cumsum(p, 0)
    q = cdf ** n - torch.cat([torch.zeros(1, dtype=torch.float64), cdf[:-1]]) ** n
    return (q * torch.log(q / p)).sum()


SCALAR_FLOAT = r"expected a torch.Tensor of shape \(\), got float\. Return the tensor itself"


# ---------------------------------------------------------------- 07 the reward model's training step
def reward_step_written(two_passes=False, swap=False, unstable=False, last_column=False, zero=True, clip=True,
                        keep_graph=False):
    """A step written the way a student would (softplus, model.zero_grad, accuracy by hand), one mistake switched on;
    two_passes scores chosen and rejected rows in two forward passes: right, only slower."""
    def step(rm, optimizer, tokens, mask, grad_clip):
        B = tokens.size(0) // 2
        if two_passes:
            chosen, rejected = rm(tokens[:B], mask[:B]), rm(tokens[B:], mask[B:])
        elif last_column:
            rewards = rm.scale * rm.head(rm.gpt.hidden_states(tokens, mask))[:, -1] + rm.bias
            chosen, rejected = rewards[:B], rewards[B:]
        else:
            rewards = rm(tokens, mask)
            chosen, rejected = rewards[:B], rewards[B:]
        if swap:
            chosen, rejected = rejected, chosen
        margin = chosen - rejected
        loss = -torch.log(torch.sigmoid(margin)).mean() if unstable else F.softplus(-margin).mean()
        if zero:
            rm.zero_grad()
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(rm.parameters(), max_norm=grad_clip)
        optimizer.step()
        return (loss if keep_graph else loss.item()), (margin > 0).float().mean().item()
    return step


def test_reward_step_check(capsys):
    def swapped_in_the_loss_only(rm, optimizer, tokens, mask, grad_clip):
        chosen, rejected = rm(tokens, mask).chunk(2)
        loss = losses.bradley_terry_loss(rejected, chosen)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(rm.parameters(), grad_clip)
        optimizer.step()
        return loss.item(), pairwise_accuracy(chosen.detach(), rejected.detach())

    wrongs = [
        (reward_step_written(swap=True), "first B rows are the CHOSEN"),
        (swapped_in_the_loss_only, "the loss has chosen and rejected swapped"),
        (reward_step_written(unstable=True), "nan or inf.*F.logsigmoid"),
        (reward_step_written(last_column=True), "last column"),
        (reward_step_written(zero=False), "zero_grad"),
        (reward_step_written(clip=False), "not clipped"),
        (reward_step_written(keep_graph=True), "tensor with its graph: return loss.item"),
        (lambda *args: reward_step(*args)[0], r"expected a tuple of 2 numbers, got float"),
        (lambda *args: None, "returned None"),
        (lambda *args: 0.5, "expected a tuple"),                 # no step taken at all
        (lambda *args: (0.6408, 0.75), "expected"),              # the case's loss and accuracy, no step taken
    ]
    rights = [reward_step, reward_step_written(), reward_step_written(two_passes=True)]
    assert_check_behaves(ex.check_reward_step, rights, wrongs, capsys, reference=reward_step)


def test_reward_step_check_restores_the_global_rng():
    torch.manual_seed(3)
    before = torch.get_rng_state()
    ex.check_reward_step(reward_step)
    assert torch.equal(before, torch.get_rng_state())


CHECKS = [    # (check, the function a stub falls back on if it is public, right answers, (wrong answer, hint))
    (ex.check_cohens_kappa, None, [category_kappa, kappa_counter], [
        (raw_agreement, "raw agreement"), (uniform_chance, "own label frequencies"),
        (kappa_no_denominator, "denominator"),
        (lambda x, y: np.float32(category_kappa(x, y)), "expected a Python float .*got numpy.float32"),
        (lambda x, y: [category_kappa(x, y)], r"got a list of 1 item \(float\)"),
        (lambda x, y: f"{category_kappa(x, y):.3f}", "got str"),
    ]),
    (ex.check_bradley_terry_loss, losses.bradley_terry_loss, [losses.bradley_terry_loss, bt_softplus], [
        (bt_unstable, "unstable"), (bt_softplus_by_hand, "unstable"), (bt_swapped, "swapped"),
        (bt_sum, "not the sum"), (bt_no_minus, "minus sign"),
        (lambda c, r: losses.bradley_terry_loss(c, r).item(), SCALAR_FLOAT),
        (lambda c, r: -F.logsigmoid(c - r).mean(0, keepdim=True), r"expected a 0-d tensor"),
        (lambda c, r: -F.logsigmoid(c - r.detach()).mean(), "no gradient reaches the reward_rejected"),
    ]),
    (ex.check_gather_last, gather_last, [gather_last, last_by_where, last_by_flip, last_by_one_hot], [
        (last_column, "last column"), (count_not_index, "off by one"), (right_padding_only, "only for RIGHT padding"),
        (first_token, "first token"),
        (last_column_or_count, "last column when a row ends with a real token.*padded on BOTH sides"),
        (before_first_false, "token before the first False.*padded on BOTH sides"),
        (lambda v, m: gather_last(v, m).tolist(), r"expected a torch.Tensor of shape \(3,\), got a list of 3 items"),
        (lambda v, m: gather_last(v, m).detach().numpy(), "got numpy.ndarray"),
        (lambda v, m: torch.tensor(gather_last(v, m).tolist()), "no gradient reaches the values"),
    ]),
    (ex.check_ranking_loss, losses.ranking_loss, [losses.ranking_loss, ranking_loops], [
        (lambda r: -F.logsigmoid(r[:, :-1] - r[:, 1:]).mean(), "neighbours"),
        (lambda r: -F.logsigmoid(r[:, :1] - r[:, 1:]).mean(), "only the best"),
        (lambda r: losses.ranking_loss(r.flip(1)), "reversed"),
        (ranking_sum_of_pairs, r"C\(K, 2\)"), (ranking_unstable, "unstable"),
        (lambda r: losses.ranking_loss(r).item(), SCALAR_FLOAT),
        (lambda r: losses.ranking_loss(r).reshape(1, 1), r"expected a 0-d tensor .* got shape \(1, 1\)"),
        (ranking_losers_detached, "the gradient with respect to the rewards is not: expected"),
    ]),
    (ex.check_best_of_n_weights, best_of_n_weights, [best_of_n_weights, weights_python_ints], [
        (weights_reversed, "reversed"), (weights_with_replacement, "WITH-replacement"),
        (weights_off_by_one, r"not C\(i, n - 1\)"), (weights_choose_n, r"not C\(i - 1, n\)"),
        (weights_unnormalised, "not normalised"), (weights_float_binomials, "nan or inf.*overflows float64"),
        (lambda m, n: best_of_n_weights(m, n).numpy(), r"expected a torch.Tensor of shape \(5,\), got numpy.ndarray"),
        (lambda m, n: best_of_n_weights(m, n).tolist(), "got a list of 5 items"),
        (lambda m, n: best_of_n_weights(m, n).long() if n == m else best_of_n_weights(m, n),   # [0, ..., 0, 1]
         "expected a floating-point tensor, got dtype torch.int64"),
    ]),
    (ex.check_kl_best_of_n_exact, kl_best_of_n_exact, [kl_best_of_n_exact, kl_plain], [
        (kl_ties_not_merged, "merge ties"), (kl_formula, "continuous reward with no ties"),
        (kl_no_lower_term, r"F_k\^n alone"), (kl_density, "CONTINUOUS reward"), (kl_reversed, "wrong way round"),
        (kl_log2, "natural log"),
        (lambda r, n: float(kl_best_of_n_exact(r, n)), SCALAR_FLOAT),
    ]),
]


@pytest.mark.parametrize("check,fallback,rights,wrongs", CHECKS, ids=[c[0].__name__ for c in CHECKS])
def test_check_accepts_right_answers_falls_back_on_stub_and_rejects_mistakes(check, fallback, rights, wrongs, capsys):
    assert_check_behaves(check, rights, wrongs, capsys, reference=fallback)
