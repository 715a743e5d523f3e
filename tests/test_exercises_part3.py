"""exercises/part3.py: every check of notebooks 09-12 accepts right answers and rejects plausible mistakes."""

import pytest
import torch
import torch.nn.functional as F

from minirlhf import exercises as ex
from minirlhf import losses
from minirlhf.advantages import gae
from minirlhf.overoptimization import fit_gao, gao_penalty
from minirlhf.reward import gold_order_agreement
from minirlhf.rl import rlhf_rewards
from conftest import assert_check_behaves


def _lstsq(columns, y):
    return tuple(torch.linalg.lstsq(torch.stack(columns, 1), y[:, None]).solution.squeeze(1).tolist())


def test_fit_gao_check(capsys):
    right = lambda d, y, form: fit_gao(d, y, form)  # noqa: E731

    def naive_log(d, y, form):      # d log d written directly: nan at d = 0
        f = d * d if form == "best_of_n" else d * torch.log(d)
        return _lstsq([d, -f], y)

    wrongs = [
        (lambda d, y, form: _lstsq([torch.ones_like(d), d, -gao_penalty(d, form)], y)[1:], "intercept"),
        (lambda d, y, form: _lstsq([d, gao_penalty(d, form)], y), "wrong sign"),
        (lambda d, y, form: _lstsq([d, -d * d], y), "d log d, not d\\^2"),
        (lambda d, y, form: _lstsq([d, -gao_penalty(d, form)], y)[::-1], "in that order"),
        (naive_log, "nan|NaN"),
        (lambda d, y, form: _lstsq([d * d, -gao_penalty(d * d, form)], y), "expected"),   # fitted against KL, not sqrt(KL)
    ]
    assert_check_behaves(ex.check_fit_gao, right, wrongs, capsys, reference=fit_gao)


def test_gold_order_agreement_check(capsys):
    def right(ra, rb, ga, gb):
        keep = ga != gb
        s = ((ra - rb) * (ga - gb) > 0).double() + 0.5 * (ra == rb).double()
        return float(s[keep].mean())

    def with_ties(ra, rb, ga, gb):
        return float((((ra - rb) * (ga - gb) > 0).double() + 0.5 * (ra == rb).double()).mean())

    wrongs = [
        (with_ties, "EQUAL gold"),
        (lambda ra, rb, ga, gb: float(((ra - rb) * (ga - gb) > 0).double()[ga != gb].mean()), "coin flip"),
        (lambda ra, rb, ga, gb: 1 - right(ra, rb, ga, gb), "DISagreement"),
        (lambda ra, rb, ga, gb: float(((ra > rb) == (ga > gb)).double().mean()), "expected|EQUAL"),
    ]
    assert_check_behaves(ex.check_gold_order_agreement, right, wrongs, capsys, reference=gold_order_agreement)


def token_logp(logits, targets, temperature):
    return F.log_softmax(logits / temperature, -1).gather(-1, targets[..., None]).squeeze(-1)


def right_logprobs(logits, targets, mask, temperature):
    return torch.where(mask, token_logp(logits, targets, temperature), 0.0).sum(1)


CHECKS_09 = [
    (ex.check_sequence_logprobs, right_logprobs, [
        (lambda lg, t, m, T: right_logprobs(lg / T, t, m, 1.0 / T), "temperature is missing"),
        (lambda lg, t, m, T: token_logp(lg, t, T).sum(1), "padding after EOS"),
        (lambda lg, t, m, T: right_logprobs(lg, t, m, T) / m.sum(1), "not their mean"),
        (lambda lg, t, m, T: right_logprobs(lg, t, m, 1 / T), "divide them"),
        (lambda lg, t, m, T: (token_logp(lg, t, T) * m).sum(1), "nan"),
        (lambda lg, t, m, T: torch.where(m, token_logp(lg, t, T), 0.0), "shape"),
    ]),
    (ex.check_leave_one_out_baseline, lambda G: (G.sum() - G) / (len(G) - 1), [
        (lambda G: G.mean().expand_as(G), "plain batch mean"),
        (lambda G: (G.sum() - G) / len(G), "B - 1"),
        (lambda G: G - (G.sum() - G) / (len(G) - 1), "not the advantage"),
        (lambda G: torch.zeros_like(G), "expected"),
    ]),
]


@pytest.mark.parametrize("check,right,wrongs", CHECKS_09, ids=[c[0].__name__ for c in CHECKS_09])
def test_checks_accept_right_answers_fall_back_on_stub_and_reject_mistakes_09(check, right, wrongs, capsys):
    assert_check_behaves(check, right, wrongs, capsys)


# ---------------------------------------------------------------- exercise checks
def clip_no_min(lp, old, a, eps):
    return -(torch.exp(lp - old) * a).mean()


def clip_max(lp, old, a, eps):
    r = torch.exp(lp - old)
    return -torch.max(r * a, r.clamp(1 - eps, 1 + eps) * a).mean()


def clip_only_clipped(lp, old, a, eps):
    return -(torch.exp(lp - old).clamp(1 - eps, 1 + eps) * a).mean()


def clip_log_ratio(lp, old, a, eps):
    r = lp - old
    return -torch.min(r * a, r.clamp(1 - eps, 1 + eps) * a).mean()


def clip_inverted(lp, old, a, eps):
    r = torch.exp(old - lp)
    return -torch.min(r * a, r.clamp(1 - eps, 1 + eps) * a).mean()


def clip_sign(lp, old, a, eps):
    return -losses.ppo_clip_loss(lp, old, a, eps)


def clip_sum(lp, old, a, eps):
    r = torch.exp(lp - old.detach())
    return -torch.min(r * a.detach(), r.clamp(1 - eps, 1 + eps) * a.detach()).sum()


def clip_not_detached(lp, old, a, eps):
    r = torch.exp(lp - old)
    return -torch.min(r * a, r.clamp(1 - eps, 1 + eps) * a).mean()


def gae_forward_loop(r, v, m, gamma, lam):
    mf = m.float()
    a = torch.zeros_like(r)
    prev = torch.zeros_like(r[:, 0])
    for t in range(r.size(1)):   # wrong direction
        nxt_v = v[:, t + 1] * mf[:, t + 1] if t + 1 < r.size(1) else torch.zeros_like(prev)
        prev = (r[:, t] + gamma * nxt_v - v[:, t] + gamma * lam * prev) * mf[:, t]
        a[:, t] = prev
    return a, (a + v) * mf


def gae_unmasked(r, v, m, gamma, lam):
    return gae(r, v, torch.ones_like(m), gamma, lam)


def gae_masked_outputs_only(r, v, m, gamma, lam):
    a, ret = gae(r, v, torch.ones_like(m), gamma, lam)
    return a * m, ret * m


def gae_swapped(r, v, m, gamma, lam):
    return gae(r, v, m, lam, gamma)


def gae_no_lam(r, v, m, gamma, lam):
    return gae(r, v, m, gamma, 1.0)


def gae_returns_are_advantages(r, v, m, gamma, lam):
    a, _ = gae(r, v, m, gamma, lam)
    return a, a


def gae_no_bootstrap(r, v, m, gamma, lam):
    mf = m.float()
    delta = (r - v) * mf
    a, nxt = torch.zeros_like(r), torch.zeros_like(r[:, 0])
    for t in reversed(range(r.size(1))):
        nxt = (delta[:, t] + gamma * lam * nxt) * mf[:, t]
        a[:, t] = nxt
    return a, (a + v) * mf


def gae_discounted_returns(r, v, m, gamma, lam):
    a, _ = gae(r, v, m, gamma, lam)
    ret, running = torch.zeros_like(r), torch.zeros_like(r[:, 0])
    for t in reversed(range(r.size(1))):
        running = r[:, t] * m[:, t] + gamma * running
        ret[:, t] = running * m[:, t]
    return a, ret


def gae_returns_only(r, v, m, gamma, lam):
    return gae(r, v, m, gamma, lam)[0]


def rewards_last_column(s, lp, lr, m, beta, f, pen):
    out = -beta * (lp - lr) * m
    out[:, -1] += s - pen * (~f).float()
    return out


def rewards_first_token(s, lp, lr, m, beta, f, pen):
    out = -beta * (lp - lr) * m
    out[:, 0] += s - pen * (~f).float()
    return out


def rewards_kl_sign(s, lp, lr, m, beta, f, pen):
    return rlhf_rewards(s, lr, lp, m, beta, f, pen)


def rewards_kl_on_padding(s, lp, lr, m, beta, f, pen):
    out = -beta * (lp - lr)
    idx = m.sum(1) - 1
    out[torch.arange(len(s)), idx] += s - pen * (~f).float()
    return out


def rewards_no_penalty(s, lp, lr, m, beta, f, pen):
    return rlhf_rewards(s, lp, lr, m, beta, torch.ones_like(f), pen)


def rewards_penalty_replaces(s, lp, lr, m, beta, f, pen):
    return rlhf_rewards(torch.where(f, s, -pen * torch.ones_like(s)), lp, lr, m, beta, torch.ones_like(f), pen)


def rewards_after_last(s, lp, lr, m, beta, f, pen):
    out = -beta * (lp - lr) * m
    idx = m.sum(1).clamp(max=m.size(1) - 1)
    out[torch.arange(len(s)), idx] += s - pen * (~f).float()
    return out


def rewards_every_token(s, lp, lr, m, beta, f, pen):
    return -beta * (lp - lr) * m + (s - pen * (~f).float())[:, None] * m


def rewards_penalty_on_finished(s, lp, lr, m, beta, f, pen):
    return rlhf_rewards(s, lp, lr, m, beta, ~f, pen)


def rewards_no_beta(s, lp, lr, m, beta, f, pen):
    return rlhf_rewards(s, lp, lr, m, 1.0, f, pen)


CHECKS_10 = [
    (ex.check_ppo_clip_loss, losses.ppo_clip_loss,
     [(clip_no_min, "nothing is clipped"), (clip_max, "max"), (clip_only_clipped, "only the clipped term"),
      (clip_log_ratio, "not exponentiated"), (clip_inverted, "upside down"), (clip_sign, "sign is flipped"),
      (clip_sum, "not the sum"), (clip_not_detached, "gradient flows into the old_logprobs")]),
    (ex.check_gae, gae,
     [(gae_forward_loop, "forward in time"), (gae_unmasked, "padding is not ignored"),
      (gae_masked_outputs_only, "bootstrapped from the value of the padding"), (gae_swapped, "swapped"),
      (gae_no_lam, "lam is missing"), (gae_returns_are_advantages, "returns are the advantages"),
      (gae_no_bootstrap, "no bootstrap"), (gae_discounted_returns, "discounted rewards"),
      (gae_returns_only, "must return a tuple")]),
    (ex.check_kl_penalty_rewards, rlhf_rewards,
     [(rewards_last_column, "last COLUMN"), (rewards_first_token, "first response token"),
      (rewards_kl_sign, "wrong sign"), (rewards_kl_on_padding, "also applied on the padding"),
      (rewards_no_penalty, "must lose no_eos_penalty"), (rewards_penalty_replaces, "REPLACED"),
      (rewards_no_beta, "beta is missing"), (rewards_after_last, "off by one"), (rewards_every_token, "every token"),
      (rewards_penalty_on_finished, "FINISHED")]),
]


@pytest.mark.parametrize("check,reference,wrongs", CHECKS_10, ids=[c[0].__name__ for c in CHECKS_10])
def test_checks_accept_reference_fall_back_on_stub_and_reject_mistakes_10(check, reference, wrongs, capsys):
    assert_check_behaves(check, reference, wrongs, capsys, reference=reference)
