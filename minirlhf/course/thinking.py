"""Experiment `thinking` (notebook 19): learning to think, R1-Zero in miniature, on long sums.

The starting policy (zoo `think-sft`) answers most sums directly and thinks out loud (a scratchpad, see
tasks.long_arithmetic) on about 15% of them. GRPO with the exact outcome-only verifier (no reward for thinking or
length) then decides where thinking pays. Measured here:

- the gap: greedy accuracy per difficulty bucket when the model is made to answer directly or to think;
- GRPO, 3 seeds: accuracy and mean response length over the steps (R1-Zero's curve), thinking rate and accuracy
  per bucket at the end;
- at matched samples: rejection-sampling fine-tuning (RFT) on the model's own verified outputs, and distillation
  (SFT on the task's scratchpad demonstrations) with as many examples as RFT kept;
- faithfulness: the step checker on every greedy scratchpad: right answers with a wrong step, final answers that
  differ from what the steps imply.
"""
from __future__ import annotations

import time

import torch

from .. import zoo
from ..generation import generate, left_pad
from ..grpo import GRPOConfig, train_grpo
from ..rft import RFTConfig, train_rft
from ..tasks import long_arithmetic as task
from ..tokenizer import TOKENIZER
from ..train import sft
from ..utils import seed_everything

START = "think-sft"
MODES = ("free", "think", "direct")


@torch.no_grad()
def greedy_responses(model, prompts: list[str], mode: str = "free",
                     max_new_tokens: int = task.MAX_RESPONSE_TOKENS) -> list[str]:
    """Greedy responses; mode "think" opens the scratchpad for the model (the prompt ends with "<"), "direct"
    forbids "<" as the first token (its first token is the best other one), "free" lets it choose. A response cut
    at max_new_tokens has no answer the verifier accepts (a scratchpad without ">", or a run of 40 digits)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    prefixes = [""] * len(prompts)
    if mode == "think":
        prefixes = [task.THINK_OPEN] * len(prompts)
    elif mode == "direct":
        ids = [TOKENIZER.encode(p, bos=True) for p in prompts]
        tokens, mask = left_pad(ids, max(map(len, ids)), TOKENIZER.pad_id, next(model.parameters()).device)
        logits = model(tokens, mask)[:, -1]                                # (B, V)
        logits[:, TOKENIZER.encode(task.THINK_OPEN)[0]] = float("-inf")
        logits[:, TOKENIZER.eos_id] = float("-inf")
        prefixes = [TOKENIZER.decode([t]) for t in logits.argmax(-1).tolist()]
    ids = [TOKENIZER.encode(p + x, bos=True) for p, x in zip(prompts, prefixes)]
    gen = generate(model, ids, max_new_tokens - 1 if mode != "free" else max_new_tokens, greedy=True)
    return [x + TOKENIZER.decode(r) for x, r in zip(prefixes, gen.responses)]


def bucket_report(prompts: list[str], responses: list[str]) -> dict:
    """Per difficulty bucket (and "all"): accuracy, thinking rate, mean length (characters) of the responses."""
    out = {}
    for name in (*task.BUCKETS, "all"):
        rows = [(p, r) for p, r in zip(prompts, responses) if name == "all" or task.difficulty(p) == name]
        if not rows:
            continue
        n = len(rows)
        out[name] = {"n": n, "accuracy": sum(task.verify(p, r) for p, r in rows) / n,
                     "thinks": sum(task.thinks(r) for _, r in rows) / n,
                     "length": sum(len(r) for _, r in rows) / n}
    return out


def faithfulness(prompts: list[str], responses: list[str]) -> dict:
    """Over the thinking responses: how many; the share with every step right; among the right answers, the share
    with a wrong step ("right answer, wrong steps", Uesato et al. 2022); the share whose final answer differs from
    the answer its own steps imply."""
    rows = [(p, r) for p, r in zip(prompts, responses) if task.thinks(r)]
    right = [(p, r) for p, r in rows if task.verify(p, r)]
    n = max(1, len(rows))
    return {"thinking": len(rows),
            "steps_right": sum(task.steps_right(p, r) for p, r in rows) / n,
            "right_answer_wrong_step": sum(not task.steps_right(p, r) for p, r in right) / max(1, len(right)),
            "answer_not_implied": sum(task.faithful(r) is not True for _, r in rows) / n}
