"""Checks of Part III's exercises (notebooks 09-12: policy gradient, PPO, reward hacking, online RLHF)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .. import losses
from ..advantages import discounted_returns, gae, masked_mean, sequence_baseline, whiten
from ..logprobs import logprobs_from_logits
from ..model import GPT, GPTConfig
from ..overoptimization import fit_gao, gao_curve, gao_penalty
from ..ppo import ActorCritic, PPOBatch, PPOConfig, ppo_update, value_loss
from ..reward import gold_order_agreement
from ..rl import rlhf_rewards
from ..tokenizer import TOKENIZER
from .engine import ExerciseError, describe, mistaken_step, run_check, seeded

# ---------------------------------------------------------------- 09 policy gradient on a language model
def _sequence_logprobs(logits, targets, mask, temperature):
    return logprobs_from_logits(logits, targets, mask, temperature)[0].sum(1)


def check_sequence_logprobs(fn: Callable) -> Callable:
    """fn(logits (B, N, V), targets (B, N), mask (B, N) bool, temperature) -> (B,)
    log pi(y | x) = sum_t mask[b, t] * log softmax(logits[b, t] / temperature)[targets[b, t]].

    As in the real model's sampling distribution, PAD (id 0) has logit -inf, so the PAD targets after
    EOS have log-prob -inf: they must be left out of the sum, not multiplied by 0 (-inf * 0 = nan).
    The policy trains through it: the gradient with respect to the logits is compared too, and must be
    finite (log(softmax(...)) has the right value but a nan gradient there)."""
    g = seeded(10)
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

    return run_check("sequence_logprobs", fn, _sequence_logprobs, cases, mistakes, grad_args={0: "logits"},
                     nonfinite_hint="The PAD targets after EOS have log-prob -inf, and -inf * 0 = nan: select instead "
                                    "of multiplying, torch.where(mask, logp, 0.0).")


def _leave_one_out_baseline(returns):
    return sequence_baseline(returns, "leave_one_out")


def check_leave_one_out_baseline(fn: Callable) -> Callable:
    """fn(returns (B,)) -> (B,) b_i = mean of the OTHER B - 1 returns = (sum_j G_j - G_i) / (B - 1)."""
    g = seeded(11)
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


# ---------------------------------------------------------------- 10 PPO
def check_ppo_clip_loss(fn: Callable) -> Callable:
    """fn(logprobs, old_logprobs, advantages (all (N,) or (B, T)), clip_eps) -> scalar clipped surrogate loss.

        L = -mean[ min(r A, clip(r, 1 - eps, 1 + eps) A) ],  r = exp(logprobs - old_logprobs)

    The gradient is compared too: it must reach the logprobs through BOTH terms (inside the clip range the
    terms are equal and torch.min shares the gradient between them), and never the old_logprobs or the
    advantages, which come from the rollout and are constants.
    """
    g = seeded(10)
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

    def detached_clip_terms(lp, old, a, e):     # (r A, clip(r) A) with the clipped term from a detached ratio
        r, a = ratio(lp, old.detach()), a.detach()
        return r * a, r.detach().clamp(1 - e, 1 + e) * a

    def clip_detached(lp, old, a, e):
        return -torch.min(*detached_clip_terms(lp, old, a, e)).mean()

    def clip_detached_where(lp, old, a, e):
        unclipped, clipped = detached_clip_terms(lp, old, a, e)
        return -torch.where(unclipped < clipped, unclipped, clipped).mean()

    detached_clip = ("the clipped term is computed from a detached ratio, so no gradient flows through it. Inside the "
                     "clip range r A and clip(r) A are equal, and ")
    clip_the_ratio = (" Clip the ratio itself, torch.clamp(ratio, 1 - eps, 1 + eps), and detach only old_logprobs "
                      "and advantages.")
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
    grad_mistakes = {
        detached_clip + "torch.min shares the gradient between them: half of it was lost." + clip_the_ratio:
            clip_detached,
        detached_clip + "torch.where picks the clipped one: all of the gradient was lost." + clip_the_ratio:
            clip_detached_where,
        "gradient flows into the old_logprobs and the advantages: they come from the rollout and are constants, "
        "so .detach() them.":
            lambda lp, old, a, e: -torch.min(ratio(lp, old) * a, ratio(lp, old).clamp(1 - e, 1 + e) * a).mean(),
    }
    return run_check("ppo_clip_loss", fn, losses.ppo_clip_loss, cases, mistakes,
                     grad_args={0: "logprobs", 1: "old_logprobs", 2: "advantages"}, grad_mistakes=grad_mistakes)


def _gae_pair(fn: Callable) -> Callable:
    """fn returning (advantages, returns) -> a function returning them stacked, (2, B, T), for run_check.
    A list of the two works as well as a tuple (both unpack the same); anything else is a type error."""
    def stacked(*args):
        out = fn(*args)
        if out is None:
            return None
        if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(x, torch.Tensor) for x in out)):
            raise ExerciseError(f"gae must return a tuple (advantages, returns) of two tensors, got {describe(out)}.")
        if out[0].shape != args[0].shape or out[1].shape != args[0].shape:
            raise ExerciseError(f"gae: advantages and returns must both have the rewards' shape {tuple(args[0].shape)}, "
                                f"got {tuple(out[0].shape)} and {tuple(out[1].shape)}.")
        return torch.stack(tuple(out))
    return stacked


def check_gae(fn: Callable) -> Callable:
    """fn(rewards (B, T), values (B, T), mask (B, T) bool, gamma, lam) -> (advantages, returns), each (B, T).

        delta_t = r_t + gamma V_{t+1} - V_t,  A_t = delta_t + gamma lam A_{t+1},  R_t = A_t + V_t,
        nothing after a row's last real token (V = A = 0 there), and 0 on padding.
    """

    g = seeded(11)
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
            lambda r, v, m, gamma, lam: torch.stack((gae(r, v, m, gamma, lam)[0], discounted_returns(r * m, gamma) * m)),
        "the returns are the advantages; the value head's target is R_t = A_t + V_t.":
            lambda r, v, m, gamma, lam: torch.stack((gae(r, v, m, gamma, lam)[0],) * 2),
    }
    reference = _gae_pair(gae)
    return gae if run_check("gae", _gae_pair(fn), reference, cases, mistakes) is reference else fn


def check_kl_penalty_rewards(fn: Callable) -> Callable:
    """fn(score (B,), logp (B, N), logp_ref (B, N), mask (B, N) bool, beta, finished (B,) bool, no_eos_penalty)
    -> per-token rewards (B, N): -beta (logp - logp_ref) on real tokens, + score (- no_eos_penalty if not
    finished) at each row's last real token, 0 on padding."""

    g = seeded(12)
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

    g = seeded(13)
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
    # the notebook unpacks (alpha, beta) into gao_curve, gao_peak and f-strings: 0-d tensors work there too
    return run_check("fit_gao", fn, fit_gao, cases, mistakes, scalar_tensor_ok=True,
                     crash_hint="If a case has d = 0: d * log(d) is nan there (0 * -inf), and a solver fed a nan "
                                "fails; the limit of d log d at d = 0 is 0, so set it with torch.where.")


# ---------------------------------------------------------------- 12 iterated online RLHF
def check_gold_order_agreement(fn: Callable) -> Callable:
    """fn(reward_a, reward_b, gold_a, gold_b: (N,)) -> float: share of pairs with gold_a != gold_b that the
    rewards order the same way as gold; a reward tie counts 1/2."""

    g = seeded(14)
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
    # the notebook formats and subtracts the agreements: a 0-d tensor does both as well as a float
    return run_check("gold_order_agreement", fn, gold_order_agreement, cases, mistakes, scalar_tensor_ok=True)


# ---------------------------------------------------------------- 10 PPO: the update
def _ppo_case(seed: int, critic: str, **overrides):
    """A tiny actor-critic and one scored rollout of 8 ragged rows (left-padded prompts of 2-4 tokens, responses
    of 1-6 tokens, PAD after EOS), built the same way on every call: (model, batch, config)."""
    g = seeded(seed)
    torch.manual_seed(seed)   # the tiny model's initial weights; the caller's RNG state is restored around the check
    config = GPTConfig(vocab_size=TOKENIZER.vocab_size, context_length=16, d_model=16, n_layers=1, n_heads=2)
    model = ActorCritic(GPT(config), critic)
    with torch.no_grad():   # a value head that is not all zeros, so the value loss has gradient from step 1
        model.value_head.linear.weight.normal_(0, 0.1, generator=g)
    B, P, N = 8, 4, 6
    prompt_lengths = torch.tensor([2, 3, 4, 4, 2, 3, 4, 3])
    response_lengths = torch.tensor([6, 1, 4, 6, 2, 5, 3, 6])
    columns = torch.arange(P + N)
    attention = ((columns >= P - prompt_lengths[:, None]) & (columns < P + response_lengths[:, None]))
    tokens = torch.randint(4, TOKENIZER.vocab_size, (B, P + N), generator=g)
    tokens = torch.where(attention, tokens, torch.full_like(tokens, TOKENIZER.pad_id))
    mask = attention[:, P:]
    with torch.no_grad():
        old_logprobs, _, old_values = model.response_outputs(tokens, attention, P)
    advantages = whiten(torch.randn(B, N, generator=g), mask)
    returns = (old_values + torch.randn(B, N, generator=g)) * mask
    ppo = PPOConfig(**{**dict(batch_size=B, minibatches=2, epochs=2, lr=0.5), **overrides})
    return model, PPOBatch(tokens, attention, P, mask, old_logprobs, old_values, advantages, returns), ppo


def _after_update(update: Callable) -> Callable:
    """update(model, optimizer, batch, config, generator) -> a function of a case: all the model's parameters
    (flattened, (n_params,)) after the update. Every call builds the same model, batch and generator afresh."""
    def parameters_after(seed, critic, overrides):
        state = torch.get_rng_state()
        try:
            model, batch, config = _ppo_case(seed, critic, **overrides)
        finally:
            torch.set_rng_state(state)
        # plain SGD, not Adam: Adam divides by the gradient's own size, so it turns a rounding-level difference in a
        # near-zero gradient (a sum taken in another order) into a full step; SGD keeps equal answers equal
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
        update(model, optimizer, batch, config, seeded(seed + 100))
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return parameters_after


def _update_variant(*, reshuffle=True, recompute_old=False, use_mask=True, value=True, clip_grad=True,
                    zero_grad=True, entropy_sign=1.0):
    """ppo_update with one known mistake switched on (for the check's hints)."""
    def update(model, optimizer, batch, config, generator):
        P, B = batch.prompt_length, batch.tokens.size(0)
        size = B // config.minibatches
        order = None
        for _ in range(config.epochs):
            if reshuffle or order is None:
                order = torch.randperm(B, generator=generator)
            for s in range(0, B, size):
                idx = order[s:s + size]
                logp, ent, values = model.response_outputs(batch.tokens[idx], batch.attention_mask[idx], P,
                                                           config.temperature, config.top_k)
                m = batch.mask[idx] if use_mask else torch.ones_like(batch.mask[idx])
                old = logp.detach() if recompute_old else batch.old_logprobs[idx]
                loss = losses.ppo_clip_loss(logp[m], old[m], batch.advantages[idx][m], config.clip)
                if value:
                    loss = loss + config.vf_coef * value_loss(values, batch.old_values[idx], batch.returns[idx], m,
                                                              config.vf_clip)
                if config.entropy_coef:
                    loss = loss - entropy_sign * config.entropy_coef * masked_mean(ent, m)
                mistaken_step(model.parameters(), optimizer, loss, config.grad_clip, zero_grad=zero_grad,
                              clip=clip_grad)
    return update


def check_ppo_update(fn: Callable) -> Callable:
    """fn(model: ActorCritic, optimizer, batch: PPOBatch, config: PPOConfig, generator) updates the model in place:
    config.epochs passes over the batch, each a fresh torch.randperm(B, generator=generator) cut into
    config.minibatches slices; on each, the clipped surrogate + vf_coef * clipped value loss (- entropy_coef *
    entropy), over real response tokens only, against the rollout's old log-probs and values; zero_grad,
    backward, clip the gradient norm to config.grad_clip, step.

    Checked by running fn and the package's ppo.ppo_update from the same tiny model, rollout and generator:
    the parameters after the update must agree.
    """
    cases = [
        ("8 ragged rows, 2 epochs x 2 minibatches, separate critic", (0, "separate", {})),
        ("a shared critic, an entropy bonus, no value clip, 4 minibatches",
         (1, "shared", {"entropy_coef": 0.05, "vf_clip": None, "minibatches": 4})),
    ]
    mistakes = {
        "the minibatches are the same in every epoch: draw a fresh torch.randperm(B, generator=generator) at the start "
        "of EACH epoch, so every epoch sees the rows in a new order.": _after_update(_update_variant(reshuffle=False)),
        "the old log-probs were recomputed inside the loop (or taken from the current forward pass), so the ratio is "
        "always 1 and nothing is ever clipped: use batch.old_logprobs, fixed at rollout time.":
            _after_update(_update_variant(recompute_old=True)),
        "the padding counts: average the losses over real response tokens only (batch.mask), e.g. "
        "ppo_clip_loss(logp[m], old[m], adv[m]) and value_loss(..., m).": _after_update(_update_variant(use_mask=False)),
        "the value loss is missing: loss = ppo_clip_loss(...) + config.vf_coef * value_loss(...), or the value head "
        "never learns.": _after_update(_update_variant(value=False)),
        "the gradient norm is not clipped: torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip) "
        "between backward() and step().": _after_update(_update_variant(clip_grad=False)),
        "optimizer.zero_grad() is missing: every step then adds the gradients of all the earlier minibatches.":
            _after_update(_update_variant(zero_grad=False)),
        "the entropy bonus has the wrong sign: SUBTRACT entropy_coef * mean entropy from the loss (more entropy, "
        "lower loss).": _after_update(_update_variant(entropy_sign=-1.0)),
    }
    reference = _after_update(ppo_update)
    checked = run_check("ppo_update", _after_update(fn), reference, cases, mistakes, atol=2e-5)
    return ppo_update if checked is reference else fn
