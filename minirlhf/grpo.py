"""GRPO and its family (Dr. GRPO, DAPO's pieces, RLOO): RL from a verifiable reward, no value head.

One step, as in DeepSeekMath (Shao et al. 2024) and TRL's GRPOTrainer:

1. generate: G = num_generations responses to each of P prompts (one batch of P * G rows, KV cache);
2. score: reward_fn(prompt, response) -> float for every response (a verifier: 1 if right, else 0);
3. advantages: one number per response from its group's rewards (advantages.group_advantages):
   GRPO (r - mean) / std, Dr. GRPO r - mean, RLOO r - mean of the others. A group whose rewards are all
   equal gets zeros: its share is `frac_reward_zero_std`; dynamic sampling (DAPO) replaces such groups
   with fresh prompts so that every update sees P groups that teach something;
4. update: num_iterations gradient steps on losses.grpo_loss (clipped surrogate, aggregated by
   loss_type, plus beta * k3 KL to the reference if beta > 0).

Every per-token quantity is (B, N) with B = P * G rows and N response tokens. `GroupRollout.loss_mask`
says which tokens the policy is trained on (and which count in the normalisers): the response's own
tokens. A trainer whose responses contain text the policy did not sample (a tool's output) passes a
rollout whose loss_mask leaves those tokens out.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from .advantages import BASELINES, SCALE_REWARDS, group_advantages, masked_mean, zero_std_groups
from .generation import Generation, generate
from .logprobs import kl_k3, response_logprobs
from .losses import LOSS_TYPES, aggregate_token_losses, grpo_loss
from .model import GPT
from .rl import check_finite, progress_bar
from .sampling import prompt_source
from .tokenizer import TOKENIZER
from .tools import generate_with_tools
from .train import make_optimizer, optimizer_step
from .utils import FINITE, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, check_settings, optional

RewardFn = Callable[[str, str], float]
Tool = Callable[[str], str]


@dataclass
class GRPOConfig:
    """Hyper-parameters of train_grpo, named as TRL's GRPOConfig where TRL has the option.

    TRL's defaults where TRL has the option (num_generations 8, beta 0, epsilon 0.2, scale_rewards "group",
    loss_type "dapo"); lr and sizes for arithmetic-sft (answers of at most 4 tokens), where lr 2e-4 and above
    first lowered the accuracy and 1e-3 collapsed the policy (notebook 15).
    baseline "leave_one_out" with scale_rewards "none" is RLOO (`rloo_config`); loss_type "dr_grpo" with
    scale_rewards "none" is Dr. GRPO; loss_type "grpo" with scale_rewards "group" is the original GRPO.
    """

    steps: int = 60                    # TRL: max_steps
    prompts_per_step: int = 16         # P groups per update (TRL's per-device batch / num_generations)
    num_generations: int = 8           # G responses per prompt
    max_completion_length: int = 4
    temperature: float = 1.0           # sampling AND log-prob temperature
    lr: float = 5e-5
    beta: float = 0.0                  # KL (k3) to the reference, in the loss; 0 = no reference model (TRL)
    epsilon: float = 0.2
    epsilon_high: float | None = None  # clip-higher (DAPO 0.28); None = epsilon
    scale_rewards: str = "group"       # "group", "batch", "none"
    loss_type: str = "dapo"            # "grpo", "dapo" (TRL's default), "dr_grpo"
    baseline: str = "mean"             # "mean" (GRPO) or "leave_one_out" (RLOO)
    num_iterations: int = 1            # gradient steps per batch (TRL's mu); >1 makes the clip matter
    dynamic_sampling: bool = False     # DAPO: replace zero-variance groups by fresh prompts...
    max_resample_rounds: int = 3       # ...for at most this many extra generation rounds per step
    success_reward: float = 1.0        # a response is counted "correct" in `accuracy` if reward >= this
    grad_clip: float = 1.0
    seed: int = 0
    n_samples: int = 3                 # responses kept per step in history["samples"]

    RULES = {"steps": POSITIVE_INT, "prompts_per_step": POSITIVE_INT, "num_generations": POSITIVE_INT,
             "max_completion_length": POSITIVE_INT, "temperature": POSITIVE, "lr": POSITIVE, "beta": NON_NEGATIVE,
             "epsilon": NON_NEGATIVE, "epsilon_high": optional(NON_NEGATIVE), "num_iterations": POSITIVE_INT,
             "max_resample_rounds": NON_NEGATIVE_INT, "success_reward": FINITE, "grad_clip": POSITIVE,
             "n_samples": NON_NEGATIVE_INT}

    def __post_init__(self):
        check_settings(type(self).__name__, self, self.RULES)
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (a group needs others to compare with), got {self.num_generations}")
        for name, value, allowed in (("scale_rewards", self.scale_rewards, SCALE_REWARDS),
                                     ("loss_type", self.loss_type, LOSS_TYPES), ("baseline", self.baseline, BASELINES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.baseline == "none":
            raise ValueError("baseline 'none' is REINFORCE, not a group method: use 'mean' (GRPO) or 'leave_one_out' (RLOO)")


def rloo_config(**kwargs) -> GRPOConfig:
    """RLOO (Ahmadian et al. 2024) as a GRPOConfig: leave-one-out baseline, no std scaling, token mean."""
    return GRPOConfig(**{"baseline": "leave_one_out", "scale_rewards": "none", **kwargs})


def dr_grpo_config(**kwargs) -> GRPOConfig:
    """Dr. GRPO (Liu et al. 2025): r - mean (no std), loss summed over tokens / (B * max_completion_length)."""
    return GRPOConfig(**{"scale_rewards": "none", "loss_type": "dr_grpo", **kwargs})


# ---------------------------------------------------------------- rollout
def one_reward(reward_fn: RewardFn, prompt: str, response: str) -> float:
    """reward_fn(prompt, response) as a float, or a TypeError saying that it must be one number per response."""
    value = reward_fn(prompt, response)
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):    # RuntimeError: a tensor of more than one element
        raise TypeError(f"reward_fn returned {value!r} for the response {response!r}: it must return one number "
                        "(a float) per (prompt, response)") from None

@dataclass
class GroupRollout:
    """P prompts x G responses as B = P * G rows, prompt p's responses in rows p*G ... p*G + G - 1.

    prompts: the B prompt texts (each repeated G times); texts: the B responses; generation: tokens and masks
    (generation.Generation); rewards (P, G); loss_mask (B, N) bool: the tokens trained on and counted (the
    response mask unless a caller removes tokens the policy did not sample).
    """
    prompts: list[str]
    texts: list[str]
    generation: Generation
    rewards: torch.Tensor
    loss_mask: torch.Tensor

    @property
    def num_generations(self) -> int:
        return self.rewards.size(1)


def merge_groups(parts: list[tuple[GroupRollout, torch.Tensor]]) -> GroupRollout:
    """One rollout from the groups kept (a (P,) bool per part) of several rollouts with the same G.

    Rows are re-packed (prompt left-padded to the widest kept prompt, response right-padded to the longest
    kept response), so parts sampled with different prompt widths merge into one batch for the update."""
    G = parts[0][0].num_generations
    prompts, texts, rewards, prompt_ids, response_ids, loss_masks, finished = [], [], [], [], [], [], []
    for r, keep in parts:
        gen = r.generation
        P = gen.prompt_length
        rewards.append(r.rewards[keep])
        for i in keep.repeat_interleave(G).nonzero().squeeze(1).tolist():
            real = gen.response_mask[i]
            prompts.append(r.prompts[i])
            texts.append(r.texts[i])
            prompt_ids.append(gen.tokens[i, :P][gen.attention_mask[i, :P]])
            response_ids.append(gen.tokens[i, P:][real])
            loss_masks.append(r.loss_mask[i][real])
            finished.append(bool(gen.finished[i]))
    if not prompts:
        raise ValueError("no group was kept: nothing to merge")
    P, N = max(map(len, prompt_ids)), max(1, max(map(len, response_ids)))
    device = parts[0][0].generation.tokens.device
    tokens = torch.full((len(prompts), P + N), TOKENIZER.pad_id, dtype=torch.long, device=device)
    attention = torch.zeros_like(tokens, dtype=torch.bool)
    loss_mask = torch.zeros((len(prompts), N), dtype=torch.bool, device=device)
    for row, (p, y, m) in enumerate(zip(prompt_ids, response_ids, loss_masks)):
        tokens[row, P - len(p):P], tokens[row, P:P + len(y)] = p, y
        attention[row, P - len(p):P + len(y)] = True
        loss_mask[row, :len(y)] = m
    gen = Generation(tokens, attention, P, attention[:, P:], torch.tensor(finished, device=device))
    return GroupRollout(prompts, texts, gen, torch.cat(rewards), loss_mask)


@torch.no_grad()
def group_rollout(policy: GPT, prompts: list[str], reward_fn: RewardFn, num_generations: int,
                  max_completion_length: int, temperature: float, generator: torch.Generator,
                  tool: Tool | None = None, mask_tool_output: bool = True) -> tuple[GroupRollout, float, float]:
    """Sample num_generations responses to each prompt and score each with reward_fn(prompt, response).

    With a tool (tools.generate_with_tools; e.g. calculator.tool_output), a row that closes a call gets the
    tool's output written into it; the responses passed to reward_fn contain it, and loss_mask leaves it out
    (the policy did not sample it) unless mask_tool_output is False, the bug notebook 16 reproduces.
    `generation.tool_calls` then holds each row's number of calls. Returns (rollout, t_generate, t_score),
    the two timings in seconds."""
    start = time.perf_counter()
    repeated = [p for p in prompts for _ in range(num_generations)]
    ids = [TOKENIZER.encode(p, bos=True) for p in repeated]
    if tool is None:
        gen = generate(policy, ids, max_completion_length, temperature=temperature, generator=generator)
        loss_mask = gen.response_mask.clone()
    else:
        gen = generate_with_tools(policy, ids, max_completion_length, tool, temperature=temperature,
                                  generator=generator)
        loss_mask = (gen.response_loss_mask if mask_tool_output else gen.response_mask).clone()
    texts = [TOKENIZER.decode(r) for r in gen.responses]
    t_generate = time.perf_counter() - start
    start = time.perf_counter()
    rewards = torch.tensor([one_reward(reward_fn, p, t) for p, t in zip(repeated, texts)]).view(len(prompts),
                                                                                            num_generations)
    if not torch.isfinite(rewards).all():
        raise FloatingPointError("reward_fn returned NaN or inf; it must return a finite float for every response")
    rollout = GroupRollout(repeated, texts, gen, rewards.to(gen.tokens.device), loss_mask)
    return rollout, t_generate, time.perf_counter() - start


# ---------------------------------------------------------------- the update
def grpo_update(policy: GPT, optimizer: torch.optim.Optimizer, batch: GroupRollout, config: GRPOConfig,
                reference: GPT | None, step: int) -> dict:
    """Step 3-4 on one batch of groups: advantages, then config.num_iterations gradient steps on grpo_loss.

    old log-probs are the policy's at the first iteration (detached), so the first step's ratio is 1 and its
    gradient is the plain policy gradient; clipping acts from the second iteration on. Returns loss (mean
    over iterations), clip_ratio (share of counted tokens whose clip was active), entropy, kl (k3 to the
    reference, per token) if a reference is given."""
    gen, mask = batch.generation, batch.loss_mask
    P = gen.prompt_length
    advantages = group_advantages(batch.rewards, config.baseline, config.scale_rewards).reshape(-1)
    ref_logp = None
    if reference is not None:
        with torch.no_grad():
            ref_logp, _ = response_logprobs(reference, gen.tokens, gen.attention_mask, P, config.temperature)
    high = config.epsilon if config.epsilon_high is None else config.epsilon_high
    old, losses, clipped = None, [], []
    for _ in range(config.num_iterations):
        logp, entropy = response_logprobs(policy, gen.tokens, gen.attention_mask, P, config.temperature)
        if old is None:
            old, first_entropy = logp.detach(), entropy.detach()
        loss = grpo_loss(logp, old, advantages, mask, config.loss_type, config.epsilon, config.epsilon_high,
                         config.max_completion_length, ref_logp, config.beta)
        optimizer_step(policy, optimizer, loss, step=step, grad_clip=config.grad_clip, what="GRPO loss", settings=config)
        with torch.no_grad():
            ratio, a = torch.exp(logp.detach() - old), advantages[:, None]
            active = ((ratio < 1 - config.epsilon) & (a < 0)) | ((ratio > 1 + high) & (a > 0))
            clipped.append(float(masked_mean(active.float(), mask)))
        losses.append(loss.item())
    out = {"loss": sum(losses) / len(losses), "clip_ratio": sum(clipped) / len(clipped),
           "entropy": float(masked_mean(first_entropy, mask))}
    if ref_logp is not None:
        out["kl"] = check_finite("KL", float(masked_mean(kl_k3(old, ref_logp), mask)), step,
                                 "the policy drifted to tokens the reference finds impossible; raise beta or lower lr")
    return out


# ---------------------------------------------------------------- the loop
def train_grpo(policy: GPT, prompts, reward_fn: RewardFn, config: GRPOConfig | None = None, *,
               reference: GPT | None = None, eval_fn: Callable[[GPT], float] | None = None, eval_every: int = 10,
               tool: Tool | None = None, mask_tool_output: bool = True,
               progress: str | None = None) -> tuple[GPT, dict]:
    """Fine-tune `policy` in place with GRPO (or Dr. GRPO, RLOO, DAPO's pieces: see GRPOConfig) on reward_fn.

    prompts: a list of prompt texts (drawn with replacement) or a function (n, seed) -> texts such as
    tasks.arithmetic.prompts. reward_fn(prompt, response) -> float. reference: the frozen model of the KL
    term (beta > 0); by default a copy of the policy at the start. eval_fn(policy) -> float, e.g. greedy
    accuracy on held-out prompts, is called before the first step, every eval_every steps and at the end.
    tool(response so far) -> text: sample with a tool (see group_rollout; max_completion_length must leave
    room for the calls and their outputs); mask_tool_output=False trains on the tool's output too (a bug).

    Returns (policy, history). Per step: reward (mean over the step's fresh samples), accuracy (share with
    reward >= success_reward), reward_std (mean within-group std), frac_reward_zero_std (share of groups whose
    rewards are all equal: they give no gradient), completion_length (mean tokens), loss, clip_ratio,
    entropy, kl (k3 per token, if beta > 0), tool_calls (mean calls per response, with a tool), groups_used (groups in the update), samples_seen (responses
    sampled so far, dynamic sampling's extra rounds included), t_generate / t_score / t_update (seconds).
    With eval_fn: eval and eval_samples_seen (one entry per evaluation). Plus samples and config.
    """
    config = config or GRPOConfig()
    generator = torch.Generator().manual_seed(config.seed)
    next_prompts = prompt_source(prompts, config.prompts_per_step, config.seed, generator)
    if config.beta and reference is None:
        reference = copy.deepcopy(policy)
    if reference is not None:
        reference.eval()
    policy.eval()                                   # no dropout: the log-probs must be those that sampled
    optimizer = make_optimizer(policy, config.lr, weight_decay=0.0)
    history: dict = {"config": asdict(config)}
    samples_seen, draws = 0, 0
    bar = progress_bar(progress, config.steps)

    def evaluate() -> None:
        history.setdefault("eval", []).append(float(eval_fn(policy)))
        history.setdefault("eval_samples_seen", []).append(samples_seen)

    def sample_groups(times: dict) -> GroupRollout:
        nonlocal samples_seen, draws
        out, t_generate, t_score = group_rollout(policy, next_prompts(draws), reward_fn, config.num_generations,
                                                 config.max_completion_length, config.temperature, generator,
                                                 tool, mask_tool_output)
        draws += 1
        samples_seen += len(out.texts)
        times["t_generate"] += t_generate
        times["t_score"] += t_score
        return out

    if eval_fn is not None:
        evaluate()
    for step in range(config.steps):
        times = {"t_generate": 0.0, "t_score": 0.0}
        r = sample_groups(times)
        zero = zero_std_groups(r.rewards)
        batch = r
        if config.dynamic_sampling:
            parts, kept, rounds = [(r, ~zero)], int((~zero).sum()), 0
            while kept < config.prompts_per_step and rounds < config.max_resample_rounds:
                extra = sample_groups(times)
                keep = ~zero_std_groups(extra.rewards)
                keep &= keep.cumsum(0) <= config.prompts_per_step - kept      # never more than P groups
                parts.append((extra, keep))
                kept, rounds = kept + int(keep.sum()), rounds + 1
            batch = merge_groups(parts) if kept else None
        metrics = {"reward": float(r.rewards.mean()),
                   "accuracy": float((r.rewards >= config.success_reward).float().mean()),
                   "reward_std": float(r.rewards.std(-1, correction=0).mean()),
                   "frac_reward_zero_std": float(zero.float().mean()),
                   "completion_length": float(r.generation.response_mask.sum(1).float().mean()),
                   "samples_seen": samples_seen, **times}
        if tool is not None:
            metrics["tool_calls"] = float(r.generation.tool_calls.float().mean())
        start = time.perf_counter()
        if batch is not None:
            metrics.update(grpo_update(policy, optimizer, batch, config, reference, step))
            metrics["groups_used"] = batch.rewards.size(0)
        else:
            metrics.update(loss=0.0, clip_ratio=0.0, entropy=0.0, groups_used=0)
        metrics["t_update"] = time.perf_counter() - start
        metrics["samples"] = [{"prompt": p, "response": t, "reward": float(x)}
                              for p, t, x in zip(r.prompts, r.texts, r.rewards.view(-1).tolist())][:config.n_samples]
        for key, value in metrics.items():
            history.setdefault(key, []).append(value)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward']:.2f}", zero_std=f"{metrics['frac_reward_zero_std']:.2f}")
        if eval_fn is not None and ((step + 1) % eval_every == 0 or step + 1 == config.steps):
            evaluate()
    if bar is not None:
        bar.close()
    return policy, history


# ---------------------------------------------------------------- a verifier for the trainers that take a reward model
class VerifierReward(torch.nn.Module):
    """reward_fn(prompt, response) as a reward model: forward(tokens, attention_mask) -> (B,) scores, the
    interface ppo.train_ppo and reinforce.train_reinforce call, so Part III's PPO can train on a verifier.

    Each row's real tokens are decoded and split after the first `prompt_end` (the end of the prompt
    template: "\\na: " for arithmetic); EOS and PAD are not text. No parameters, nothing to train."""

    def __init__(self, reward_fn: RewardFn, prompt_end: str):
        super().__init__()
        self.reward_fn, self.prompt_end = reward_fn, prompt_end

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        scores = []
        for row, real in zip(tokens.tolist(), attention_mask.tolist()):
            text = TOKENIZER.decode([t for t, keep in zip(row, real) if keep])
            cut = text.find(self.prompt_end)
            if cut < 0:
                raise ValueError(f"{text!r} does not contain the prompt end {self.prompt_end!r}: pass the string "
                                 "that ends every prompt of the task")
            cut += len(self.prompt_end)
            scores.append(one_reward(self.reward_fn, text[:cut], text[cut:]))
        return torch.tensor(scores, device=tokens.device)


# ---------------------------------------------------------------- the length bias, in a bandit (notebook 15)
def length_bandit(loss_type: str, *, steps: int = 300, prompts_per_step: int = 16, num_generations: int = 8,
                  max_length: int = 12, p_right: float = 0.5, lr: float = 1.0, seed: int = 0) -> dict:
    """Does the loss aggregation alone make wrong answers longer? A policy that sees whether its answer is right
    (as a model sees that its working went wrong) and then only chooses how long to go on.

    Each answer: a coin, right with probability p_right (not learned: the same for every method), then tokens
    "go on" or "stop" from a tabular policy, one logit per (right or wrong, position): at most max_length
    tokens, the stop token included. Reward 1 if right. The answer's length carries no reward, so an unbiased
    gradient leaves both length policies where they start (every logit 0: go on with probability 1/2, a mean
    length of about 2). GRPO's
    advantages ((r - mean) / std of each group), the clipped surrogate's first step, aggregated by loss_type
    with `losses.aggregate_token_losses`: with "grpo" a token of a wrong answer is pushed down by |A| / L, so
    short wrong answers are punished more per token and wrong answers drift longer, right ones shorter (Liu et
    al. 2025); "dr_grpo" and "dapo" weigh every token alike. Returns per-step "length_right" and
    "length_wrong" (mean lengths of the step's samples) and the final expected lengths "expected_right",
    "expected_wrong"."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    g = torch.Generator().manual_seed(seed)
    theta = torch.zeros(2, max_length, dtype=torch.float64, requires_grad=True)   # go-on logits: [wrong, right]
    optimizer = torch.optim.SGD([theta], lr=lr)        # plain SGD: Adam would turn zero-mean noise into a random walk
    B, positions = prompts_per_step * num_generations, torch.arange(max_length)
    history: dict = {"length_right": [], "length_wrong": []}
    for _ in range(steps):
        right = (torch.rand(B, generator=g) < p_right).long()
        with torch.no_grad():
            go_on = torch.rand(B, max_length, generator=g) < torch.sigmoid(theta[right])
        go_on[:, -1] = False                               # the last position must stop
        length = torch.argmin(go_on.long(), 1) + 1        # tokens up to and including the first stop
        mask = positions[None, :] < length[:, None]
        logits = theta[right]
        logp = torch.where(go_on, torch.nn.functional.logsigmoid(logits), torch.nn.functional.logsigmoid(-logits))
        advantages = group_advantages(right.double().view(prompts_per_step, num_generations), "mean", "group").view(-1)
        per_token = -torch.exp(logp - logp.detach()) * advantages[:, None]
        loss = aggregate_token_losses(per_token, mask, loss_type, max_length)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for name, which in (("length_right", right == 1), ("length_wrong", right == 0)):
            history[name].append(float(length[which].double().mean()) if which.any() else float("nan"))
    with torch.no_grad():                                  # expected length: sum over t of P(still going at t)
        going = torch.cumprod(torch.sigmoid(theta[:, :-1]), 1)
        expected = 1 + going.sum(1)
    history["expected_wrong"], history["expected_right"] = float(expected[0]), float(expected[1])
    return history
