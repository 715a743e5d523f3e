"""rl.py: the RLHF reward, the KL controllers, lr annealing and the NaN guard shared by the RL trainers."""

import pytest
import torch

from minirlhf import ppo, rl
from minirlhf.ppo import PPOConfig, train_ppo
from minirlhf.reinforce import train_reinforce
from minirlhf.rl import AdaptiveKLController, FixedKLController, rlhf_rewards
from minirlhf.tasks import reviews
from helpers import tiny_config, tiny_models, tiny_reinforce_config


# ---------------------------------------------------------------- rewards, value loss
def test_rlhf_rewards_hand_values():
    score = torch.tensor([2.0, -1.0])
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -3.0, 9.9]])        # 9.9: garbage on padding
    logp_ref = torch.tensor([[-2.0, -2.0, -1.5], [-0.5, -1.0, 9.9]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    finished = torch.tensor([True, False])
    got = rlhf_rewards(score, logp, logp_ref, mask, 0.1, finished, no_eos_penalty=1.0)
    # row 0: -0.1 * [1, 0, 1], + 2 at t = 2; row 1: -0.1 * [-0.5, -2], + (-1 - 1) at t = 1, padding 0
    want = torch.tensor([[-0.1, 0.0, -0.1 + 2.0], [0.05, 0.2 - 2.0, 0.0]])
    torch.testing.assert_close(got, want)
    # summed over a response: score - penalty - beta * sequence log-ratio
    torch.testing.assert_close(got.sum(1), score - torch.tensor([0.0, 1.0]) - 0.1 * ((logp - logp_ref) * mask).sum(1))
    # beta 0, everything finished: the score alone, at the last real token
    torch.testing.assert_close(rlhf_rewards(score, logp, logp_ref, mask, 0.0, torch.tensor([True, True])),
                               torch.tensor([[0.0, 0.0, 2.0], [0.0, -1.0, 0.0]]))


# ---------------------------------------------------------------- KL controllers
def test_kl_controllers():
    fixed = FixedKLController(0.05)
    assert fixed.update(100.0, 64) == 0.05 and fixed.beta == 0.05
    c = AdaptiveKLController(0.2, target=6.0, horizon=10_000)
    assert c.update(6.0, 64) == pytest.approx(0.2)                                  # on target: unchanged
    assert c.update(9.0, 64) == pytest.approx(0.2 * (1 + 0.2 * 64 / 10_000))         # error 0.5, clipped to 0.2
    c = AdaptiveKLController(0.2, target=6.0, horizon=100)
    assert c.update(6.6, 10) == pytest.approx(0.2 * (1 + 0.1 * 0.1))                 # error 0.1, not clipped
    assert AdaptiveKLController(0.2, 6.0, 100).update(0.0, 10) == pytest.approx(0.2 * (1 - 0.2 * 0.1))
    with pytest.raises(ValueError):
        AdaptiveKLController(0.2, target=0.0, horizon=10)
    assert isinstance(PPOConfig().kl_controller(), FixedKLController)
    assert isinstance(PPOConfig(target_kl=3.0).kl_controller(), AdaptiveKLController)


def test_learning_rate_anneals_linearly_to_zero():
    policy, _, _ = tiny_models()
    optimizer = torch.optim.SGD(policy.parameters(), lr=1.0)
    config = tiny_config(iterations=4, lr=0.2)
    lrs = []
    for it in range(4):
        rl.set_lr(optimizer, rl.annealed_lr(config.lr, it, config.iterations, config.anneal_lr))
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.2, 0.15, 0.1, 0.05])
    rl.set_lr(optimizer, rl.annealed_lr(0.2, 3, 4, anneal=False))
    assert optimizer.param_groups[0]["lr"] == 0.2


class NaNAfter(torch.nn.Module):
    """A reward model that turns NaN from iteration `after` on."""

    def __init__(self, rm, after):
        super().__init__()
        self.rm, self.after, self.calls = rm, after, 0

    def forward(self, tokens, mask):
        self.calls += 1
        r = self.rm(tokens, mask)
        return r * float("nan") if self.calls > self.after else r


def test_nan_guard_names_the_metric_and_the_iteration(monkeypatch):
    policy, reference, rm = tiny_models()
    with pytest.raises(FloatingPointError, match=r"RM score.*nan at iteration 1"):
        train_ppo(policy, reference, NaNAfter(rm, 1), reviews.prompts, tiny_config())
    with pytest.raises(FloatingPointError, match=r"RM score.*nan at iteration 2"):
        train_reinforce(*tiny_models()[:2], NaNAfter(rm, 2), reviews.prompts, tiny_reinforce_config())
    monkeypatch.setattr(ppo, "value_loss", lambda *a, **k: torch.tensor(float("nan")))
    with pytest.raises(FloatingPointError, match=r"PPO loss became nan at iteration 0"):
        train_ppo(*tiny_models(), reviews.prompts, tiny_config())
