"""exercises/part4_thinking.py: notebook 19's check accepts a right RFT loss written differently, falls back on a
stub and rejects plausible mistakes (values and gradients)."""
import torch

from minirlhf import exercises as ex
from conftest import assert_check_behaves


def right_rft_loss(logits, tokens, prompt_lengths, rewards):       # written differently: gather, then select
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
    t = torch.arange(1, tokens.size(1))
    mask = (t[None] >= prompt_lengths[:, None]) & (tokens[:, 1:] != 0) & (rewards[:, None] >= 1)
    return -logp[mask].sum() / max(int(mask.sum()), 1)


def test_rft_loss_check(capsys):
    def all_rows(lo, tok, p, r):
        return right_rft_loss(lo, tok, p, torch.ones_like(r))

    def with_prompt(lo, tok, p, r):
        return right_rft_loss(lo, tok, torch.ones_like(p), r)

    def unshifted(lo, tok, p, r):
        return right_rft_loss(lo, tok, p - 1, r)

    def nan_when_empty(lo, tok, p, r):
        logp = torch.log_softmax(lo[:, :-1], -1).gather(-1, tok[:, 1:, None]).squeeze(-1)
        t = torch.arange(1, tok.size(1))
        mask = (t[None] >= p[:, None]) & (tok[:, 1:] != 0) & (r[:, None] >= 1)
        return -logp[mask].mean()

    def detached(lo, tok, p, r):
        return right_rft_loss(lo.detach(), tok, p, r)

    def python_float(lo, tok, p, r):
        return right_rft_loss(lo, tok, p, r).item()

    assert_check_behaves(ex.check_rft_loss, [right_rft_loss], [
        (all_rows, "verified rows"),
        (with_prompt, "prompt is counted"),
        (unshifted, "."),
        (nan_when_empty, "no verified row|nan"),
        (detached, "gradient"),
        (python_float, "tensor"),
    ], capsys)


def right_verifier_loss(logits, where, labels):              # written differently: logsigmoid by hand
    z, y = logits[where], labels[where]
    return -(y * torch.nn.functional.logsigmoid(z) + (1 - y) * torch.nn.functional.logsigmoid(-z)).sum() / z.numel()


def test_verifier_loss_check(capsys):
    def naive(z, w, y):                                        # log(sigmoid) overflows at the confident logits
        p = torch.sigmoid(z[w])
        return -(y[w] * torch.log(p) + (1 - y[w]) * torch.log(1 - p)).mean()

    def every_position(z, w, y):
        return torch.nn.functional.binary_cross_entropy_with_logits(z, y)

    def per_row(z, w, y):
        per = torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none") * w
        return (per.sum(1) / w.sum(1)).mean()

    def swapped(z, w, y):
        return right_verifier_loss(z, w, 1 - y)

    def detached(z, w, y):
        return right_verifier_loss(z.detach(), w, y)

    def python_float(z, w, y):
        return right_verifier_loss(z, w, y).item()

    assert_check_behaves(ex.check_verifier_loss, [right_verifier_loss], [
        (naive, "logsigmoid"),
        (every_position, "labelled positions only"),
        (per_row, "per row"),
        (swapped, "swapped"),
        (detached, "gradient"),
        (python_float, "tensor"),
    ], capsys)
