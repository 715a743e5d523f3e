"""Iterated online RLHF: label what the CURRENT policy writes, refit the reward model, continue PPO.

A reward model trained once, on samples of the SFT policy, is accurate where the SFT policy goes. PPO
moves the policy elsewhere, to responses the RM has never seen compared, and there the RM's errors are
what PPO finds (notebook 11). Iterated RLHF (Bai et al. 2022, "Training a helpful and harmless
assistant...", section 4.5; Llama 2 trained five rounds) spends the label budget in rounds:

    for k = 1..K:
        pairs_k  ~ a sample of pi_k vs a sample of pi_SFT (or of pi_k), labelled   (budget / K labels)
        r_k      = Bradley-Terry fit on pairs_1 + ... + pairs_k, from the SFT trunk
        pi_k+1   = PPO from pi_k against r_k, KL to pi_SFT                        (iterations / K)

K = 1 is the usual single round: every label on SFT samples, then all of PPO.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import torch

from .evaluate import evaluate_policy
from .model import GPT
from .ppo import PPOConfig, train_ppo
from .preferences import label_pairs
from .reward import RewardModel, encode_responses, gold_order_agreement, normalize_, score_pairs, train_reward_model
from .sampling import sample, sample_preference_pairs


def round_budgets(total: int, rounds: int) -> list[int]:
    """Split `total` labels (or iterations) over `rounds`, as evenly as possible, summing to total."""
    if rounds < 1 or total < rounds:
        raise ValueError(f"need 1 <= rounds <= total, got rounds={rounds}, total={total}")
    return [total // rounds + (k < total % rounds) for k in range(rounds)]


def policy_pairs(policy: GPT, opponent: GPT, prompts: list[str], gold_fn, *, seed: int) -> list[dict]:
    """One sample of `policy` and one of `opponent` per prompt, labelled by the simulated human.

    opponent = policy: two on-policy samples (once the policy has narrowed, often the same text twice);
    opponent = the SFT model: every label also says how the new behaviour compares with where it started.
    """
    a = [s.response for s in sample(policy, prompts, seed=seed, fit_with_eos=True)]
    b = [s.response for s in sample(opponent, prompts, seed=seed + 1, fit_with_eos=True)]
    return label_pairs(prompts, a, b, gold_fn, seed=seed + 2)


def fit_reward_model(trunk: GPT, pairs: list[dict], normalize_on: list[tuple[str, str]], *, steps: int,
                     lr: float = 3e-4, seed: int = 0) -> RewardModel:
    """A reward model on trunk's weights, Bradley-Terry on `pairs`, normalised to mean 0 / std 1 on the
    (prompt, response) list normalize_on (SFT samples: the same yardstick every round, so beta means the
    same thing in each)."""
    torch.manual_seed(seed)                      # the scalar head's initialisation
    rm = RewardModel.from_policy(trunk)
    train_reward_model(rm, pairs, steps=steps, lr=lr, seed=seed)
    prompts, responses = map(list, zip(*normalize_on))
    return normalize_(rm, *encode_responses(prompts, responses))


def identical_share(pairs: list[dict]) -> float:
    """Share of pairs whose two responses are the same text: a label on those teaches the RM nothing."""
    return sum(p["chosen"] == p["rejected"] for p in pairs) / len(pairs)


def rm_agreement_on_policy(rm: RewardModel, policy: GPT, prompts: list[str], gold_fn, *, seed: int = 0) -> float | None:
    """How well rm judges what `policy` writes now: gold_order_agreement on two fresh samples per prompt
    (the gold rewards only; no labels are spent). None if every pair has equal gold (a collapsed policy)."""
    pairs = sample_preference_pairs(policy, prompts, gold_fn, seed=seed + 7)
    gold_a, gold_b = ([p[key] for p in pairs] for key in ("gold_chosen", "gold_rejected"))
    if gold_a == gold_b:
        return None
    return gold_order_agreement(*score_pairs(rm, pairs), torch.tensor(gold_a), torch.tensor(gold_b))


def iterated_rlhf(sft: GPT, prompts, gold_fn, *, rounds: int, label_budget: int, ppo: PPOConfig,
                  normalize_on: list[tuple[str, str]], eval_prompts: list[str], rm_steps,
                  opponent: str = "sft", seed: int = 0, log=print) -> tuple[GPT, dict]:
    """K = rounds rounds of (label pairs of the current policy, refit the RM on all labels so far, PPO).

    prompts(n, seed) -> n prompt texts; gold_fn(prompt, response) -> the hidden human's reward, used to
    label (with Bradley-Terry noise) and to evaluate, never as a training reward. ppo.iterations is the
    TOTAL over all rounds. rm_steps(n_pairs) -> Bradley-Terry steps. After each round the policy is
    evaluated on eval_prompts (evaluate_policy, one sample each; rm_agreement_on_policy). opponent: what
    each policy sample is compared with in a label, "sft" or "policy" (see policy_pairs). Returns (policy, history) with one
    entry per round in history["rounds"] and every PPO iteration's metrics in history["ppo"].
    """
    policy, pairs = copy.deepcopy(sft), []   # PPO trains in place; sft stays the reference
    if opponent not in ("sft", "policy"):
        raise ValueError(f"opponent must be 'sft' or 'policy', got {opponent!r}")
    history: dict = {"rounds": [], "ppo": {"proxy_reward": [], "gold": [], "kl": [], "round": []}}
    for k, (n_labels, iterations) in enumerate(zip(round_budgets(label_budget, rounds),
                                                   round_budgets(ppo.iterations, rounds))):
        round_seed = 1000 * seed + 100 * k
        new = policy_pairs(policy, sft if opponent == "sft" else policy, prompts(n_labels, seed=round_seed), gold_fn,
                           seed=round_seed)
        pairs += new
        rm = fit_reward_model(sft, pairs, normalize_on, steps=rm_steps(len(pairs)), seed=round_seed)
        _, h = train_ppo(policy, sft, rm, prompts, replace(ppo, iterations=iterations, seed=round_seed),
                         gold_fn=gold_fn)
        for key in ("proxy_reward", "gold", "kl"):
            history["ppo"][key] += h[key]
        history["ppo"]["round"] += [k] * iterations
        result = evaluate_policy(policy, sft, rm, eval_prompts, gold_fn=gold_fn, seed=seed)
        history["rounds"].append({"round": k, "labels": len(pairs), "identical_pairs": identical_share(new),
                                  "iterations": len(history["ppo"]["kl"]),
                                  "rm_agreement": rm_agreement_on_policy(rm, policy, eval_prompts, gold_fn, seed=seed),
                                  **{key: result[key] for key in ("gold", "proxy", "kl", "length")}})
        log(f"round {k + 1}/{rounds}: {len(pairs)} labels, gold {result['gold']:+.2f}, KL {result['kl']:.2f}, "
            f"proxy {result['proxy']:+.2f}")
    return policy, history
