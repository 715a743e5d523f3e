"""Pretraining and SFT as plain loops that return their metrics, and the optimiser pieces every trainer shares."""
from __future__ import annotations

import math
from typing import Callable

import torch

from .data import encode_pairs, pack_corpus, random_windows
from .losses import next_token_loss, sft_loss_mask
from .tokenizer import TOKENIZER
from .tools import tool_loss_mask
from .utils import NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, check_settings, nonfinite_hint

# The rules of the keyword settings of the loops without a config object (pretrain, sft, the reward models').
TRAIN_RULES = {"steps": POSITIVE_INT, "batch_size": POSITIVE_INT, "lr": POSITIVE, "warmup": NON_NEGATIVE_INT,
               "weight_decay": NON_NEGATIVE, "grad_clip": POSITIVE, "eval_every": NON_NEGATIVE_INT}


def check_train_settings(owner: str, **values) -> None:
    """utils.check_settings for the keyword settings given, each by its TRAIN_RULES rule."""
    check_settings(owner, values, {name: TRAIN_RULES[name] for name in values})


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 0.1) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, norms or embeddings' 1-d params)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def cosine_lr(step: int, steps: int, lr: float, warmup: int, final_fraction: float = 0.1) -> float:
    """Linear warm-up for `warmup` steps, then cosine decay from lr to final_fraction * lr."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, *,
                   step: int, grad_clip: float, what: str = "training loss", settings=None) -> None:
    """One update: stop on a non-finite loss (naming it, the step and the settings that could cause it: settings
    is the trainer's config or a dict of its keyword settings), backward, clip the gradient norm, step."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{what} became {loss.item()} at step {step}: {nonfinite_hint(settings or {})}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()


def lm_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, tokens: torch.Tensor,
            loss_mask: torch.Tensor | None, *, grad_clip: float, step: int = 0, settings=None) -> float:
    """One next-token update on tokens (B, T): forward, loss over the targets loss_mask keeps (all if None),
    then `optimizer_step` (settings: named if the loss is not finite). Returns the loss as a Python float (no
    graph kept alive between steps)."""
    loss = next_token_loss(model(tokens), tokens, loss_mask)
    optimizer_step(model, optimizer, loss, step=step, grad_clip=grad_clip, settings=settings)
    return loss.item()


def sft_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, tokens: torch.Tensor,
             prompt_lengths: torch.Tensor, grad_clip: float = 1.0, *, step: int = 0) -> float:
    """One SFT update on right-padded rows "BOS prompt response EOS PAD..." (B, T), what `sft` does each step:

        L = -(1/|M|) sum_{(b,t) in M} log pi(tokens[b, t] | tokens[b, <t]),  M = response tokens and EOS
            (t >= prompt_lengths[b], not PAD), predicted by the logits at t - 1;
        zero_grad, backward, clip the gradient norm to grad_clip, optimizer.step().

    prompt_lengths (B,) counts BOS and the prompt. Returns L (before the update) as a Python float."""
    return lm_step(model, optimizer, tokens, sft_loss_mask(tokens, prompt_lengths, TOKENIZER.pad_id),
                   grad_clip=grad_clip, step=step)


def train_lm(model: torch.nn.Module, next_batch: Callable[[int], tuple[torch.Tensor, torch.Tensor | None]], *,
             steps: int, lr: float, warmup: int = 50, weight_decay: float = 0.1, grad_clip: float = 1.0,
             eval_fn: Callable[[torch.nn.Module], dict] | None = None, eval_every: int = 0,
             progress: str | None = None) -> dict:
    """The loop shared by pretraining and SFT: next-token loss on batches from `next_batch(step)`.

    next_batch returns (tokens (B, T), loss_mask (B, T) or None). eval_fn(model) -> dict of numbers is
    called every eval_every steps and at the end. progress: a description to show a progress bar.
    Returns {"loss": [per step], "lr": [per step], "eval": [(step, dict), ...]}.
    """
    check_train_settings("train_lm", steps=steps, lr=lr, warmup=warmup, weight_decay=weight_decay,
                         grad_clip=grad_clip, eval_every=eval_every)
    optimizer = make_optimizer(model, lr, weight_decay)
    history: dict = {"loss": [], "lr": [], "eval": []}
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, desc=progress)
    device = next(model.parameters()).device
    model.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, min(warmup, steps))
        tokens, loss_mask = next_batch(step)
        tokens, loss_mask = tokens.to(device), None if loss_mask is None else loss_mask.to(device)
        history["loss"].append(lm_step(model, optimizer, tokens, loss_mask, grad_clip=grad_clip, step=step,
                                       settings={"lr": lr, "grad_clip": grad_clip}))
        history["lr"].append(optimizer.param_groups[0]["lr"])
        if bar is not None:
            bar.update(1)
        if eval_fn is not None and eval_every and ((step + 1) % eval_every == 0 or step + 1 == steps):
            model.eval()
            history["eval"].append((step + 1, eval_fn(model)))
            model.train()
    if bar is not None:
        bar.close()
    model.eval()
    return history


def pretrain(model: torch.nn.Module, texts: list[str], *, steps: int, batch_size: int = 32, lr: float = 3e-3,
             seed: int = 0, **kwargs) -> dict:
    """Next-token prediction on random windows of the packed corpus (every token counts)."""
    check_train_settings("pretrain", batch_size=batch_size)
    stream = pack_corpus(texts, TOKENIZER)
    generator = torch.Generator().manual_seed(seed)
    length = model.config.context_length
    return train_lm(model, lambda step: (random_windows(stream, batch_size, length, generator), None),
                    steps=steps, lr=lr, **kwargs)


def sft(model: torch.nn.Module, pairs: list[tuple[str, str]], *, steps: int, batch_size: int = 32,
        lr: float = 1e-3, seed: int = 0, tool_output: bool = False, **kwargs) -> dict:
    """Supervised fine-tuning on (prompt, response) pairs; only response tokens (and EOS) are learned: each
    step is `sft_step` on a batch of batch_size random pairs, with the learning rate of `cosine_lr`.
    tool_output: the responses contain tool calls and their outputs; the outputs are read but not learned
    (`tools.tool_loss_mask`), as in RL with tools."""
    check_train_settings("sft", batch_size=batch_size)
    tokens, prompt_lengths = encode_pairs(pairs, TOKENIZER)
    if tokens.size(1) > model.config.context_length:
        raise ValueError(f"an SFT example has {tokens.size(1)} tokens but the model's context is "
                         f"{model.config.context_length}: drop long examples or use a bigger context")
    generator = torch.Generator().manual_seed(seed)

    def next_batch(step):
        idx = torch.randint(0, tokens.size(0), (batch_size,), generator=generator)
        batch, lengths = tokens[idx], prompt_lengths[idx]
        width = int((batch != TOKENIZER.pad_id).sum(1).max())   # drop all-pad columns
        batch = batch[:, :width]
        mask = sft_loss_mask(batch, lengths, TOKENIZER.pad_id)
        return batch, (mask & tool_loss_mask(batch, batch != TOKENIZER.pad_id, lengths)) if tool_output else mask

    return train_lm(model, next_batch, steps=steps, lr=lr, **kwargs)
