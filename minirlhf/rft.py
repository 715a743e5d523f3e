"""Rejection-sampling fine-tuning (RFT, expert iteration): the cheap competitor of GRPO on a verifiable reward.

One step, with the same samples a GRPO step draws (so the two are compared at matched samples):

1. generate: G = num_generations responses to each of P prompts (grpo.group_rollout);
2. score: reward_fn(prompt, response) for every response;
3. filter: keep the responses whose reward is >= success_reward, each distinct response once per prompt
   (Yuan et al. 2023 deduplicate the kept reasoning paths; STaR, Zelikman et al. 2022, keeps one);
4. update: one SFT step (train.sft_step: next-token loss on the kept responses and their EOS, prompt masked).

What it cannot do that GRPO does: learn from a wrong answer. A group with no right answer teaches nothing, and a
right answer counts the same whether the policy found it once in G tries or every time.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch

from .advantages import zero_std_groups
from .data import encode_pairs
from .grpo import RewardFn, group_rollout
from .model import GPT
from .rl import progress_bar
from .sampling import prompt_source
from .tokenizer import TOKENIZER
from .train import make_optimizer, sft_step
from .utils import FINITE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, check_settings


@dataclass
class RFTConfig:
    """Hyper-parameters of train_rft; sampling options named as GRPOConfig's (TRL's) so runs can be matched."""

    steps: int = 60
    prompts_per_step: int = 16         # P prompts per step
    num_generations: int = 8           # G samples per prompt
    max_completion_length: int = 4
    temperature: float = 1.0
    lr: float = 1e-4
    success_reward: float = 1.0        # a response is kept if reward >= this
    deduplicate: bool = True           # keep each distinct right response once per prompt
    grad_clip: float = 1.0
    seed: int = 0
    n_samples: int = 3                 # responses kept per step in history["samples"]

    RULES = {"steps": POSITIVE_INT, "prompts_per_step": POSITIVE_INT, "num_generations": POSITIVE_INT,
             "max_completion_length": POSITIVE_INT, "temperature": POSITIVE, "lr": POSITIVE,
             "success_reward": FINITE, "grad_clip": POSITIVE, "n_samples": NON_NEGATIVE_INT}

    def __post_init__(self):
        check_settings(type(self).__name__, self, self.RULES)


def kept_responses(prompts: list[str], texts: list[str], rewards: list[float], success_reward: float,
                   deduplicate: bool) -> list[tuple[str, str]]:
    """(prompt, response) pairs whose reward is >= success_reward, in sampling order; with deduplicate, each
    distinct (prompt, response) once."""
    kept, seen = [], set()
    for pair, r in zip(zip(prompts, texts), rewards):
        if r >= success_reward and not (deduplicate and pair in seen):
            kept.append(pair)
            seen.add(pair)
    return kept


def train_rft(policy: GPT, prompts, reward_fn: RewardFn, config: RFTConfig | None = None, *,
              eval_fn: Callable[[GPT], float] | None = None, eval_every: int = 10,
              progress: str | None = None) -> tuple[GPT, dict]:
    """Fine-tune `policy` in place by rejection sampling: sample, keep the verified answers, SFT on them.

    prompts: a list of prompt texts or a function (n, seed) -> texts (as train_grpo). The rollout draws from the
    same random streams as train_grpo with the same seed, so step 0's samples are GRPO's step 0 samples.
    Returns (policy, history). Per step: reward, accuracy (share with reward >= success_reward),
    frac_reward_zero_std (groups with all rewards equal), kept (responses trained on), loss (the SFT loss on
    them; 0 and no update when nothing is kept), samples_seen. With eval_fn: eval and eval_samples_seen.
    """
    config = config or RFTConfig()
    generator = torch.Generator().manual_seed(config.seed)
    next_prompts = prompt_source(prompts, config.prompts_per_step, config.seed, generator)
    policy.eval()                                   # no dropout while sampling; the SFT step uses the same mode
    optimizer = make_optimizer(policy, config.lr, weight_decay=0.0)
    history: dict = {"config": asdict(config)}
    bar = progress_bar(progress, config.steps)
    samples_seen = 0

    def evaluate() -> None:
        history.setdefault("eval", []).append(float(eval_fn(policy)))
        history.setdefault("eval_samples_seen", []).append(samples_seen)

    if eval_fn is not None:
        evaluate()
    for step in range(config.steps):
        r, _, _ = group_rollout(policy, next_prompts(step), reward_fn, config.num_generations,
                                config.max_completion_length, config.temperature, generator)
        samples_seen += len(r.texts)
        rewards = r.rewards.view(-1).tolist()
        kept = kept_responses(r.prompts, r.texts, rewards, config.success_reward, config.deduplicate)
        loss = 0.0
        if kept:
            tokens, prompt_lengths = encode_pairs(kept, TOKENIZER)
            device = r.generation.tokens.device
            loss = sft_step(policy, optimizer, tokens.to(device), prompt_lengths.to(device), config.grad_clip,
                            step=step)
        metrics = {"reward": float(r.rewards.mean()),
                   "accuracy": float((r.rewards >= config.success_reward).float().mean()),
                   "frac_reward_zero_std": float(zero_std_groups(r.rewards).float().mean()),
                   "kept": len(kept), "loss": loss, "samples_seen": samples_seen,
                   "samples": [{"prompt": p, "response": t, "reward": x}
                               for p, t, x in zip(r.prompts, r.texts, rewards)][:config.n_samples]}
        for key, value in metrics.items():
            history.setdefault(key, []).append(value)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward']:.2f}", kept=len(kept))
        if eval_fn is not None and ((step + 1) % eval_every == 0 or step + 1 == config.steps):
            evaluate()
    if bar is not None:
        bar.close()
    return policy, history
