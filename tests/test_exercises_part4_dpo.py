"""The checks of notebook 13 (exercises/part4_dpo.py) accept right answers written differently, fall back on the
package's loss for a stub, and name the usual mistakes, in values and in gradients."""
import pytest
import torch
import torch.nn.functional as F

from minirlhf import exercises as ex
from minirlhf import losses
from conftest import assert_check_behaves

SCALAR_FLOAT = r"expected a torch.Tensor of shape \(\), got float\. Return the tensor itself"


def dpo_by_softplus(pc, pr, rc, rr, beta):            # -log sigma(z) = softplus(-z): right, written differently
    z = beta * ((pc - pr) - (rc - rr).detach())
    return F.softplus(-z).sum() / z.numel()


def dpo_naive_log_sigmoid(pc, pr, rc, rr, beta):
    return -torch.log(torch.sigmoid(beta * ((pc - rc.detach()) - (pr - rr.detach())))).mean()


def dpo_log1p_exp(pc, pr, rc, rr, beta):
    return torch.log1p(torch.exp(-beta * ((pc - rc.detach()) - (pr - rr.detach())))).mean()


def dpo_not_detached(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean()


def ipo_expanded(pc, pr, rc, rr, beta):
    d = (pc - pr) - (rc - rr).detach() - 0.5 / beta
    return (d * d).mean()


CHECKS = [
    (ex.check_dpo_loss, losses.dpo_loss, [losses.dpo_loss, dpo_by_softplus], [
        (lambda pc, pr, rc, rr, b: losses.dpo_loss(pr, pc, rr, rc, b), "sign is flipped"),
        (lambda pc, pr, rc, rr, b: -losses.dpo_loss(pc, pr, rc, rr, b), "missing its minus sign"),
        (lambda pc, pr, rc, rr, b: losses.dpo_loss(pc, pr, rc, rr, 1.0), "beta is missing"),
        (lambda pc, pr, rc, rr, b: b * losses.dpo_loss(pc, pr, rc, rr, 1.0), "beta multiplies the loss"),
        (lambda pc, pr, rc, rr, b: -F.logsigmoid(b * (pc - pr)).mean(), "reference is not subtracted"),
        (lambda pc, pr, rc, rr, b: losses.dpo_loss(pc, pr, rc, rr, b) * len(pc), "not the sum"),
        (lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((pc - rc) - (pr - rr))), r"0-d tensor"),
        (lambda *a: losses.dpo_loss(*a).item(), SCALAR_FLOAT),
        (dpo_naive_log_sigmoid, "F.logsigmoid"),
        (dpo_log1p_exp, "F.logsigmoid"),
        (dpo_not_detached, r"reference's log-probs.*\.detach\(\)"),
    ]),
    (ex.check_ipo_loss, losses.ipo_loss, [losses.ipo_loss, ipo_expanded], [
        (lambda pc, pr, rc, rr, b: (((pc - rc) - (pr - rr) - 1 / b) ** 2).mean(), r"1/\(2 beta\), not 1/beta"),
        (lambda pc, pr, rc, rr, b: ((b * ((pc - rc) - (pr - rr)) - 0.5 / b) ** 2).mean(), "beta multiplies h"),
        (lambda pc, pr, rc, rr, b: losses.ipo_loss(pr, pc, rr, rc, b), "margin is flipped"),
        (lambda pc, pr, rc, rr, b: ((pc - pr - 0.5 / b) ** 2).mean(), "reference is not subtracted"),
        (lambda pc, pr, rc, rr, b: ((pc - rc) - (pr - rr) - 0.5 / b).abs().mean(), "not squared"),
        (lambda pc, pr, rc, rr, b: losses.ipo_loss(pc, pr, rc, rr, b) * len(pc), "not the sum"),
        (lambda pc, pr, rc, rr, b: (((pc - rc) - (pr - rr) - 0.5 / b) ** 2).mean(), r"reference's log-probs"),
    ]),
]


@pytest.mark.parametrize("check,fallback,rights,wrongs", CHECKS, ids=[c[0].__name__ for c in CHECKS])
def test_check_accepts_right_answers_falls_back_on_stub_and_rejects_mistakes(check, fallback, rights, wrongs, capsys):
    assert_check_behaves(check, rights, wrongs, capsys, reference=fallback)
