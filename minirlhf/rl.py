"""What every RL trainer on a language model shares: the KL coefficient, per-iteration metrics, the NaN
guard, lr annealing, the progress bar and the history format. PPO (ppo.py) and REINFORCE (reinforce.py)
use these; so will RLOO and GRPO.

A history is a dict of per-iteration lists (one entry per iteration), plus "samples" (the first few
responses of each batch) and "config" (the trainer's config as a dict).
"""
from __future__ import annotations

import math

import torch

from .logprobs import kl_k1, kl_k3, last_token_index
from .sampling import SAMPLING_RULES, Rollout
from .utils import NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, optional

# The rules of the settings PPOConfig and ReinforceConfig share (utils.check_settings).
RL_RULES = {**SAMPLING_RULES, "iterations": POSITIVE_INT, "batch_size": POSITIVE_INT, "lr": POSITIVE,
            "beta": NON_NEGATIVE, "target_kl": optional(POSITIVE), "horizon": POSITIVE, "grad_clip": POSITIVE,
            "no_eos_penalty": NON_NEGATIVE, "n_samples": NON_NEGATIVE_INT}


# ---------------------------------------------------------------- the RLHF reward
def rlhf_rewards(score: torch.Tensor, logp: torch.Tensor, logp_ref: torch.Tensor, mask: torch.Tensor,
                 beta: float, finished: torch.Tensor, no_eos_penalty: float = 1.0) -> torch.Tensor:
    """Per-token RLHF reward (B, N): a KL penalty on every response token, the score on the last one.

        r_t = -beta * (logp_t - logp_ref_t)                           for every real response token t
        r_T += score - no_eos_penalty * [response never emitted EOS]  at the last real token T

    score (B,) from the reward model; logp, logp_ref (B, N) under the policy that sampled and the
    frozen reference; mask (B, N) bool; finished (B,) bool. Padding gets 0.
    The penalty is SUBTRACTED from the RM score (TRL's missing_eos_penalty) rather than replacing
    it (lm-human-preferences sets such scores to -1): the RM still ranks unfinished responses among
    themselves, and an unfinished response always scores lower than it would if it had stopped.
    Summed over a response: score - penalty - beta * (log pi(y|x) - log pi_ref(y|x)), whose
    expectation is the KL-regularised objective E[score] - beta * KL(pi || pi_ref).
    """
    m = mask.to(logp.dtype)
    rewards = -beta * kl_k1(logp, logp_ref) * m
    final = score.to(rewards.dtype) - no_eos_penalty * (~finished.bool()).to(rewards.dtype)
    return rewards.scatter_add(1, last_token_index(mask)[:, None], final[:, None])


# ---------------------------------------------------------------- KL coefficient
class FixedKLController:
    """beta stays where it is set."""

    def __init__(self, beta: float):
        self.beta = float(beta)

    def update(self, kl: float, n_steps: int) -> float:
        return self.beta


class AdaptiveKLController:
    """Ziegler et al. (2019): move beta so that the measured KL drifts toward a target.

        e = clip(KL / target - 1, -0.2, 0.2)        beta <- beta * (1 + e * n_steps / horizon)

    kl: the batch's mean summed-k1 KL per sequence; n_steps: sequences in the batch. The clip
    limits how fast beta moves whatever the KL does; horizon sets the time scale in samples.
    """

    def __init__(self, init_beta: float, target: float, horizon: float):
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target and horizon must be > 0, got {target}, {horizon}")
        self.beta, self.target, self.horizon = float(init_beta), float(target), float(horizon)

    def update(self, kl: float, n_steps: int) -> float:
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.beta *= 1.0 + error * n_steps / self.horizon
        return self.beta


def kl_controller(beta: float, target_kl: float | None, horizon: float):
    """A fixed beta if target_kl is None, else the adaptive controller starting at beta."""
    if target_kl is None:
        return FixedKLController(beta)
    return AdaptiveKLController(beta, target_kl, horizon)


# ---------------------------------------------------------------- the loop's pieces
def check_finite(name: str, value: float, iteration: int, hint: str) -> float:
    """Stop the run with a clear message if a metric is NaN or infinite."""
    if not math.isfinite(value):
        raise FloatingPointError(f"{name} became {value} at iteration {iteration}: {hint}")
    return value


def annealed_lr(lr: float, iteration: int, iterations: int, anneal: bool) -> float:
    """lr * (1 - iteration / iterations) if anneal (CleanRL's linear decay to 0), else lr."""
    return lr * (1.0 - iteration / iterations) if anneal else lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def batch_gold(gold_fn, prompts: list[str], responses: list[str]) -> float:
    """Mean gold reward gold_fn(prompt, response) over a batch."""
    return sum(gold_fn(p, r) for p, r in zip(prompts, responses)) / len(prompts)


def sequence_metrics(r: Rollout, logprobs: torch.Tensor, beta: float, iteration: int) -> dict:
    """Per-iteration metrics of a rollout, means over its sequences: proxy_reward (RM score), kl (summed k1
    vs the reference), kl_k3, non_score_reward (-beta kl), response_length, frac_finished, beta.
    A NaN/inf score or KL stops the run (FloatingPointError naming it and the iteration)."""
    m = r.mask.float()
    k1 = (kl_k1(logprobs, r.ref_logprobs) * m).sum(1)
    k3 = (kl_k3(logprobs, r.ref_logprobs) * m).sum(1)
    proxy = check_finite("RM score (proxy reward)", float(r.scores.mean()), iteration,
                         "the reward model returned NaN/inf; check its inputs")
    kl = check_finite("KL", float(k1.mean()), iteration,
                      "the policy has drifted to tokens the reference finds (nearly) impossible; raise beta or lower lr")
    return {"proxy_reward": proxy, "kl": kl, "kl_k3": float(k3.mean()),
            "non_score_reward": -beta * kl, "response_length": float(m.sum(1).mean()),
            "frac_finished": float(r.generation.finished.float().mean()), "beta": beta}


def first_samples(r: Rollout, texts: list[str], n: int, gold_fn) -> list[dict]:
    """The first n responses of a rollout as dicts {prompt, response, score, finished[, gold]}."""
    out = []
    for i in range(min(n, len(texts))):
        row = {"prompt": r.prompts[i], "response": texts[i], "score": round(float(r.scores[i]), 3),
               "finished": bool(r.generation.finished[i])}
        if gold_fn is not None:
            row["gold"] = round(float(gold_fn(r.prompts[i], texts[i])), 3)
        out.append(row)
    return out


def progress_bar(description: str | None, total: int):
    """A tqdm.auto bar (a widget in Jupyter) if a description is given, else None."""
    if not description:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=description)


def end_iteration(history: dict, metrics: dict, r: Rollout, texts: list[str], n_samples: int, gold_fn, bar) -> None:
    """Keep an iteration's metrics and first samples in the history, and move the progress bar."""
    metrics["samples"] = first_samples(r, texts, n_samples, gold_fn)
    for key, value in metrics.items():
        history.setdefault(key, []).append(value)
    if bar is not None:
        bar.update(1)
        bar.set_postfix(reward=f"{metrics['proxy_reward']:.2f}", kl=f"{metrics['kl']:.2f}")


def rl_history_for_meta(history: dict) -> dict:
    """The reproducible part of an RL history as plain data: per-iteration numbers (rounded), samples and
    config. Timings are left out (they differ run to run, and a checkpoint's bytes must not)."""
    out = {k: [round(float(x), 4) for x in v] for k, v in history.items()
           if isinstance(v, list) and v and isinstance(v[0], (int, float)) and not k.startswith("t_")}
    out.update({k: history[k] for k in ("samples", "config") if k in history})
    return out
