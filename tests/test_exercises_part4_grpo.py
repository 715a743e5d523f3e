"""exercises/part4_grpo.py: notebook 15's checks accept right answers written differently, fall back on a stub and
reject plausible mistakes (values, types and, for the loss aggregation, gradients)."""
import torch

from minirlhf import exercises as ex
from conftest import assert_check_behaves


def right_advantages(rewards, method):            # written differently: a loop over groups
    out = torch.empty_like(rewards)
    for p, r in enumerate(rewards):
        G = len(r)
        if method == "rloo":
            out[p] = r - (r.sum() - r) / (G - 1)
        else:
            c = r - r.mean()
            out[p] = c / (((c ** 2).mean()).sqrt() + 1e-4) if method == "grpo" else c
    return out


def test_group_advantages_check(capsys):
    def nan_for_equal_groups(r, m):
        c = r - r.mean(1, keepdim=True)
        return c / r.std(1, correction=0, keepdim=True) if m == "grpo" else right_advantages(r, m)

    def unbiased(r, m):
        c = r - r.mean(1, keepdim=True)
        return c / (r.std(1, keepdim=True) + 1e-4) if m == "grpo" else right_advantages(r, m)

    def rloo_over_g(r, m):
        return r - (r.sum(1, keepdim=True) - r) / r.size(1) if m == "rloo" else right_advantages(r, m)

    def dr_with_std(r, m):
        return right_advantages(r, "grpo" if m == "dr_grpo" else m)

    assert_check_behaves(ex.check_group_advantages, [right_advantages], [
        (nan_for_equal_groups, "1e-4"),
        (unbiased, "population std"),
        (rloo_over_g, "G - 1"),
        (dr_with_std, "does not divide by the std"),
        (lambda r, m: right_advantages(r, m).tolist(), "tensor"),
    ], capsys)


def right_aggregation(per_token, mask, loss_type, max_completion_length):   # written differently: per row
    rows = [per_token[b][mask[b]] for b in range(per_token.size(0))]
    if loss_type == "grpo":
        return torch.stack([r.mean() if len(r) else r.sum() for r in rows]).mean()
    total = torch.cat(rows).sum()
    return total / int(mask.sum()) if loss_type == "dapo" else total / (per_token.size(0) * max_completion_length)


def test_loss_aggregation_check(capsys):
    def unmasked(x, m, t, L):
        return right_aggregation(x, torch.ones_like(m), t, L)

    def grpo_as_token_mean(x, m, t, L):
        return right_aggregation(x, m, "dapo" if t == "grpo" else t, L)

    def dr_grpo_batch_width(x, m, t, L):
        return right_aggregation(x, m, t, x.size(1) if t == "dr_grpo" else L)

    def right_value_no_gradient(x, m, t, L):
        return right_aggregation(x.detach(), m, t, L)

    assert_check_behaves(ex.check_loss_aggregation, [right_aggregation], [
        (unmasked, "padding is counted"),
        (grpo_as_token_mean, "per-sequence mean"),
        (dr_grpo_batch_width, "width of this batch"),
        (right_value_no_gradient, "gradient"),
        (lambda x, m, t, L: right_aggregation(x, m, t, L).item(), "tensor"),
    ], capsys)
