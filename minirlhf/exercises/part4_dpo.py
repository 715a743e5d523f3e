"""Checks of notebook 13's exercises (DPO and friends): the DPO loss and the IPO loss from summed log-probs."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .. import losses
from .engine import run_check, seeded

_ARGS = {0: "policy_chosen", 1: "policy_rejected", 2: "ref_chosen", 3: "ref_rejected"}
_OVERFLOW = ("At a margin of beta * h = -200, log(sigmoid(x)) is log(0) = -inf in float32 and log(1 + exp(-x)) "
             "overflows: use F.logsigmoid(x), which is exact at any margin.")
_REFERENCE_GRADIENT = ("gradient flows into the reference's log-probs: they are constants (computed once, before "
                       "training, under no_grad), so .detach() ref_chosen and ref_rejected.")


def _cases(seed: int, beta: float) -> list[tuple[str, tuple]]:
    """Summed response log-probs (B,) as a real batch has them: tens of nats, chosen and rejected of different
    lengths, the policy a little away from the reference; then margins so large that log(sigmoid) overflows."""
    g = seeded(seed)
    rc, rr = -20 - 40 * torch.rand(6, generator=g), -20 - 40 * torch.rand(6, generator=g)
    pc, pr = rc + 3 * torch.randn(6, generator=g), rr + 3 * torch.randn(6, generator=g)
    far = torch.tensor([-30.0, -30.0, -45.0])
    return [
        ("a batch of 6 pairs, beta %g" % beta, (pc, pr, rc, rr, beta)),
        ("the start of training: policy = reference", (rc.clone(), rr.clone(), rc, rr, beta)),
        ("another beta (0.5)", (pc, pr, rc, rr, 0.5)),
        ("extreme margins: beta * h = +200, -200 and 0",
         (far + torch.tensor([0.0, -2000.0, 0.0]), far + torch.tensor([-2000.0, 0.0, 0.0]), far, far, 0.1)),
    ]


def check_dpo_loss(fn: Callable) -> Callable:
    """fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta) -> scalar DPO loss.

        h = [log pi(y_w) - log pi_ref(y_w)] - [log pi(y_l) - log pi_ref(y_l)]
        L = -mean_b log sigma(beta * h_b)

    All inputs (B,) summed response log-probs. Values and gradients are compared: the gradient must reach the
    policy's log-probs and not the reference's (constants), and stay finite at margins of +-200.
    """
    def h(pc, pr, rc, rr):
        return (pc - rc) - (pr - rr)

    def attached(pc, pr, rc, rr, beta):
        return -F.logsigmoid(beta * h(pc, pr, rc, rr)).mean()

    mistakes = {
        "the sign is flipped: the CHOSEN response's log-ratio comes first, h = [log pi(y_w) - log pi_ref(y_w)] - "
        "[log pi(y_l) - log pi_ref(y_l)], and L = -log sigma(beta h) falls as h grows.":
            lambda pc, pr, rc, rr, beta: losses.dpo_loss(pr, pc, rr, rc, beta),
        "the loss is missing its minus sign: minimise the NEGATIVE log-likelihood, -mean log sigma(beta h).":
            lambda pc, pr, rc, rr, beta: -losses.dpo_loss(pc, pr, rc, rr, beta),
        "beta is missing: the implicit reward is beta * log pi/pi_ref, so the sigmoid reads beta * h.":
            lambda pc, pr, rc, rr, beta: losses.dpo_loss(pc, pr, rc, rr, 1.0),
        "beta multiplies the loss, not the margin: L = -log sigma(beta h), beta inside the sigmoid.":
            lambda pc, pr, rc, rr, beta: beta * losses.dpo_loss(pc, pr, rc, rr, 1.0),
        "the reference is not subtracted: h compares log-RATIOS log pi(y)/pi_ref(y), so subtract ref_chosen "
        "and ref_rejected (without them the loss just prefers short responses, which have larger log-probs).":
            lambda pc, pr, rc, rr, beta: -F.logsigmoid(beta * (pc - pr)).mean(),
        "the reference is added, not subtracted: h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected).":
            lambda pc, pr, rc, rr, beta: -F.logsigmoid(beta * ((pc + rc) - (pr + rr))).mean(),
        "use the mean over pairs, not the sum.":
            lambda pc, pr, rc, rr, beta: losses.dpo_loss(pc, pr, rc, rr, beta) * pc.numel(),
    }
    grad_mistakes = {_REFERENCE_GRADIENT: attached}
    return run_check("dpo_loss", fn, losses.dpo_loss, _cases(13, 0.1), mistakes, grad_args=_ARGS,
                     grad_mistakes=grad_mistakes, nonfinite_hint=_OVERFLOW)


def check_ipo_loss(fn: Callable) -> Callable:
    """fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta) -> scalar IPO loss.

        L = mean_b ( h_b - 1 / (2 beta) )^2,   h as in DPO (summed log-probs)

    Values and gradients are compared (the reference's log-probs are constants).
    """
    def h(pc, pr, rc, rr):
        return (pc - rc) - (pr - rr)

    mistakes = {
        "the target margin is 1/(2 beta), not 1/beta: L = (h - 1/(2 beta))^2.":
            lambda pc, pr, rc, rr, beta: ((h(pc, pr, rc, rr) - 1 / beta) ** 2).mean(),
        "beta multiplies h: IPO compares the raw log-ratio margin h with 1/(2 beta), (h - 1/(2 beta))^2.":
            lambda pc, pr, rc, rr, beta: ((beta * h(pc, pr, rc, rr) - 1 / (2 * beta)) ** 2).mean(),
        "the margin is flipped: h = [log pi(y_w) - log pi_ref(y_w)] - [log pi(y_l) - log pi_ref(y_l)], chosen first.":
            lambda pc, pr, rc, rr, beta: losses.ipo_loss(pr, pc, rr, rc, beta),
        "the reference is not subtracted: h compares log-ratios log pi(y)/pi_ref(y).":
            lambda pc, pr, rc, rr, beta: ((pc - pr - 1 / (2 * beta)) ** 2).mean(),
        "the distance is not squared: IPO is a squared loss, (h - 1/(2 beta))^2.":
            lambda pc, pr, rc, rr, beta: (h(pc, pr, rc, rr) - 1 / (2 * beta)).abs().mean(),
        "use the mean over pairs, not the sum.":
            lambda pc, pr, rc, rr, beta: losses.ipo_loss(pc, pr, rc, rr, beta) * pc.numel(),
    }
    grad_mistakes = {_REFERENCE_GRADIENT: lambda pc, pr, rc, rr, beta: ((h(pc, pr, rc, rr) - 1 / (2 * beta)) ** 2).mean()}
    return run_check("ipo_loss", fn, losses.ipo_loss, _cases(14, 0.1)[:3], mistakes, grad_args=_ARGS,
                     grad_mistakes=grad_mistakes)
