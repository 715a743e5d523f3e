"""The capstone's pipeline on the support task: users' ratings -> reward models -> a tuned policy -> a report card.

- `collect_ratings`: SFT (or any policy's) replies to the users' tickets, rated by the simulated users;
- `train_learner`: one of LEARNERS, a way of turning those ratings into a reward (see ratings.py);
- `gold_agreement`: how often a reward orders two replies to the same held-out ticket as the gold judge does;
- `ComplianceReward`: a reward model minus a penalty where the written policy's rule-based check fires;
- `report_card`: the honest evaluation of a policy against the SFT policy, on held-out tickets.
"""
from __future__ import annotations

import copy
import math
import random
from collections import defaultdict

import torch
import torch.nn as nn

from . import ratings as R
from .dpo import DPOConfig, implicit_reward, train_kto
from .logprobs import text_logprobs
from .reward import RewardModel, encode_responses, normalize_, score, train_reward_model, train_reward_regression
from .sampling import sample
from .tasks import support
from .tokenizer import TOKENIZER

LEARNERS = ("raw stars", "per-user z-scores", "within-user pairs (BT)", "thumbs (KTO)")
MAX_NEW_TOKENS = 100


# ---------------------------------------------------------------- ratings
def conversations(users: list[R.User], tickets_per_user: int, seed: int = 0, home_share: float = 0.8) -> list[tuple[int, str]]:
    """(user id, prompt) for each user's tickets: of the user's home intent with probability home_share, else
    any intent. This is what ties user kinds to intents."""
    rng = random.Random(seed)
    out = []
    for user in users:
        for _ in range(tickets_per_user):
            intent = user.intent if rng.random() < home_share else None
            out.append((user.id, support.make_prompt(support.sample_ticket(rng, intent))))
    return out


def collect_ratings(policy, users: list[R.User], *, tickets_per_user: int = 6, replies_per_ticket: int = 2,
                    seed: int = 0) -> list[dict]:
    """The users' ratings of the policy's replies: each user brings tickets_per_user tickets, sees
    replies_per_ticket sampled replies to each (an A/B survey) and rates each one (or not: see ratings.responds).
    Returns ratings.rate's records."""
    tickets = conversations(users, tickets_per_user, seed)
    rows = [(uid, p) for uid, p in tickets for _ in range(replies_per_ticket)]
    samples = sample(policy, [p for _, p in rows], max_new_tokens=MAX_NEW_TOKENS, seed=seed)
    finished = {(p, s.response): s.finished for (_, p), s in zip(rows, samples)}
    convs = [(uid, p, s.response) for (uid, p), s in zip(rows, samples)]
    return R.rate(users, convs, lambda p, r: support.satisfaction(p, r, finished[(p, r)]), seed=seed)


# ---------------------------------------------------------------- reward learners
def train_learner(kind: str, sft, ratings: list[dict], *, steps: int = 300, lr: float = 3e-4, seed: int = 0,
                  kto_beta: float = 0.1, kto_lr: float = 5e-5):
    """A reward learned from the ratings by `kind` (one of LEARNERS), from the SFT model. Returns a function
    (prompts, responses) -> (N,) rewards, and the training history."""
    torch.manual_seed(seed)
    if kind == "thumbs (KTO)":
        policy = copy.deepcopy(sft)
        reference = copy.deepcopy(sft).eval()
        history = train_kto(policy, R.thumbs(ratings), DPOConfig(beta=kto_beta, learning_rate=kto_lr, steps=steps,
                                                                 seed=seed), reference=reference)
        return (lambda prompts, responses: implicit_reward(policy, reference, prompts, responses, kto_beta).float()), history
    rm = RewardModel.from_policy(sft)
    if kind == "raw stars":
        targets = [float(r["stars"]) for r in ratings]
        history = train_reward_regression(rm, [(r["prompt"], r["response"]) for r in ratings], targets, steps=steps,
                                          lr=lr, seed=seed)
    elif kind == "per-user z-scores":
        history = train_reward_regression(rm, [(r["prompt"], r["response"]) for r in ratings],
                                          R.normalize_per_user(ratings), steps=steps, lr=lr, seed=seed)
    elif kind == "within-user pairs (BT)":
        history = train_reward_model(rm, R.within_user_pairs(ratings), steps=steps, lr=lr, seed=seed)
    else:
        raise ValueError(f"unknown learner {kind!r}; choose one of {LEARNERS}")
    normalize_(rm, *encode_responses([r["prompt"] for r in ratings], [r["response"] for r in ratings]))
    return rm, history


def as_scorer(reward):
    """A RewardModel or a function (prompts, responses) -> rewards, as such a function."""
    if isinstance(reward, nn.Module):
        return lambda prompts, responses: score(reward, prompts, responses).float()
    return reward


def gold_pairs(policy, prompts: list[str], replies: int = 4, seed: int = 0) -> list[dict]:
    """Pairs of the policy's replies to the same prompt whose gold scores differ (for gold_agreement):
    `replies` samples per prompt, every two of them. Each dict has prompt, a, b, gold_a, gold_b."""
    samples = sample(policy, [p for p in prompts for _ in range(replies)], max_new_tokens=MAX_NEW_TOKENS, seed=seed)
    pairs = []
    for i in range(0, len(samples), replies):
        group = samples[i:i + replies]
        golds = [support.gold_breakdown(s.prompt, s.response, s.finished).total for s in group]
        for a in range(replies):
            for b in range(a + 1, replies):
                if golds[a] != golds[b]:
                    pairs.append({"prompt": group[a].prompt, "a": group[a].response, "b": group[b].response,
                                  "gold_a": golds[a], "gold_b": golds[b]})
    return pairs


def gold_agreement(reward, pairs: list[dict]) -> float:
    """Share of pairs the reward orders as the gold judge does (a reward tie counts 1/2)."""
    scorer = as_scorer(reward)
    prompts = [p["prompt"] for p in pairs]
    with torch.no_grad():
        ra = scorer(prompts, [p["a"] for p in pairs])
        rb = scorer(prompts, [p["b"] for p in pairs])
    gold = torch.tensor([p["gold_a"] - p["gold_b"] for p in pairs])
    agree = torch.sign(ra - rb) * torch.sign(gold)
    return float((agree > 0).float().mean() + 0.5 * (agree == 0).float().mean())


# ---------------------------------------------------------------- a reward with the policy check
class ComplianceReward(nn.Module):
    """reward_model's score minus `penalty` where support.violates_policy fires on the decoded reply: the
    written policy enforced by a rule, beside a reward learned from users who like forbidden promises.
    Reads the same (tokens, attention_mask) as a RewardModel, so train_ppo takes it unchanged."""

    def __init__(self, reward_model: nn.Module, penalty: float = 5.0):
        super().__init__()
        self.reward_model, self.penalty = reward_model, penalty

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        scores = self.reward_model(tokens, attention_mask)
        flags = []
        for row, m in zip(tokens.tolist(), attention_mask.tolist()):
            text = TOKENIZER.decode([t for t, keep in zip(row, m) if keep])
            prompt, _, response = text.partition("\n")
            flags.append(support.violates_policy(prompt + "\n", response))
        return scores - self.penalty * torch.tensor(flags, dtype=scores.dtype, device=scores.device)


def violation_curve(history: dict) -> list[float]:
    """The share of each RL iteration's kept samples (history["samples"]) that break the written policy: all of
    them when the run kept every sample (PPOConfig.n_samples = batch_size)."""
    return [round(sum(support.violates_policy(s["prompt"], s["response"]) for s in batch) / len(batch), 4)
            for batch in history["samples"]]


# ---------------------------------------------------------------- the report card
def mean_se(values) -> tuple[float, float]:
    """Mean and its standard error std / sqrt(n) (sample std, n - 1)."""
    x = torch.as_tensor(values, dtype=torch.float64)
    if x.numel() < 2:
        raise ValueError("need at least two values for a standard error")
    return float(x.mean()), float(x.std() / math.sqrt(x.numel()))


def report_card(policy, sft, prompts: list[str], *, seed: int = 0, expert_pairs: list[tuple[str, str]] | None = None,
                n_samples: int = 3) -> dict:
    """Evaluate `policy` against the SFT policy on held-out prompts, one sampled reply (T = 1) per prompt each:

    gold (mean, se), per intent and the worst intent, violation rate (mean, se), win rate against SFT judged by
    gold (ties 1/2; mean, se), KL(policy || SFT) (mean summed log-ratio of the policy's replies), the alignment
    tax on the experts' held-out demonstrations (per-token NLL; SFT's beside it), the share of distinct replies,
    and samples: the n_samples best and worst by gold; gold_per_prompt keeps each prompt's gold, in order."""
    mine = sample(policy, prompts, max_new_tokens=MAX_NEW_TOKENS, seed=seed)
    base = sample(sft, prompts, max_new_tokens=MAX_NEW_TOKENS, seed=seed)
    golds = [support.gold_breakdown(s.prompt, s.response, s.finished) for s in mine]
    base_golds = [support.gold_breakdown(s.prompt, s.response, s.finished).total for s in base]
    totals = [g.total for g in golds]
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(totals, base_golds)]
    by_intent = defaultdict(list)
    for p, g in zip(prompts, totals):
        by_intent[support.intent_of(p)].append(g)
    per_intent = {k: sum(v) / len(v) for k, v in sorted(by_intent.items())}
    finished = torch.tensor([s.finished for s in mine])
    responses = [s.response for s in mine]
    kl = (text_logprobs(policy, prompts, responses, finished) - text_logprobs(sft, prompts, responses, finished)).mean()
    card = {
        "gold": mean_se(totals), "sft_gold": mean_se(base_golds), "gold_per_prompt": totals,
        "per_intent": per_intent, "worst_intent": min(per_intent, key=per_intent.get),
        "violation_rate": mean_se([float(g.violation) for g in golds]),
        "sft_violation_rate": mean_se([float(support.violates_policy(s.prompt, s.response)) for s in base]),
        "win_rate_vs_sft": mean_se(wins), "kl_to_sft": float(kl),
        "distinct": len(set(zip(prompts, responses))) / len(prompts),
        "parts": _parts(golds), "sft_parts": _parts([support.gold_breakdown(s.prompt, s.response, s.finished) for s in base]),
    }
    if expert_pairs:
        card["expert_nll"] = _nll(policy, expert_pairs)
        card["sft_expert_nll"] = _nll(sft, expert_pairs)
    ranked = sorted(zip(totals, prompts, responses))
    card["worst_samples"] = [(p, r, g) for g, p, r in ranked[:n_samples]]
    card["best_samples"] = [(p, r, g) for g, p, r in ranked[::-1][:n_samples]]
    return card


def _parts(golds: list) -> dict:
    """Mean of each part of the gold judge's score."""
    return {k: sum(getattr(g, k) for g in golds) / len(golds) for k in ("resolved", "order", "detail", "opener", "concise")}


def _nll(model, pairs: list[tuple[str, str]]) -> float:
    """Per-token NLL of the demonstrations' replies (EOS included)."""
    prompts, responses = (list(c) for c in zip(*pairs))
    logps = text_logprobs(model, prompts, responses)
    tokens = sum(len(r) + 1 for r in responses)
    return float(-logps.sum() / tokens)
