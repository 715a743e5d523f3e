"""PPO for RLHF: the actor-critic, the clipped value loss and one plain loop (the rewards are rl.rlhf_rewards).

One PPO iteration, as in Ziegler et al. (2019) / InstructGPT and "The N implementation details of
RLHF with PPO" (Huang et al.):

1. rollout: sample a response to each of B prompts from the policy (KV cache, temperature tau);
2. score: the reward model reads prompt + response at its last real token; the policy (old log-probs,
   values) and the frozen reference (reference log-probs) score every response token, no gradient;
3. rewards: r_t = -beta * (log pi - log pi_ref)_t on every response token, plus the RM score on the
   last one (minus a penalty if the response never emitted EOS);
4. advantages: GAE (gamma = 1, lam = 0.95) with the value head, whitened over the batch;
5. update: a few epochs of shuffled minibatches of the clipped surrogate + the clipped value loss;
6. beta: fixed (the default), or moved toward a target KL by the adaptive controller.

Shapes: B sequences, P padded prompt width, N response tokens (generated steps), V vocabulary,
d model width. A response mask (B, N) is True on real response tokens (EOS included), False on the
padding after EOS; every per-token quantity below is (B, N) and meaningless where the mask is False.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .advantages import gae, masked_mean, whiten
from .logprobs import kl_k3, logprobs_from_logits
from .losses import ppo_clip_loss
from .model import GPT, ScalarHead
from .rl import (RL_RULES, annealed_lr, batch_gold, check_finite, end_iteration, kl_controller, progress_bar, rlhf_rewards,
                 sequence_metrics, set_lr)
from .sampling import SamplingConfig, prompt_source, rollout
from .train import make_optimizer, optimizer_step
from .utils import FINITE, FRACTION, NON_NEGATIVE, POSITIVE_INT, check_settings, nonfinite_hint, optional


# ---------------------------------------------------------------- the policy and its critic
class ActorCritic(nn.Module):
    """The policy GPT and a value head: one call gives logits (B, T, V) and values V(s_t) (B, T).

        logits = h E^T        V(s_t) = w . h'_t + b        h = policy.hidden_states(tokens)

    The value head is a zero-initialised ScalarHead, so V = 0 at the start. What it reads, h', is
    `critic`:
    - "shared": h itself, and the value loss trains the policy's trunk too (TRL's "model with value
      head"): one forward and backward for both losses, but the value gradients reshape the features
      the policy samples from;
    - "detached": h.detach(), a linear critic on the policy's features that never changes the policy:
      as cheap as "shared" and the policy is trained by the policy loss alone;
    - "separate": its own trunk, a copy of the policy at the start (InstructGPT trains a separate value
      model): a stronger critic for twice the forward and backward cost.
    `policy` is the GPT itself (not a copy): training the ActorCritic trains it.
    """

    CRITICS = ("shared", "detached", "separate")

    def __init__(self, policy: GPT, critic: str = "shared"):
        super().__init__()
        if critic not in self.CRITICS:
            raise ValueError(f"critic must be one of {self.CRITICS}, got {critic!r}")
        self.policy, self.critic = policy, critic
        self.value_head = ScalarHead(policy.config.d_model, zero_init=True)
        if critic == "separate":
            self.critic_trunk = copy.deepcopy(policy)

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, T), attention_mask (B, T) -> logits (B, T, V), values (B, T)."""
        h = self.policy.hidden_states(tokens, attention_mask)
        if self.critic == "separate":
            h_value = self.critic_trunk.hidden_states(tokens, attention_mask)
        else:
            h_value = h.detach() if self.critic == "detached" else h
        return F.linear(h, self.policy.tok_emb.weight), self.value_head(h_value)

    def response_outputs(self, tokens: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int,
                         temperature: float = 1.0, top_k: int | None = None):
        """(logp, entropy, values), each (B, N), for the response tokens tokens[:, P:].

        values[:, t] = V(state before response token t): read at the same position as the logits
        that predict token t. Padding positions are 0.
        """
        logits, values = self(tokens[:, :-1], attention_mask[:, :-1])
        mask = attention_mask[:, prompt_length:]
        logp, entropy = logprobs_from_logits(logits[:, prompt_length - 1:], tokens[:, prompt_length:], mask,
                                             temperature, top_k)
        return logp, entropy, values[:, prompt_length - 1:] * mask


# ---------------------------------------------------------------- the value loss
def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float | None = 0.2) -> torch.Tensor:
    """PPO's clipped value loss, a masked mean over real tokens.

        V_clip = V_old + clip(V - V_old, -c, c)
        L_V    = 1/2 * mean_{mask} max( (V - R)^2, (V_clip - R)^2 )

    values (B, N) with gradient; old_values (rollout time) and returns (GAE targets): (B, N),
    constants. As the policy's clip, the max is pessimistic: a value that moved more than c away
    from V_old gets no gradient pulling it further. clip=None: the plain 1/2 (V - R)^2.
    """
    old_values, returns = old_values.detach(), returns.detach()
    loss = (values - returns) ** 2
    if clip is not None:
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        loss = torch.maximum(loss, (clipped - returns) ** 2)
    return 0.5 * masked_mean(loss, mask)


# ---------------------------------------------------------------- config
@dataclass
class PPOConfig:
    """Hyper-parameters of train_ppo (TRL's names where TRL has one: beta, vf_coef, ...).

    Defaults: the ANCHORS checklist (gamma 1, lam 0.95, clips 0.2, shuffled minibatches, whitened
    advantages, zero-init value head, EOS penalty, lr annealing), sized and tuned for the reviews task on
    a 2-core CPU (reviews-sft policy, reviews-rm): 100 iterations of 32 prompts, about a minute on the 2-core machine the course is timed on.
    Departures from the checklist, each measured on that task (seed 0 and 1):
    - epochs 2, not 4: the same final gold reward for 60% of the update time;
    - critic "separate": with "shared" (seeds 0 and 1) the critic explained about 0.2 of the returns' variance
      instead of 0.7, the KL peaked higher (5-6 nats instead of 4) and the gold reward ended a little lower;
    - beta fixed at 0.3: the best gold reward of 0.1-1.0; 0.3 holds the KL near 2-2.5 nats by itself.
      The adaptive controller (target_kl) is there to experiment with; with ~3200 samples per run, a
      horizon of 10,000 would barely move beta, so use ~1000.
    """

    iterations: int = 100
    batch_size: int = 32            # prompts (= responses) per rollout
    max_new_tokens: int = 64
    temperature: float = 1.0        # sampling AND log-prob temperature
    top_k: int | None = None
    epochs: int = 2                 # passes over each rollout
    minibatches: int = 4            # minibatches per epoch, reshuffled every epoch
    lr: float = 1.5e-4
    anneal_lr: bool = True          # decay the learning rate linearly to 0 over the run (CleanRL)
    clip: float = 0.2               # policy ratio clip epsilon
    vf_clip: float | None = 0.2     # value clip (None: unclipped)
    vf_coef: float = 0.1
    critic: str = "separate"        # what the value head reads: see ActorCritic
    entropy_coef: float = 0.0
    gamma: float = 1.0
    lam: float = 0.95
    beta: float = 0.3               # KL coefficient (initial one if target_kl is set)
    target_kl: float | None = None  # None: fixed beta; else the adaptive controller's target (nats/sequence)
    horizon: float = 1000           # adaptive controller's horizon, in sequences
    whiten_rewards: bool = False    # scale (not shift) the per-token rewards by their batch std
    grad_clip: float = 1.0
    no_eos_penalty: float = 1.0     # subtracted from the RM score of responses that never emitted EOS
    seed: int = 0
    n_samples: int = 3              # responses kept per iteration in history["samples"]

    RULES = {**RL_RULES, "epochs": POSITIVE_INT, "minibatches": POSITIVE_INT, "clip": NON_NEGATIVE,
             "vf_clip": optional(NON_NEGATIVE), "vf_coef": NON_NEGATIVE, "entropy_coef": FINITE, "gamma": FRACTION,
             "lam": FRACTION}

    def __post_init__(self):
        check_settings(type(self).__name__, self, self.RULES)
        if self.critic not in ActorCritic.CRITICS:
            raise ValueError(f"PPOConfig.critic must be one of {ActorCritic.CRITICS}, got {self.critic!r}")
        if self.batch_size % self.minibatches:
            raise ValueError(f"PPOConfig.batch_size ({self.batch_size}) must be divisible by minibatches "
                             f"({self.minibatches}): every minibatch of an epoch has the same size")

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.max_new_tokens, self.temperature, self.top_k)

    def kl_controller(self):
        return kl_controller(self.beta, self.target_kl, self.horizon)


# ---------------------------------------------------------------- the update
@dataclass
class PPOBatch:
    """One scored rollout, everything the update needs and keeps constant (B rows, P prompt columns, N response).

    tokens, attention_mask (B, P + N): left-padded prompt, response, PAD after EOS (a Generation's);
    prompt_length: P; mask (B, N) bool: the response tokens; old_logprobs, old_values (B, N): the policy and
    value head at rollout time; advantages (whitened) and returns (B, N): from GAE.
    """
    tokens: torch.Tensor
    attention_mask: torch.Tensor
    prompt_length: int
    mask: torch.Tensor
    old_logprobs: torch.Tensor
    old_values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


def ppo_update(model: ActorCritic, optimizer: torch.optim.Optimizer, batch: PPOBatch, config: PPOConfig,
               generator: torch.Generator, iteration: int = 0) -> dict[str, list[float]]:
    """Step 5 of an iteration: config.epochs passes over one rollout, each in shuffled minibatches.

        for each epoch:   order = randperm(B)  (a fresh shuffle every epoch, from `generator`)
          for each of the config.minibatches slices of order, rows idx:
            logp, entropy, V = model.response_outputs(rows)                    (with gradient)
            L = ppo_clip_loss(logp, old_logprobs, A) + vf_coef * value_loss(V, old_values, R)
                - entropy_coef * mean(entropy)                                  (over real tokens only)
            one optimizer step, the gradient norm clipped to config.grad_clip

    old_logprobs, old_values, advantages and returns stay those of the rollout for every step: that is what
    makes the ratio pi_new / pi_old and the clips mean something. Each minibatch drops the padding columns
    none of its rows needs (same result, less work). Returns per-minibatch lists: approx_kl (k3 of
    KL(old || new)), clip_frac, ratio, policy_loss, value_loss.
    """
    stats: dict = {"approx_kl": [], "clip_frac": [], "ratio": [], "policy_loss": [], "value_loss": []}
    hint = nonfinite_hint(config)
    P, B = batch.prompt_length, batch.tokens.size(0)
    size = B // config.minibatches
    for _ in range(config.epochs):
        order = torch.randperm(B, generator=generator)
        for s in range(0, B, size):
            idx = order[s:s + size]
            m = batch.mask[idx]
            width = P + int(m.sum(1).max())    # drop padding columns no row of this minibatch needs
            logp, ent, values = model.response_outputs(batch.tokens[idx, :width], batch.attention_mask[idx, :width],
                                                       P, config.temperature, config.top_k)
            n = width - P
            m, old, adv = m[:, :n], batch.old_logprobs[idx, :n], batch.advantages[idx, :n]
            pg_loss = ppo_clip_loss(logp[m], old[m], adv[m], config.clip)
            vf_loss = value_loss(values, batch.old_values[idx, :n], batch.returns[idx, :n], m, config.vf_clip)
            loss = pg_loss + config.vf_coef * vf_loss
            if config.entropy_coef:
                loss = loss - config.entropy_coef * masked_mean(ent, m)
            check_finite("PPO loss", loss.item(), iteration, hint)
            optimizer_step(model, optimizer, loss, step=iteration, grad_clip=config.grad_clip, what="PPO loss",
                           settings=config)
            with torch.no_grad():
                log_ratio = (logp - old)[m]
                stats["approx_kl"].append(float(kl_k3(old[m], logp[m]).mean()))   # k3 of KL(old || new)
                stats["clip_frac"].append(float(((log_ratio.exp() - 1).abs() > config.clip).float().mean()))
                stats["ratio"].append(float(log_ratio.exp().mean()))
                stats["policy_loss"].append(pg_loss.item())
                stats["value_loss"].append(vf_loss.item())
    return stats


# ---------------------------------------------------------------- PPO
def train_ppo(policy: GPT, reference: GPT, reward_model: nn.Module, prompts, config: PPOConfig | None = None,
              gold_fn: Callable[[str, str], float] | None = None, progress: str | None = None,
              model: ActorCritic | None = None) -> tuple[GPT, dict]:
    """Fine-tune `policy` (in place) with PPO against `reward_model`, a KL penalty keeping it near `reference`.

    prompts: a list of prompt texts (each batch draws config.batch_size of them with replacement) or
    a function (n, seed) -> list of texts such as tasks.reviews.prompts. gold_fn(prompt, response),
    if given, adds the mean gold reward of each batch's responses (the hidden taste; never trained on).
    Returns (policy, history). history holds per-iteration lists: proxy_reward (mean RM score), gold
    (if gold_fn), kl (mean over sequences of summed k1 vs the reference), kl_k3, non_score_reward,
    response_length, frac_finished, beta, entropy (mean per token), approx_kl (old vs new policy,
    k3, mean over minibatches), clip_frac, ratio (mean pi_new/pi_old), policy_loss, value_loss,
    explained_variance, t_generate / t_score / t_update (seconds), and samples (first n_samples
    responses of the batch, as dicts), plus "config" (the PPOConfig as a dict).
    A NaN/inf in the RM score, the KL or the loss raises FloatingPointError naming it and the iteration.
    model: the ActorCritic to train, wrapping `policy` (pass one to keep its value head afterwards, or to go on
    training it); by default a fresh one with config.critic.
    """
    config = config or PPOConfig()
    generator = torch.Generator().manual_seed(config.seed)
    next_prompts = prompt_source(prompts, config.batch_size, config.seed, generator)
    if model is None:
        model = ActorCritic(policy, config.critic)
    elif model.policy is not policy:
        raise ValueError("model must be an ActorCritic around `policy` (ActorCritic(policy, critic)), not another GPT")
    reference.eval()
    reward_model.eval()
    optimizer = make_optimizer(model, config.lr, weight_decay=0.0)  # no decay: it would pull away from the SFT weights
    controller = config.kl_controller()
    history: dict = {"config": asdict(config)}
    bar = progress_bar(progress, config.iterations)
    for it in range(config.iterations):
        set_lr(optimizer, annealed_lr(config.lr, it, config.iterations, config.anneal_lr))
        # 1-2. rollout and scoring
        r, t_generate, t_score = rollout(policy, reference, reward_model, next_prompts(it), config.sampling, generator)
        gen, mask = r.generation, r.mask
        P = gen.prompt_length
        start = time.perf_counter()
        with torch.no_grad():
            old_logprobs, entropy, old_values = model.response_outputs(gen.tokens, gen.attention_mask, P,
                                                                       config.temperature, config.top_k)
        t_score += time.perf_counter() - start
        beta = controller.beta
        metrics = sequence_metrics(r, old_logprobs, beta, it)
        metrics["entropy"] = float(masked_mean(entropy, mask))
        texts = r.response_texts()
        if gold_fn is not None:
            metrics["gold"] = batch_gold(gold_fn, r.prompts, texts)

        # 3-4. rewards, advantages
        start = time.perf_counter()
        rewards = rlhf_rewards(r.scores, old_logprobs, r.ref_logprobs, mask, beta, gen.finished, config.no_eos_penalty)
        if config.whiten_rewards:
            rewards = whiten(rewards, mask, shift_mean=False)
        advantages, returns = gae(rewards, old_values, mask, config.gamma, config.lam)
        advantages = whiten(advantages, mask)

        # 5. epochs x shuffled minibatches
        batch = PPOBatch(gen.tokens, gen.attention_mask, P, mask, old_logprobs, old_values, advantages, returns)
        stats = ppo_update(model, optimizer, batch, config, generator, iteration=it)
        metrics.update({k: sum(v) / len(v) for k, v in stats.items()})
        flat_returns, flat_values = returns[mask], old_values[mask]
        metrics["explained_variance"] = float(1 - (flat_returns - flat_values).var() / flat_returns.var().clamp(min=1e-8))

        # 6. KL coefficient
        controller.update(metrics["kl"], config.batch_size)
        metrics.update(t_generate=t_generate, t_score=t_score, t_update=time.perf_counter() - start)
        end_iteration(history, metrics, r, texts, config.n_samples, gold_fn, bar)
    if bar is not None:
        bar.close()
    policy.eval()
    return policy, history
