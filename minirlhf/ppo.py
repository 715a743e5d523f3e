"""PPO for RLHF (and the REINFORCE baseline it improves on), as plain functions and one plain loop.

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
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .advantages import gae, masked_mean, whiten
from .generation import Generation, generate, sampling_logits
from .losses import ppo_clip_loss, reinforce_loss
from .model import GPT, ScalarHead
from .reward import last_token_index
from .tokenizer import TOKENIZER
from .train import make_optimizer, optimizer_step


# ---------------------------------------------------------------- log-probabilities
def logprobs_from_logits(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                         temperature: float = 1.0, top_k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(target) and the entropy of pi, per position, under the distribution `generate` samples from.

        pi = softmax(sampling_logits(logits, temperature, top_k))
        logp[b, t] = log pi(targets[b, t] | ...)        H[b, t] = -sum_v pi(v) log pi(v)

    logits (B, N, V) predict targets (B, N); mask (B, N) bool. Returns (logp, entropy), both (B, N),
    0 where mask is False (the PAD after EOS has probability 0 and must not enter any sum).
    The temperature MUST be the sampling temperature: a ratio or a KL against another distribution
    than the one that produced the samples is simply wrong (and makes the KL rise too fast).
    """
    logp_all = F.log_softmax(sampling_logits(logits, temperature, top_k), dim=-1)
    # Padding targets (PAD, probability 0) are swapped for a finite stand-in, then zeroed by the mask.
    safe = torch.where(mask, targets, logp_all.argmax(-1))
    logp = logp_all.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    # 0 * log 0 = 0 for banned tokens (PAD, top-k): zero the -inf first so neither value nor grad is NaN
    finite = logp_all.masked_fill(torch.isinf(logp_all), 0.0)
    entropy = -(logp_all.exp() * finite).sum(-1)
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    return torch.where(mask, logp, zero), torch.where(mask, entropy, zero)


def response_logprobs(model: GPT, tokens: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int,
                      temperature: float = 1.0, top_k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logp, entropy), each (B, N): log pi of the response tokens tokens[:, P:] and pi's entropy there.

    tokens, attention_mask (B, P + N) as in a Generation (left-padded prompt, response, PAD after EOS);
    prompt_length = P. Logits at position t predict token t + 1, so the response's N tokens are
    predicted by positions P - 1 ... P + N - 2 and the last column is never fed. One forward pass.
    """
    logits = model(tokens[:, :-1], attention_mask[:, :-1])[:, prompt_length - 1:]
    return logprobs_from_logits(logits, tokens[:, prompt_length:], attention_mask[:, prompt_length:],
                                temperature, top_k)


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


# ---------------------------------------------------------------- KL estimators
def kl_k1(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """k1 = log pi(x) - log pi_ref(x), per sampled token (any shape).

    E_{x ~ pi}[k1] = KL(pi || pi_ref) exactly (unbiased), but a single sample can be negative and
    its variance is high. The per-token RLHF penalty uses k1: summed over a response it is the
    log-ratio of the whole sequence, whose expectation is the sequence-level KL.
    """
    return logp - logp_ref


def kl_k3(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """k3 = (r - 1) - log r with r = pi_ref(x) / pi(x), per sampled token (any shape).

    Computed as expm1(x) - x with x = logp_ref - logp: exact for tiny x (where r - 1 - log r would
    cancel to 0 or go negative by rounding) and >= 0 always, since e^x >= 1 + x. Unbiased
    (E_pi[r] = 1) and lower variance than k1 when pi and pi_ref are close (Schulman's blog "Approximating
    KL divergence"). Large x overflows to +inf in float32 (x > ~88): a real, huge divergence.
    """
    x = logp_ref - logp
    return torch.expm1(x) - x


# ---------------------------------------------------------------- rewards and losses
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


# ---------------------------------------------------------------- config
@dataclass
class PPOConfig:
    """Hyper-parameters of train_ppo (and train_reinforce, which ignores the PPO-only ones).

    Defaults: the ANCHORS checklist (gamma 1, lam 0.95, clips 0.2, shuffled minibatches, whitened
    advantages, zero-init value head, EOS penalty, lr annealing), sized and tuned for the reviews task on
    a 2-core CPU (reviews-sft policy, reviews-rm): 100 iterations of 32 prompts, about 3 minutes.
    Departures from the checklist, each measured on that task (seed 0 and 1):
    - epochs 2, not 4: the same final gold reward for 60% of the update time;
    - critic "separate": the shared trunk made the runs unstable (KL and entropy blow up, reward hacking);
    - beta fixed at 0.3: the best gold reward of 0.1-1.0; 0.3 holds the KL near 2-2.5 nats by itself.
      The adaptive controller (target_kl) is there to experiment with; with ~3200 samples per run, a
      horizon of 10,000 would barely move beta, so use ~1000.
    """

    iterations: int = 100
    batch_size: int = 32            # prompts (= responses) per rollout
    max_new_tokens: int = 64
    temperature: float = 1.0        # sampling AND log-prob temperature
    top_k: int | None = None
    epochs: int = 2                 # passes over each rollout (PPO only)
    minibatches: int = 4            # minibatches per epoch, reshuffled every epoch (PPO only)
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

    def kl_controller(self):
        if self.target_kl is None:
            return FixedKLController(self.beta)
        return AdaptiveKLController(self.beta, self.target_kl, self.horizon)


# ---------------------------------------------------------------- rollouts
@dataclass
class Rollout:
    """What one batch of prompts produced, with everything that needs no gradient.

    prompts: the B prompt texts; generation: tokens, masks, P, finished (see generation.Generation);
    scores (B,): RM scores; ref_logprobs (B, N): log pi_ref of the response tokens.
    """

    prompts: list[str]
    generation: Generation
    scores: torch.Tensor
    ref_logprobs: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        return self.generation.response_mask

    def response_texts(self) -> list[str]:
        return [TOKENIZER.decode(r) for r in self.generation.responses]


def rollout(policy: GPT, reference: GPT, reward_model: nn.Module, prompt_texts: list[str],
            config: PPOConfig, generator: torch.Generator) -> tuple[Rollout, float, float]:
    """Sample, then score with the RM and the reference (no gradient). Returns (rollout, t_generate, t_score)."""
    start = time.perf_counter()
    ids = [TOKENIZER.encode(p, bos=True) for p in prompt_texts]
    gen = generate(policy, ids, config.max_new_tokens, temperature=config.temperature, top_k=config.top_k,
                   generator=generator)
    t_generate = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        scores = reward_model(gen.tokens, gen.attention_mask).float()
        ref_logprobs, _ = response_logprobs(reference, gen.tokens, gen.attention_mask, gen.prompt_length,
                                            config.temperature, config.top_k)
    return Rollout(list(prompt_texts), gen, scores, ref_logprobs), t_generate, time.perf_counter() - start


def _prompt_source(prompts, config: PPOConfig, generator: torch.Generator) -> Callable[[int], list[str]]:
    """iteration -> the batch's prompt texts. prompts: a list (sampled with replacement) or a
    function (n, seed) -> list, like tasks.reviews.prompts (called with a per-iteration seed)."""
    if callable(prompts):
        return lambda it: list(prompts(config.batch_size, seed=config.seed * 1_000_003 + it))
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty: pass a list of prompt texts or a function (n, seed) -> prompts")
    return lambda it: [prompts[i] for i in torch.randint(len(prompts), (config.batch_size,), generator=generator)]


def _finite(name: str, value: float, iteration: int, hint: str) -> float:
    """Stop the run with a clear message if a metric is NaN or infinite."""
    if not math.isfinite(value):
        raise FloatingPointError(f"{name} became {value} at iteration {iteration}: {hint}")
    return value


def _gold(gold_fn, prompts: list[str], responses: list[str]) -> float:
    return sum(gold_fn(r, p) for r, p in zip(responses, prompts)) / len(prompts)


def _samples(r: Rollout, texts: list[str], n: int, gold_fn) -> list[dict]:
    out = []
    for i in range(min(n, len(texts))):
        row = {"prompt": r.prompts[i], "response": texts[i], "score": round(float(r.scores[i]), 3),
               "finished": bool(r.generation.finished[i])}
        if gold_fn is not None:
            row["gold"] = round(float(gold_fn(texts[i], r.prompts[i])), 3)
        out.append(row)
    return out


def _sequence_metrics(r: Rollout, logprobs: torch.Tensor, beta: float, iteration: int) -> dict:
    """Per-iteration metrics shared by PPO and REINFORCE (all means over the batch's sequences)."""
    m = r.mask.float()
    k1 = (kl_k1(logprobs, r.ref_logprobs) * m).sum(1)
    k3 = (kl_k3(logprobs, r.ref_logprobs) * m).sum(1)
    proxy = _finite("RM score (proxy reward)", float(r.scores.mean()), iteration,
                    "the reward model returned NaN/inf; check its inputs")
    kl = _finite("KL", float(k1.mean()), iteration,
                 "the policy has drifted to tokens the reference finds (nearly) impossible; raise beta or lower lr")
    return {"proxy_reward": proxy, "kl": kl, "kl_k3": float(k3.mean()),
            "non_score_reward": -beta * kl, "response_length": float(m.sum(1).mean()),
            "frac_finished": float(r.generation.finished.float().mean()), "beta": beta}


def _set_lr(optimizer: torch.optim.Optimizer, config: PPOConfig, iteration: int) -> None:
    """lr * (1 - iteration / iterations) if config.anneal_lr, else lr."""
    frac = 1.0 - iteration / config.iterations if config.anneal_lr else 1.0
    for group in optimizer.param_groups:
        group["lr"] = config.lr * frac


def _append(history: dict, metrics: dict) -> None:
    for key, value in metrics.items():
        history.setdefault(key, []).append(value)


def _progress_bar(description: str | None, total: int):
    """A tqdm.auto bar (a widget in Jupyter) if a description is given, else None."""
    if not description:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=description)


def _end_iteration(history: dict, metrics: dict, r: Rollout, texts: list[str], config: PPOConfig, gold_fn, bar) -> None:
    """Keep an iteration's metrics and first samples, and move the progress bar (PPO and REINFORCE alike)."""
    metrics["samples"] = _samples(r, texts, config.n_samples, gold_fn)
    _append(history, metrics)
    if bar is not None:
        bar.update(1)
        bar.set_postfix(reward=f"{metrics['proxy_reward']:.2f}", kl=f"{metrics['kl']:.2f}")


# ---------------------------------------------------------------- PPO
def train_ppo(policy: GPT, reference: GPT, reward_model: nn.Module, prompts, config: PPOConfig | None = None,
              gold_fn: Callable[[str, str], float] | None = None, progress: str | None = None) -> tuple[GPT, dict]:
    """Fine-tune `policy` (in place) with PPO against `reward_model`, a KL penalty keeping it near `reference`.

    prompts: a list of prompt texts (each batch draws config.batch_size of them with replacement) or
    a function (n, seed) -> list of texts such as tasks.reviews.prompts. gold_fn(response, prompt),
    if given, adds the mean gold reward of each batch's responses (the hidden taste; never trained on).
    Returns (policy, history). history holds per-iteration lists: proxy_reward (mean RM score), gold
    (if gold_fn), kl (mean over sequences of summed k1 vs the reference), kl_k3, non_score_reward,
    response_length, frac_finished, beta, entropy (mean per token), approx_kl (old vs new policy,
    k3, mean over minibatches), clip_frac, ratio (mean pi_new/pi_old), policy_loss, value_loss,
    explained_variance, t_generate / t_score / t_update (seconds), and samples (first n_samples
    responses of the batch, as dicts), plus "config" (the PPOConfig as a dict).
    A NaN/inf in the RM score, the KL or the loss raises FloatingPointError naming it and the iteration.
    """
    config = config or PPOConfig()
    if config.batch_size % config.minibatches:
        raise ValueError(f"batch_size ({config.batch_size}) must be divisible by minibatches ({config.minibatches})")
    generator = torch.Generator().manual_seed(config.seed)
    next_prompts = _prompt_source(prompts, config, generator)
    model = ActorCritic(policy, config.critic)
    reference.eval()
    reward_model.eval()
    optimizer = make_optimizer(model, config.lr, weight_decay=0.0)  # no decay: it would pull away from the SFT weights
    controller = config.kl_controller()
    history: dict = {"config": asdict(config)}
    bar = _progress_bar(progress, config.iterations)
    for it in range(config.iterations):
        _set_lr(optimizer, config, it)
        # 1-2. rollout and scoring
        r, t_generate, t_score = rollout(policy, reference, reward_model, next_prompts(it), config, generator)
        gen, mask = r.generation, r.mask
        P = gen.prompt_length
        start = time.perf_counter()
        with torch.no_grad():
            old_logprobs, entropy, old_values = model.response_outputs(gen.tokens, gen.attention_mask, P,
                                                                       config.temperature, config.top_k)
        t_score += time.perf_counter() - start
        beta = controller.beta
        metrics = _sequence_metrics(r, old_logprobs, beta, it)
        metrics["entropy"] = float(masked_mean(entropy, mask))
        texts = r.response_texts()
        if gold_fn is not None:
            metrics["gold"] = _gold(gold_fn, r.prompts, texts)

        # 3-4. rewards, advantages
        start = time.perf_counter()
        rewards = rlhf_rewards(r.scores, old_logprobs, r.ref_logprobs, mask, beta, gen.finished, config.no_eos_penalty)
        if config.whiten_rewards:
            rewards = whiten(rewards, mask, shift_mean=False)
        advantages, returns = gae(rewards, old_values, mask, config.gamma, config.lam)
        advantages = whiten(advantages, mask)

        # 5. epochs x shuffled minibatches
        stats: dict = {"approx_kl": [], "clip_frac": [], "ratio": [], "policy_loss": [], "value_loss": []}
        size = config.batch_size // config.minibatches
        for _ in range(config.epochs):
            order = torch.randperm(config.batch_size, generator=generator)
            for s in range(0, config.batch_size, size):
                idx = order[s:s + size]
                m = mask[idx]
                width = P + int(m.sum(1).max())    # drop padding columns no row of this minibatch needs
                logp, ent, values = model.response_outputs(gen.tokens[idx, :width], gen.attention_mask[idx, :width],
                                                           P, config.temperature, config.top_k)
                n = width - P
                m, old, adv = m[:, :n], old_logprobs[idx, :n], advantages[idx, :n]
                pg_loss = ppo_clip_loss(logp[m], old[m], adv[m], config.clip)
                vf_loss = value_loss(values, old_values[idx, :n], returns[idx, :n], m, config.vf_clip)
                loss = pg_loss + config.vf_coef * vf_loss
                if config.entropy_coef:
                    loss = loss - config.entropy_coef * masked_mean(ent, m)
                _finite("PPO loss", loss.item(), it, "lower the learning rate, or raise beta")
                optimizer_step(model, optimizer, loss, step=it, grad_clip=config.grad_clip, what="PPO loss")
                with torch.no_grad():
                    log_ratio = (logp - old)[m]
                    stats["approx_kl"].append(float(kl_k3(old[m], logp[m]).mean()))   # k3 of KL(old || new)
                    stats["clip_frac"].append(float(((log_ratio.exp() - 1).abs() > config.clip).float().mean()))
                    stats["ratio"].append(float(log_ratio.exp().mean()))
                    stats["policy_loss"].append(pg_loss.item())
                    stats["value_loss"].append(vf_loss.item())
        metrics.update({k: sum(v) / len(v) for k, v in stats.items()})
        flat_returns, flat_values = returns[mask], old_values[mask]
        metrics["explained_variance"] = float(1 - (flat_returns - flat_values).var() / flat_returns.var().clamp(min=1e-8))

        # 6. KL coefficient
        controller.update(metrics["kl"], config.batch_size)
        metrics.update(t_generate=t_generate, t_score=t_score, t_update=time.perf_counter() - start)
        _end_iteration(history, metrics, r, texts, config, gold_fn, bar)
    if bar is not None:
        bar.close()
    policy.eval()
    return policy, history


def rl_history_for_meta(history: dict) -> dict:
    """The reproducible part of an RL history as plain data: per-iteration numbers (rounded), samples and
    config. Timings are left out (they differ run to run, and a checkpoint's bytes must not)."""
    out = {k: [round(float(x), 4) for x in v] for k, v in history.items()
           if isinstance(v, list) and v and isinstance(v[0], (int, float)) and not k.startswith("t_")}
    out.update({k: history[k] for k in ("samples", "config") if k in history})
    return out


# ---------------------------------------------------------------- REINFORCE
BASELINES = ("none", "mean", "leave_one_out")


def sequence_baseline(returns: torch.Tensor, baseline: str) -> torch.Tensor:
    """b (B,) for sequence returns G (B,).

    none: 0. mean: the batch mean (includes G_i itself, so it is very slightly biased: the gradient
    is scaled by (B - 1) / B). leave_one_out: b_i = mean of the OTHER B - 1 returns, independent
    of sample i, hence unbiased (RLOO, Kool et al. 2019; Ahmadian et al. 2024).
    """
    if baseline == "none":
        return torch.zeros_like(returns)
    if baseline == "mean":
        return returns.mean().expand_as(returns)
    if baseline == "leave_one_out":
        if len(returns) < 2:
            raise ValueError("a leave-one-out baseline needs at least 2 samples per batch")
        return (returns.sum() - returns) / (len(returns) - 1)
    raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")


def sequence_returns(r: Rollout, logprobs: torch.Tensor, beta: float, no_eos_penalty: float) -> torch.Tensor:
    """G (B,) = score - no_eos_penalty * [no EOS] - beta * sum_t k1_t: rlhf_rewards summed over each response."""
    rewards = rlhf_rewards(r.scores, logprobs.detach(), r.ref_logprobs, r.mask, beta, r.generation.finished,
                           no_eos_penalty)
    return rewards.sum(1)


def _reinforce_terms(policy: GPT, r: Rollout, config: PPOConfig, beta: float):
    """Forward the policy WITH gradient: (sequence log-prob (B,), per-token logp (B, N) detached, entropy, G (B,))."""
    gen = r.generation
    logp, entropy = response_logprobs(policy, gen.tokens, gen.attention_mask, gen.prompt_length,
                                      config.temperature, config.top_k)
    returns = sequence_returns(r, logp, beta, config.no_eos_penalty)
    return logp.sum(1), logp.detach(), entropy.detach(), returns


def train_reinforce(policy: GPT, reference: GPT, reward_model: nn.Module, prompts, config: PPOConfig | None = None,
                    baseline: str = "mean", gold_fn: Callable[[str, str], float] | None = None,
                    progress: str | None = None) -> tuple[GPT, dict]:
    """REINFORCE with a KL penalty: one gradient step per batch of fresh samples, no critic, no clipping.

        G_i = score_i - penalty_i - beta * sum_t (log pi - log pi_ref)(y_i,t)
        L   = -mean_i [ (G_i - b_i) * sum_t log pi(y_i,t | x_i, y_i,<t) ]        (losses.reinforce_loss)

    Same rollouts, rewards and config as train_ppo (epochs, minibatches, clips, gamma, lam and the
    value settings are unused). baseline: "none", "mean" or "leave_one_out" (sequence_baseline).
    Returns (policy trained in place, history) with the rollout metrics of train_ppo plus
    "loss" and "grad_norm" (before clipping).
    """
    config = config or PPOConfig()
    sequence_baseline(torch.zeros(2), baseline)   # validate the name before any work
    generator = torch.Generator().manual_seed(config.seed)
    next_prompts = _prompt_source(prompts, config, generator)
    reference.eval()
    reward_model.eval()
    optimizer = make_optimizer(policy, config.lr, weight_decay=0.0)
    controller = config.kl_controller()
    history: dict = {"config": asdict(config), "baseline": baseline}
    bar = _progress_bar(progress, config.iterations)
    for it in range(config.iterations):
        _set_lr(optimizer, config, it)
        r, t_generate, t_score = rollout(policy, reference, reward_model, next_prompts(it), config, generator)
        start = time.perf_counter()
        beta = controller.beta
        seq_logp, logp, entropy, returns = _reinforce_terms(policy, r, config, beta)
        metrics = _sequence_metrics(r, logp, beta, it)
        metrics["entropy"] = float(masked_mean(entropy, r.mask))
        texts = r.response_texts()
        if gold_fn is not None:
            metrics["gold"] = _gold(gold_fn, r.prompts, texts)
        loss = reinforce_loss(seq_logp, returns, sequence_baseline(returns, baseline))
        _finite("REINFORCE loss", loss.item(), it, "lower the learning rate, or raise beta")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(policy.parameters(), config.grad_clip))
        optimizer.step()
        controller.update(metrics["kl"], config.batch_size)
        metrics.update(loss=loss.item(), t_generate=t_generate, t_score=t_score, t_update=time.perf_counter() - start)
        _end_iteration(history, metrics, r, texts, config, gold_fn, bar)
    if bar is not None:
        bar.close()
    policy.eval()
    return policy, history


def policy_gradient_variance(policy: GPT, reference: GPT, reward_model: nn.Module, prompts,
                             config: PPOConfig | None = None, baselines: Sequence[str] = BASELINES,
                             n_batches: int = 8) -> dict[str, dict]:
    """How noisy is the REINFORCE gradient with each baseline? Measured on the SAME samples for all.

    Draws n_batches independent batches of config.batch_size responses from `policy` (which is not
    changed) and, for each baseline, the flattened gradient g_k (all parameters) of the REINFORCE loss
    on batch k. Returns {baseline: {"variance": sum_j Var_k(g_k[j]) (the trace of the gradient
    estimate's covariance: expected ||g_k - E g||^2), "mean_sq_norm": ||mean_k g_k||^2 (the signal),
    "snr": mean_sq_norm / variance}}. Using the same rollouts for every baseline (common random
    numbers) means the differences come from the baseline alone. Cost: n_batches rollouts and one
    backward per batch and baseline.
    """
    config = config or PPOConfig()
    if n_batches < 2:
        raise ValueError("n_batches must be >= 2 to measure a variance")
    generator = torch.Generator().manual_seed(config.seed)
    next_prompts = _prompt_source(prompts, config, generator)
    params = [p for p in policy.parameters() if p.requires_grad]
    grads: dict[str, list[torch.Tensor]] = {b: [] for b in baselines}
    for k in range(n_batches):
        r, _, _ = rollout(policy, reference, reward_model, next_prompts(k), config, generator)
        seq_logp, _, _, returns = _reinforce_terms(policy, r, config, config.beta)
        for i, b in enumerate(baselines):
            loss = reinforce_loss(seq_logp, returns, sequence_baseline(returns, b))
            g = torch.autograd.grad(loss, params, retain_graph=i < len(baselines) - 1)
            grads[b].append(torch.cat([x.reshape(-1) for x in g]))
    out = {}
    for b, gs in grads.items():
        stacked = torch.stack(gs).double()
        variance = float(stacked.var(0).sum())
        signal = float(stacked.mean(0).pow(2).sum())
        out[b] = {"variance": variance, "mean_sq_norm": signal, "snr": signal / variance if variance else float("inf")}
    return out


# ---------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_policy(policy: GPT, reference: GPT, reward_model: nn.Module, prompt_texts: list[str], *,
                    max_new_tokens: int = 64, temperature: float = 1.0, gold_fn=None, seed: int = 0,
                    batch_size: int = 256) -> dict:
    """One sample per prompt: mean RM score ("proxy"), gold (if gold_fn), KL (mean summed k1 vs the
    reference), response length and share finished. Deterministic in seed."""
    config = PPOConfig(max_new_tokens=max_new_tokens, temperature=temperature)
    generator = torch.Generator().manual_seed(seed)
    sums = {"proxy": 0.0, "kl": 0.0, "length": 0.0, "finished": 0.0, "gold": 0.0}
    for s in range(0, len(prompt_texts), batch_size):
        r, _, _ = rollout(policy, reference, reward_model, prompt_texts[s:s + batch_size], config, generator)
        gen = r.generation
        logp, _ = response_logprobs(policy, gen.tokens, gen.attention_mask, gen.prompt_length, temperature)
        sums["proxy"] += float(r.scores.sum())
        sums["kl"] += float((kl_k1(logp, r.ref_logprobs) * r.mask).sum())
        sums["length"] += float(r.mask.sum())
        sums["finished"] += float(gen.finished.sum())
        if gold_fn is not None:
            sums["gold"] += sum(gold_fn(t, p) for t, p in zip(r.response_texts(), r.prompts))
    out = {k: v / len(prompt_texts) for k, v in sums.items()}
    if gold_fn is None:
        del out["gold"]
    return out
