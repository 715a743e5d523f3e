"""REINFORCE with a KL penalty on a language model: the policy gradient without a critic or clipping.

One iteration: sample a response to each of B prompts (sampling.rollout), score it with the reward
model and the reference, and take ONE gradient step on

    G_i = score_i - penalty_i - beta * sum_t (log pi - log pi_ref)(y_i,t)
    L   = -mean_i [ (G_i - b_i) * sum_t log pi(y_i,t | x_i, y_i,<t) ]        (losses.reinforce_loss)

with a baseline b_i from the other returns of the batch (advantages.sequence_baseline). It is what
PPO improves on (notebook 09) and what RLOO and GRPO build on (Part IV).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn

from .advantages import BASELINES, masked_mean, sequence_baseline
from .logprobs import response_logprobs
from .losses import reinforce_loss
from .model import GPT
from .rl import (RL_RULES, annealed_lr, batch_gold, check_finite, end_iteration, kl_controller, progress_bar, rlhf_rewards,
                 sequence_metrics, set_lr)
from .sampling import Rollout, SamplingConfig, prompt_source, rollout
from .train import make_optimizer
from .utils import check_settings, nonfinite_hint


@dataclass
class ReinforceConfig:
    """Hyper-parameters of train_reinforce: the rollout and KL settings of PPOConfig, none of its
    critic, clipping or epochs. baseline: "none", "mean" or "leave_one_out" (advantages.BASELINES)."""

    iterations: int = 100
    batch_size: int = 32            # prompts (= responses) per iteration, one gradient step each
    max_new_tokens: int = 64
    temperature: float = 1.0        # sampling AND log-prob temperature
    top_k: int | None = None
    baseline: str = "leave_one_out"
    lr: float = 1e-4
    anneal_lr: bool = False         # plain REINFORCE: a constant learning rate
    beta: float = 0.1               # KL coefficient (initial one if target_kl is set)
    target_kl: float | None = None  # None: fixed beta; else the adaptive controller's target
    horizon: float = 1000
    grad_clip: float = 1.0
    no_eos_penalty: float = 1.0     # subtracted from the RM score of responses that never emitted EOS
    seed: int = 0
    n_samples: int = 3              # responses kept per iteration in history["samples"]

    def __post_init__(self):
        check_settings(type(self).__name__, self, RL_RULES)
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {self.baseline!r}")

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.max_new_tokens, self.temperature, self.top_k)


def sequence_returns(r: Rollout, logprobs: torch.Tensor, beta: float, no_eos_penalty: float) -> torch.Tensor:
    """G (B,) = score - no_eos_penalty * [no EOS] - beta * sum_t k1_t: rl.rlhf_rewards summed over each response."""
    rewards = rlhf_rewards(r.scores, logprobs.detach(), r.ref_logprobs, r.mask, beta, r.generation.finished,
                           no_eos_penalty)
    return rewards.sum(1)


def reinforce_terms(policy: GPT, r: Rollout, config: ReinforceConfig, beta: float):
    """Forward the policy WITH gradient: (sequence log-prob (B,), per-token logp (B, N) detached, entropy, G (B,))."""
    gen = r.generation
    logp, entropy = response_logprobs(policy, gen.tokens, gen.attention_mask, gen.prompt_length,
                                      config.temperature, config.top_k)
    returns = sequence_returns(r, logp, beta, config.no_eos_penalty)
    return logp.sum(1), logp.detach(), entropy.detach(), returns


def train_reinforce(policy: GPT, reference: GPT, reward_model: nn.Module, prompts,
                    config: ReinforceConfig | None = None, gold_fn: Callable[[str, str], float] | None = None,
                    progress: str | None = None) -> tuple[GPT, dict]:
    """REINFORCE with a KL penalty (see the module docstring): one gradient step per batch of fresh samples.

    prompts: a list of texts or a function (n, seed) -> texts, as for ppo.train_ppo; gold_fn(prompt,
    response), if given, adds the batch's mean gold reward. Returns (policy trained in place, history)
    with the rollout metrics of train_ppo (proxy_reward, kl, kl_k3, entropy, ...) plus "loss" and
    "grad_norm" (before clipping).
    """
    config = config or ReinforceConfig()
    generator = torch.Generator().manual_seed(config.seed)
    next_prompts = prompt_source(prompts, config.batch_size, config.seed, generator)
    reference.eval()
    reward_model.eval()
    optimizer = make_optimizer(policy, config.lr, weight_decay=0.0)
    controller = kl_controller(config.beta, config.target_kl, config.horizon)
    history: dict = {"config": asdict(config)}
    bar = progress_bar(progress, config.iterations)
    for it in range(config.iterations):
        set_lr(optimizer, annealed_lr(config.lr, it, config.iterations, config.anneal_lr))
        r, t_generate, t_score = rollout(policy, reference, reward_model, next_prompts(it), config.sampling, generator)
        start = time.perf_counter()
        beta = controller.beta
        seq_logp, logp, entropy, returns = reinforce_terms(policy, r, config, beta)
        metrics = sequence_metrics(r, logp, beta, it)
        metrics["entropy"] = float(masked_mean(entropy, r.mask))
        texts = r.response_texts()
        if gold_fn is not None:
            metrics["gold"] = batch_gold(gold_fn, r.prompts, texts)
        loss = reinforce_loss(seq_logp, returns, sequence_baseline(returns, config.baseline))
        check_finite("REINFORCE loss", loss.item(), it, nonfinite_hint(config))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(policy.parameters(), config.grad_clip))
        optimizer.step()
        controller.update(metrics["kl"], config.batch_size)
        metrics.update(loss=loss.item(), t_generate=t_generate, t_score=t_score, t_update=time.perf_counter() - start)
        end_iteration(history, metrics, r, texts, config.n_samples, gold_fn, bar)
    if bar is not None:
        bar.close()
    policy.eval()
    return policy, history


def policy_gradient_variance(policy: GPT, reference: GPT, reward_model: nn.Module, prompts,
                             config: ReinforceConfig | None = None, baselines: Sequence[str] = BASELINES,
                             n_batches: int = 8) -> dict[str, dict]:
    """How noisy is the REINFORCE gradient with each baseline? Measured on the SAME samples for all.

    Draws n_batches independent batches of config.batch_size responses from `policy` (which is not
    changed) and, for each baseline, the flattened gradient g_k (all parameters) of the REINFORCE loss
    on batch k. Returns {baseline: {"variance": sum_j Var_k(g_k[j]) (the trace of the gradient
    estimate's covariance: expected ||g_k - E g||^2), "variance_se": its jackknife standard error over the
    batches (how much the estimate itself would move with other batches), "mean_sq_norm": ||mean_k g_k||^2
    (the signal), "snr": mean_sq_norm / variance}}. Using the same rollouts for every baseline (common random
    numbers) means the differences come from the baseline alone. Cost: n_batches rollouts and one
    backward per batch and baseline.
    """
    config = config or ReinforceConfig()
    if n_batches < 3:
        raise ValueError("n_batches must be >= 3 to measure a variance and its standard error")
    generator = torch.Generator().manual_seed(config.seed)
    next_prompts = prompt_source(prompts, config.batch_size, config.seed, generator)
    params = [p for p in policy.parameters() if p.requires_grad]
    grads: dict[str, list[torch.Tensor]] = {b: [] for b in baselines}
    for k in range(n_batches):
        r, _, _ = rollout(policy, reference, reward_model, next_prompts(k), config.sampling, generator)
        seq_logp, _, _, returns = reinforce_terms(policy, r, config, config.beta)
        for i, b in enumerate(baselines):
            loss = reinforce_loss(seq_logp, returns, sequence_baseline(returns, b))
            g = torch.autograd.grad(loss, params, retain_graph=i < len(baselines) - 1)
            grads[b].append(torch.cat([x.reshape(-1) for x in g]))
    out = {}
    for b, gs in grads.items():
        stacked = torch.stack(gs).double()
        variance = float(stacked.var(0).sum())
        signal = float(stacked.mean(0).pow(2).sum())
        out[b] = {"variance": variance, "variance_se": jackknife_se(stacked), "mean_sq_norm": signal,
                  "snr": signal / variance if variance else float("inf")}
    return out


def jackknife_se(samples: torch.Tensor) -> float:
    """Standard error of the total variance sum_j Var_k(samples[k, j]) of K vector samples (K, P), by the jackknife:

        v_i = the total variance without sample i        se = sqrt((K - 1) / K * sum_i (v_i - mean v)^2)

    Needs K >= 3 (each leave-one-out set must still have a variance)."""
    K = samples.size(0)
    if K < 3:
        raise ValueError("the jackknife needs at least 3 samples")
    keep = ~torch.eye(K, dtype=torch.bool)
    v = torch.stack([samples[keep[i]].var(0).sum() for i in range(K)])
    return float(((K - 1) / K * (v - v.mean()).pow(2).sum()).sqrt())
