"""Where TRL happens to be installed (it is not a dependency of the course): the package's DPO loss and its TRL
metrics equal TRL's own code on the same per-token log-probabilities. Skipped otherwise.

TRL 1.x computes the DPO loss inside DPOTrainer._compute_loss; it is called here on a stand-in trainer and model
that hand it fixed per-token log-probs, so the comparison runs TRL's arithmetic without a Hugging Face model."""
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

trl = pytest.importorskip("trl", reason="TRL is not installed (not a course dependency); the parity test needs it")

from minirlhf.dpo import DPOConfig, dpo_metrics  # noqa: E402
from minirlhf.losses import dpo_loss  # noqa: E402


class _Model(torch.nn.Module):
    """Returns given per-token log-probs, as TRL's fused LM head would (B, T - 1)."""

    def __init__(self, per_token):
        super().__init__()
        self.per_token = per_token

    def forward(self, **kwargs):
        shape = self.per_token.shape
        return SimpleNamespace(log_probs=self.per_token, entropy=torch.zeros(shape), mean_logits=torch.zeros(shape),
                               is_top1=torch.zeros(shape, dtype=torch.bool))


def _trl_dpo(per_token, ref_logps, completion_mask, beta):
    accelerator = SimpleNamespace(device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x)
    trainer = SimpleNamespace(model=SimpleNamespace(training=True), accelerator=accelerator, aux_loss_enabled=False,
                              ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl", use_weighting=False,
                              loss_types=["sigmoid"], loss_weights=[1.0], beta=beta, label_smoothing=0.0,
                              _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1)
    inputs = {"input_ids": torch.ones(completion_mask.shape, dtype=torch.long), "attention_mask": completion_mask.clone(),
              "completion_mask": completion_mask, "ref_chosen_logps": ref_logps[:3], "ref_rejected_logps": ref_logps[3:]}
    loss = trl.DPOTrainer._compute_loss(trainer, _Model(per_token), inputs, return_outputs=False)
    return loss, {k: v[-1] for k, v in trainer._metrics["train"].items()}


def test_dpo_loss_and_metrics_equal_trls_on_the_same_logprobs():
    g = torch.Generator().manual_seed(0)
    B, T, beta = 6, 12, 0.1                       # rows: 3 chosen then 3 rejected, as TRL batches them
    completion_mask = torch.zeros(B, T, dtype=torch.long)
    for b, start in enumerate([3, 5, 2, 4, 6, 3]):
        completion_mask[b, start:T - b % 3] = 1   # ragged completions
    per_token = -torch.rand(B, T - 1, generator=g) * 3 * completion_mask[:, 1:]
    ref_per_token = -torch.rand(B, T - 1, generator=g) * 3 * completion_mask[:, 1:]
    logps, ref_logps = per_token.sum(1), ref_per_token.sum(1)
    trl_loss, trl_metrics = _trl_dpo(per_token, ref_logps, completion_mask, beta)     # reference precomputed, as TRL allows
    ours = dpo_loss(logps[:3], logps[3:], ref_logps[:3], ref_logps[3:], beta)
    assert float(ours) == pytest.approx(float(trl_loss), abs=1e-6)
    metrics = dpo_metrics(DPOConfig(beta=beta), logps[:3], logps[3:], ref_logps[:3], ref_logps[3:], ours)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"):
        assert metrics[key] == pytest.approx(trl_metrics[key], abs=1e-6), key
