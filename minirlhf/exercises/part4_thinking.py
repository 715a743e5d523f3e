"""Checks of notebook 19's exercises (learning to think: rejection-sampling fine-tuning's loss, a process verifier's
loss)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..losses import next_token_loss, sft_loss_mask, verifier_loss
from ..tokenizer import BOS_ID, EOS_ID, PAD_ID
from .engine import run_check, seeded


def _rft_loss(logits, tokens, prompt_lengths, rewards):
    kept = rewards >= 1.0
    return next_token_loss(logits, tokens, sft_loss_mask(tokens, prompt_lengths, PAD_ID) & kept[:, None])


def _rows(generator: torch.Generator, lengths: list[tuple[int, int]], T: int, V: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded rows "BOS prompt response EOS PAD...", one per (prompt length with BOS, response length with
    EOS); token ids 3..V-1 in between. Returns tokens (B, T) and prompt_lengths (B,)."""
    tokens = torch.full((len(lengths), T), PAD_ID, dtype=torch.long)
    for b, (p, r) in enumerate(lengths):
        tokens[b, :p + r] = torch.randint(3, V, (p + r,), generator=generator)
        tokens[b, 0], tokens[b, p + r - 1] = BOS_ID, EOS_ID
    return tokens, torch.tensor([p for p, _ in lengths])


def check_rft_loss(fn: Callable) -> Callable:
    """fn(logits (B, T, V), tokens (B, T), prompt_lengths (B,), rewards (B,)) -> scalar: one rejection-sampling
    fine-tuning step's loss. Only the verified rows (reward >= 1) are learned, as SFT learns a demonstration:

        L = -(1/|M|) sum_{(b,t) in M} log softmax(logits[b, t - 1])[tokens[b, t]],
        M = {(b, t): rewards[b] >= 1, t >= prompt_lengths[b], tokens[b, t] != PAD}

    (logits at t - 1 predict the token at t; prompt_lengths counts BOS and the prompt; the EOS is learned.)
    With no verified row the loss is 0. It feeds the optimiser, so gradients with respect to the logits are
    compared too."""
    g = seeded(19)
    V, T = 9, 12
    three, three_len = _rows(g, [(4, 5), (3, 8), (5, 2)], T, V)
    ragged, ragged_len = _rows(g, [(2, 3), (6, 6), (4, 1), (3, 9), (7, 4)], T, V)
    cases = [("3 rows, the middle one rejected", (torch.randn(3, T, V, generator=g), three, three_len,
                                                   torch.tensor([1.0, 0.0, 1.0]))),
             ("5 ragged rows, two verified", (torch.randn(5, T, V, generator=g) * 3, ragged, ragged_len,
                                             torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0]))),
             ("no verified row", (torch.randn(3, T, V, generator=g), three, three_len, torch.zeros(3)))]

    def masked(logits, tokens, mask):
        return next_token_loss(logits, tokens, mask)

    def kept(rewards):
        return (rewards >= 1.0)[:, None]

    def per_row_mean(logits, tokens, lengths, rewards):
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
        mask = (sft_loss_mask(tokens, lengths, PAD_ID) & kept(rewards))[:, 1:].float()
        rows = mask.sum(1) > 0
        return ((nll * mask).sum(1)[rows] / mask.sum(1)[rows]).mean() if rows.any() else (nll * 0).sum()

    mistakes = {
        "only the verified rows (reward >= 1) are learned: a rejected sample must not count at all.":
            lambda lo, t, p, r: masked(lo, t, sft_loss_mask(t, p, PAD_ID)),
        "the prompt is counted: mask the positions t < prompt_lengths[b] (the model did not write them).":
            lambda lo, t, p, r: masked(lo, t, (t != PAD_ID) & kept(r)),
        "the padding is counted: leave out the targets that are PAD.":
            lambda lo, t, p, r: masked(lo, t, (torch.arange(t.size(1))[None] >= p[:, None]) & kept(r)),
        "one token off: the logits at position t - 1 predict the token at t, so shift the targets (tokens[:, 1:]) "
        "and the mask with them.":
            lambda lo, t, p, r: masked(lo, t, torch.cat([(sft_loss_mask(t, p, PAD_ID) & kept(r))[:, 1:],
                                                         torch.zeros_like(t[:, :1], dtype=torch.bool)], 1)),
        "average over all counted tokens together, not row by row (a long verified answer weighs more, as in SFT).":
            per_row_mean,
    }
    return run_check("rft_loss", fn, _rft_loss, cases, mistakes, grad_args={0: "logits"},
                     nonfinite_hint="with no verified row there is nothing to average: return 0 (e.g. divide by "
                                    "max(count, 1)), not 0 / 0.")


def check_verifier_loss(fn: Callable) -> Callable:
    """fn(logits (B, T), where (B, T) bool, labels (B, T) float) -> scalar: a process (or outcome) verifier's binary
    cross-entropy, averaged over the labelled positions only (losses.verifier_loss):

        L = -(1/|W|) sum_{(b,t) in W} [y log sigma(z) + (1 - y) log sigma(-z)],   W = {where = True}

    A process verifier has a label at each step's last token and at EOS, so rows carry different numbers of labels;
    logits of +-100 (a confident verifier) must give a finite loss and gradient. It feeds the optimiser: gradients
    with respect to the logits are compared too."""
    g = seeded(191)
    B, T = 4, 10
    where = torch.zeros(B, T, dtype=torch.bool)
    for b, positions in enumerate(([3, 6, 9], [2, 9], [9], [1, 4, 5, 7, 9])):     # ragged: steps, then EOS
        where[b, positions] = True
    labels = (torch.rand(B, T, generator=g) < 0.6).float() * where
    extreme = torch.randn(B, T, generator=g) * 100
    cases = [("4 rows with 1 to 5 labels each", (torch.randn(B, T, generator=g) * 2, where, labels)),
             ("confident logits of about +-100", (extreme, where, labels)),
             ("only outcome labels (one per row, at EOS)", (torch.randn(B, T, generator=g), where & (torch.arange(T) == 9),
                                                             labels))]

    def per_row(z, w, y):
        per = F.binary_cross_entropy_with_logits(z, y, reduction="none") * w
        return (per.sum(1) / w.sum(1)).mean()

    mistakes = {
        "average over the labelled positions only: the other positions carry no label (mask them with `where`).":
            lambda z, w, y: F.binary_cross_entropy_with_logits(z, y),
        "a mean, not a sum, over the labelled positions.":
            lambda z, w, y: F.binary_cross_entropy_with_logits(z[w], y[w], reduction="sum"),
        "one mean over every label of the batch, not a mean per row then over rows (a row with more steps has more "
        "labels, and each label counts once).": per_row,
        "the sign: a right step (label 1) must lower the loss as its logit grows; use y log sigma(z) + (1 - y) "
        "log sigma(-z), with the minus in front.":
            lambda z, w, y: -F.binary_cross_entropy_with_logits(z[w], y[w]),
        "the labels are swapped: label 1 means the step is right, and its term is -log sigma(z).":
            lambda z, w, y: F.binary_cross_entropy_with_logits(z[w], 1 - y[w]),
    }
    return run_check("verifier_loss", fn, verifier_loss, cases, mistakes, grad_args={0: "logits"},
                     nonfinite_hint="log(sigmoid(z)) is log 0 = -inf for z far below 0: use F.logsigmoid(z) and "
                                    "F.logsigmoid(-z), or F.binary_cross_entropy_with_logits.")
