"""exercises/part2.py: every check of notebooks 06-08 accepts right answers and rejects plausible mistakes."""
import math

import pytest
import torch
import torch.nn.functional as F

from minirlhf import exercises as ex
from minirlhf import losses
from minirlhf.best_of_n import best_of_n_probs, best_of_n_weights, kl_best_of_n_exact
from minirlhf.feedback import category_kappa
from minirlhf.logprobs import gather_last
from conftest import assert_check_behaves, stub


# ---------------------------------------------------------------- exercise checks (notebook 08)
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


CHECKS_08 = [
    (ex.check_best_of_n_weights, best_of_n_weights,
     [(weights_reversed, "reversed"), (weights_with_replacement, "WITH-replacement"),
      (weights_off_by_one, r"not C\(i, n - 1\)"), (weights_choose_n, r"not C\(i - 1, n\)"),
      (weights_unnormalised, "not normalised"), (weights_float_binomials, "overflows float64")]),
    (ex.check_kl_best_of_n_exact, kl_best_of_n_exact,
     [(kl_ties_not_merged, "merge ties"), (kl_formula, "continuous reward with no ties"),
      (kl_no_lower_term, r"F_k\^n alone"), (kl_density, "CONTINUOUS reward"), (kl_reversed, "wrong way round"),
      (kl_log2, "natural log")]),
]


@pytest.mark.parametrize("check,reference,wrongs", CHECKS_08, ids=[c[0].__name__ for c in CHECKS_08])
def test_checks_accept_reference_fall_back_on_stub_and_reject_mistakes_08(check, reference, wrongs, capsys):
    assert_check_behaves(check, reference, wrongs, capsys, reference=reference)


def test_checks_accept_other_correct_answers(capsys):
    assert ex.check_best_of_n_weights(weights_python_ints) is weights_python_ints
    assert ex.check_kl_best_of_n_exact(kl_plain) is kl_plain
    assert capsys.readouterr().out.count("correct on all") == 2


def test_cohens_kappa_check():
    def raw_agreement(x, y):
        return sum(a == b for a, b in zip(x, y)) / len(x)

    def uniform_chance(x, y):
        k = len(set(x) | set(y))
        return (raw_agreement(x, y) - 1 / k) / (1 - 1 / k)

    assert ex.check_cohens_kappa(category_kappa) is category_kappa
    assert ex.check_cohens_kappa(stub) is not stub
    with pytest.raises(ex.ExerciseError, match="raw agreement"):
        ex.check_cohens_kappa(raw_agreement)
    with pytest.raises(ex.ExerciseError, match="own label frequencies"):
        ex.check_cohens_kappa(uniform_chance)


# ---------------------------------------------------------------- exercise checks
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


def last_column(v, m):
    return v[:, -1]


def count_not_index(v, m):
    return v.gather(1, m.long().sum(1, keepdim=True).clamp(max=v.size(1) - 1)).squeeze(1)


def right_padding_only(v, m):
    return v[torch.arange(v.size(0)), m.long().sum(1) - 1]


def first_token(v, m):
    return v[:, 0]


CHECKS_07 = [
    (ex.check_bradley_terry_loss, losses.bradley_terry_loss,
     [(bt_unstable, "unstable"), (bt_softplus_by_hand, "unstable"), (bt_swapped, "swapped"), (bt_sum, "not the sum"),
      (bt_no_minus, "minus sign")]),
    (ex.check_ranking_loss, losses.ranking_loss,
     [(lambda r: -F.logsigmoid(r[:, :-1] - r[:, 1:]).mean(), "neighbours"),
      (lambda r: -F.logsigmoid(r[:, :1] - r[:, 1:]).mean(), "only the best"),
      (lambda r: losses.ranking_loss(r.flip(1)), "reversed"),
      (lambda r: -F.logsigmoid(r[:, [0, 0, 1]] - r[:, [1, 2, 2]]).sum(1).mean() if r.size(1) == 3 else
       -F.logsigmoid(r[:, :1] - r[:, 1:]).sum(1).mean(), "C\\(K, 2\\)"),
      (lambda r: -torch.log(torch.sigmoid(r[:, [0, 0, 1]] - r[:, [1, 2, 2]])).mean() if r.size(1) == 3 else
       losses.ranking_loss(r), "unstable")]),
    (ex.check_gather_last, gather_last,
     [(last_column, "last column"), (count_not_index, "off by one"), (right_padding_only, "only for RIGHT padding"),
      (first_token, "first token")]),
]


@pytest.mark.parametrize("check,reference,wrongs", CHECKS_07, ids=[c[0].__name__ for c in CHECKS_07])
def test_checks_accept_reference_fall_back_on_stub_and_reject_mistakes_07(check, reference, wrongs, capsys):
    assert_check_behaves(check, reference, wrongs, capsys, reference=reference)
