"""exercises/part3.py: every check of notebooks 09-12 accepts right answers (the reference and one written
differently), falls back on a stub, and rejects plausible mistakes, right values of a wrong type and, for
the functions that feed an optimiser, right values with a wrong gradient."""

import pytest
import torch
import torch.nn.functional as F

from minirlhf import exercises as ex
from minirlhf import losses
from minirlhf.advantages import gae
from minirlhf.overoptimization import fit_gao, gao_penalty
from minirlhf.ppo import ppo_update, value_loss
from minirlhf.reward import gold_order_agreement
from minirlhf.rl import rlhf_rewards
from conftest import assert_check_behaves


# ---------------------------------------------------------------- 09 sequence log-probs
def token_logp(logits, targets, temperature):
    return F.log_softmax(logits / temperature, -1).gather(-1, targets[..., None]).squeeze(-1)


def right_logprobs(logits, targets, mask, temperature):
    return torch.where(mask, token_logp(logits, targets, temperature), 0.0).sum(1)


def logprobs_masked_fill(logits, targets, mask, temperature):     # right: masked_fill instead of where
    return token_logp(logits, targets, temperature).masked_fill(~mask, 0.0).sum(1)


def logprobs_log_of_softmax(logits, targets, mask, temperature):  # right value; log(0) at PAD makes nan gradients
    logp = torch.log(torch.softmax(logits / temperature, -1)).gather(-1, targets[..., None]).squeeze(-1)
    return torch.where(mask, logp, 0.0).sum(1)


# ---------------------------------------------------------------- 09 leave-one-out baseline
def loo_by_rows(G):                                                 # right: the mean of the others, one by one
    return torch.stack([torch.cat([G[:i], G[i + 1:]]).mean() for i in range(len(G))])


# ---------------------------------------------------------------- 10 per-token rewards
def rewards_where_scatter(s, lp, lr, m, beta, f, pen):             # right: the notebook's where and scatter_add
    rewards = torch.where(m, -beta * (lp - lr), 0.0)
    last = torch.where(m, torch.arange(m.size(1)), -1).max(dim=1).values
    return rewards.scatter_add(1, last[:, None], (s - pen * (~f).float())[:, None])


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


# ---------------------------------------------------------------- 10 GAE
def gae_row_by_row(r, v, m, gamma, lam):                            # right, as a list: each row up to its length
    a = torch.zeros_like(r)
    for b in range(r.size(0)):
        n, running = int(m[b].sum()), 0.0
        for t in reversed(range(n)):
            next_v = v[b, t + 1] if t + 1 < n else 0.0
            running = r[b, t] + gamma * next_v - v[b, t] + gamma * lam * running
            a[b, t] = running
    return [a, (a + v) * m]


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


# ---------------------------------------------------------------- 10 PPO
def clip_by_sign(lp, old, a, eps):             # right: min(r, 1 + eps) if A >= 0, else max(r, 1 - eps)
    r, a = torch.exp(lp - old.detach()), a.detach()
    return -(torch.where(a >= 0, r.clamp(max=1 + eps), r.clamp(min=1 - eps)) * a).mean()


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


def clip_from_detached_ratio(lp, old, a, eps):                      # right value; half the gradient in the clip range
    r, a = torch.exp(lp - old.detach()), a.detach()
    return -torch.min(r * a, torch.clamp(r.detach(), 1 - eps, 1 + eps) * a).mean()


def clip_from_detached_ratio_where(lp, old, a, eps):                # right value; no gradient in the clip range
    r, a = torch.exp(lp - old.detach()), a.detach()
    unclipped, clipped = r * a, torch.clamp(r.detach(), 1 - eps, 1 + eps) * a
    return -torch.where(unclipped < clipped, unclipped, clipped).mean()


def clip_advantages_not_detached(lp, old, a, eps):
    r = torch.exp(lp - old.detach())
    return -torch.min(r * a, r.clamp(1 - eps, 1 + eps) * a).mean()


# ---------------------------------------------------------------- 11 Gao et al.'s fit
def _lstsq(columns, y):
    return tuple(torch.linalg.lstsq(torch.stack(columns, 1), y[:, None]).solution.squeeze(1).tolist())


def fit_by_normal_equations(d, y, form):                            # right, as 0-d tensors: (X^T X)^-1 X^T y
    f = d * d if form == "best_of_n" else torch.where(d > 0, d * torch.log(d.clamp(min=1e-300)), 0.0)
    X = torch.stack([d, -f], 1)
    alpha, beta = torch.linalg.solve(X.T @ X, X.T @ y)
    return alpha, beta


def fit_naive_log(d, y, form):                                      # d log d written directly: nan at d = 0
    f = d * d if form == "best_of_n" else d * torch.log(d)
    return _lstsq([d, -f], y)


# ---------------------------------------------------------------- 12 agreement with the gold order
def agreement_right(ra, rb, ga, gb):
    keep = ga != gb
    s = ((ra - rb) * (ga - gb) > 0).double() + 0.5 * (ra == rb).double()
    return float(s[keep].mean())


def agreement_as_tensor(ra, rb, ga, gb):                            # right, as a 0-d tensor: sign products
    keep = ga != gb
    return (torch.sign(ra - rb) * torch.sign(ga - gb) + 1)[keep].double().mean() / 2


def agreement_with_ties(ra, rb, ga, gb):
    return float((((ra - rb) * (ga - gb) > 0).double() + 0.5 * (ra == rb).double()).mean())


SCALAR_FLOAT = r"expected a torch.Tensor of shape \(\), got float\. Return the tensor itself"

CHECKS = [    # (check, the function a stub falls back on if it is public, right answers, (wrong answer, hint))
    (ex.check_sequence_logprobs, None, [right_logprobs, logprobs_masked_fill], [
        (lambda lg, t, m, T: right_logprobs(lg / T, t, m, 1.0 / T), "temperature is missing"),
        (lambda lg, t, m, T: token_logp(lg, t, T).sum(1), "padding after EOS"),
        (lambda lg, t, m, T: right_logprobs(lg, t, m, T) / m.sum(1), "not their mean"),
        (lambda lg, t, m, T: right_logprobs(lg, t, m, 1 / T), "divide them"),
        (lambda lg, t, m, T: (token_logp(lg, t, T) * m).sum(1), r"nan or inf.*-inf \* 0 = nan"),
        (lambda lg, t, m, T: torch.where(m, token_logp(lg, t, T), 0.0), "shape"),
        (lambda lg, t, m, T: right_logprobs(lg, t, m, T).tolist(), r"got a list of 1 item \(float\)"),
        (lambda lg, t, m, T: tuple(right_logprobs(lg, t, m, T)), r"got a tuple of 1 item \(torch.Tensor\)"),
        (logprobs_log_of_softmax, "gradient with respect to the logits contains nan"),
        (lambda lg, t, m, T: right_logprobs(lg.detach(), t, m, T), "no gradient reaches the logits"),
    ]),
    (ex.check_leave_one_out_baseline, None, [lambda G: (G.sum() - G) / (len(G) - 1), loo_by_rows], [
        (lambda G: G.mean().expand_as(G), "plain batch mean"),
        (lambda G: (G.sum() - G) / len(G), "B - 1"),
        (lambda G: G - (G.sum() - G) / (len(G) - 1), "not the advantage"),
        (lambda G: torch.zeros_like(G), "expected"),
        (lambda G: ((G.sum() - G) / (len(G) - 1)).numpy(), r"expected a torch.Tensor of shape \(2,\), got numpy"),
    ]),
    (ex.check_kl_penalty_rewards, rlhf_rewards, [rlhf_rewards, rewards_where_scatter], [
        (rewards_last_column, "last COLUMN"), (rewards_first_token, "first response token"),
        (rewards_kl_sign, "wrong sign"), (rewards_kl_on_padding, "also applied on the padding"),
        (rewards_no_penalty, "must lose no_eos_penalty"), (rewards_penalty_replaces, "REPLACED"),
        (rewards_no_beta, "beta is missing"), (rewards_after_last, "off by one"), (rewards_every_token, "every token"),
        (rewards_penalty_on_finished, "FINISHED"),
        (lambda *a: rlhf_rewards(*a).numpy(), "got numpy.ndarray"),
        (lambda *a: rlhf_rewards(*a).tolist(), r"got a list of 1 item \(list\)"),
    ]),
    (ex.check_gae, gae, [gae, gae_row_by_row], [
        (gae_forward_loop, "forward in time"), (gae_unmasked, "padding is not ignored"),
        (gae_masked_outputs_only, "bootstrapped from the value of the padding"), (gae_swapped, "swapped"),
        (gae_no_lam, "lam is missing"), (gae_returns_are_advantages, "returns are the advantages"),
        (gae_no_bootstrap, "no bootstrap"), (gae_discounted_returns, "discounted rewards"),
        (gae_returns_only, "must return a tuple"),
        (lambda *a: torch.stack(gae(*a)), r"must return a tuple .*got a torch.Tensor of shape \(2, 1, 6\)"),
        (lambda *a: tuple(x.numpy() for x in gae(*a)), r"got a tuple of 2 items \(numpy.ndarray, numpy.ndarray\)"),
    ]),
    (ex.check_ppo_clip_loss, losses.ppo_clip_loss, [losses.ppo_clip_loss, clip_by_sign], [
        (clip_no_min, "nothing is clipped"), (clip_max, "max"), (clip_only_clipped, "only the clipped term"),
        (clip_log_ratio, "not exponentiated"), (clip_inverted, "upside down"), (clip_sign, "sign is flipped"),
        (clip_sum, "not the sum"),
        (lambda *a: losses.ppo_clip_loss(*a).item(), SCALAR_FLOAT),
        (clip_not_detached, "gradient flows into the old_logprobs"),
        (clip_advantages_not_detached, "gradient flows into the advantages, which must be a constant"),
        (clip_from_detached_ratio, "clipped term is computed from a detached ratio.*half of it was lost"),
        (clip_from_detached_ratio_where, "clipped term is computed from a detached ratio.*all of the gradient"),
    ]),
    (ex.check_fit_gao, fit_gao, [lambda d, y, form: fit_gao(d, y, form), fit_by_normal_equations], [
        (lambda d, y, form: _lstsq([torch.ones_like(d), d, -gao_penalty(d, form)], y)[1:], "intercept"),
        (lambda d, y, form: _lstsq([d, gao_penalty(d, form)], y), "wrong sign"),
        (lambda d, y, form: _lstsq([d, -d * d], y), r"d log d, not d\^2"),
        (lambda d, y, form: _lstsq([d, -gao_penalty(d, "rl")], y), r"d\^2, not d log d"),
        (lambda d, y, form: _lstsq([d, -gao_penalty(d, form)], y)[::-1], "in that order"),
        (fit_naive_log, "nan|NaN"),
        (lambda d, y, form: _lstsq([d * d, -gao_penalty(d * d, form)], y), "expected"),   # fitted against KL, not d
        (lambda d, y, form: torch.tensor(fit_gao(d, y, form)), "expected a tuple of 2 numbers, got a torch.Tensor"),
        (lambda d, y, form: fit_gao(d, y, form)[0], "expected a tuple of 2 numbers, got float"),
        (lambda d, y, form: tuple(torch.tensor([fit_gao(d, y, form)]).T), r"item 0 of the tuple: .*shape \(1,\)"),
    ]),
    (ex.check_gold_order_agreement, gold_order_agreement,
     [gold_order_agreement, agreement_right, agreement_as_tensor], [
        (agreement_with_ties, "EQUAL gold"),
        (lambda ra, rb, ga, gb: float(((ra - rb) * (ga - gb) > 0).double()[ga != gb].mean()), "coin flip"),
        (lambda ra, rb, ga, gb: 1 - agreement_right(ra, rb, ga, gb), "DISagreement"),
        (lambda ra, rb, ga, gb: float(((ra > rb) == (ga > gb)).double().mean()), "expected|EQUAL"),
        (lambda ra, rb, ga, gb: [agreement_right(ra, rb, ga, gb)],
         r"expected a Python float \(or a 0-d tensor\), got a list"),
        (lambda ra, rb, ga, gb: str(agreement_right(ra, rb, ga, gb)), "got str"),
    ]),
]


@pytest.mark.parametrize("check,fallback,rights,wrongs", CHECKS, ids=[c[0].__name__ for c in CHECKS])
def test_check_accepts_right_answers_falls_back_on_stub_and_rejects_mistakes(check, fallback, rights, wrongs, capsys):
    assert_check_behaves(check, rights, wrongs, capsys, reference=fallback)


# ---------------------------------------------------------------- 10 the PPO update
def ppo_update_written(reshuffle=True, recompute_old=False, mask_on=True, with_value=True, clip=True, zero=True):
    """An update written the way a student would (full width, model.zero_grad), with one mistake switched on."""
    def update(model, optimizer, batch, config, generator):
        B, P = batch.tokens.shape[0], batch.prompt_length
        fixed = torch.randperm(B, generator=generator)
        for epoch in range(config.epochs):
            order = torch.randperm(B, generator=generator) if reshuffle and epoch > 0 else fixed
            for rows in order.chunk(config.minibatches):
                logp, entropy, values = model.response_outputs(batch.tokens[rows], batch.attention_mask[rows], P)
                m = batch.mask[rows] if mask_on else torch.ones_like(batch.mask[rows])
                old = logp.detach() if recompute_old else batch.old_logprobs[rows]
                loss = losses.ppo_clip_loss(logp[m], old[m], batch.advantages[rows][m], config.clip)
                if with_value:
                    loss += config.vf_coef * value_loss(values, batch.old_values[rows], batch.returns[rows], m,
                                                        config.vf_clip)
                loss -= config.entropy_coef * (entropy * m).sum() / m.sum()
                if zero:
                    model.zero_grad()
                loss.backward()
                if clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
    return update


def test_ppo_update_check(capsys):
    wrongs = [
        (ppo_update_written(reshuffle=False), "fresh torch.randperm"),
        (ppo_update_written(recompute_old=True), "ratio is always 1"),
        (ppo_update_written(mask_on=False), "padding counts"),
        (ppo_update_written(with_value=False), "value loss is missing"),
        (ppo_update_written(clip=False), "not clipped"),
        (ppo_update_written(zero=False), "zero_grad"),
        (lambda model, optimizer, batch, config, generator: None, "expected"),          # does nothing at all
    ]
    assert_check_behaves(ex.check_ppo_update, [ppo_update, ppo_update_written()], wrongs, capsys, reference=ppo_update)


def test_ppo_update_check_restores_the_global_rng():
    torch.manual_seed(3)
    before = torch.get_rng_state()
    ex.check_ppo_update(ppo_update)
    assert torch.equal(before, torch.get_rng_state())
