"""rl.py: what the RL trainers share: the RLHF reward, the KL controllers, per-iteration metrics and the
history, lr annealing and the NaN guard."""
import math

import pytest
import torch

from minirlhf import ppo, rl
from minirlhf.ppo import PPOConfig, train_ppo
from minirlhf.reinforce import train_reinforce
from minirlhf.generation import Generation
from minirlhf.rl import AdaptiveKLController, FixedKLController, rlhf_rewards
from minirlhf.sampling import Rollout
from minirlhf.tasks import reviews
from helpers import tiny_config, tiny_models, tiny_reinforce_config


# ---------------------------------------------------------------- the RLHF reward
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
    assert isinstance(rl.kl_controller(0.1, None, 100), FixedKLController)
    adaptive = rl.kl_controller(0.1, 2.0, 100)
    assert isinstance(adaptive, AdaptiveKLController) and (adaptive.beta, adaptive.target, adaptive.horizon) == (0.1, 2.0, 100)


# ---------------------------------------------------------------- per-iteration metrics and the history
def hand_rollout():
    """Two responses of 3 and 2 tokens after a 1-token prompt; the second never emitted EOS."""
    tokens = torch.tensor([[1, 31, 32, 2], [1, 33, 34, 0]])
    gen = Generation(tokens, tokens != 0, 1, torch.tensor([[True, True, True], [True, True, False]]),
                     torch.tensor([True, False]))
    ref_logprobs = torch.tensor([[-2.0, -2.0, -1.5], [-0.5, -1.0, 0.0]])
    return Rollout(["p0", "p1"], gen, torch.tensor([1.0, 2.0]), ref_logprobs)


def test_sequence_metrics_hand_values():
    r = hand_rollout()
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -3.0, 9.9]])         # 9.9: garbage on padding
    m = rl.sequence_metrics(r, logp, beta=0.1, iteration=0)
    # summed k1 per sequence: 1 + 0 + 1 = 2 and -0.5 - 2 = -2.5; k3 = e^x - 1 - x with x = logp_ref - logp
    k3 = [2 * math.exp(-1), (math.exp(0.5) - 1.5) + (math.exp(2) - 3)]
    assert m == pytest.approx({"proxy_reward": 1.5, "kl": -0.25, "kl_k3": sum(k3) / 2, "non_score_reward": 0.025,
                               "response_length": 2.5, "frac_finished": 0.5, "beta": 0.1})
    with pytest.raises(FloatingPointError, match="KL became inf at iteration 7"):
        rl.sequence_metrics(r, logp.masked_fill(r.mask, float("inf")), beta=0.1, iteration=7)


def test_end_iteration_keeps_lists_and_samples_and_the_meta_history_drops_timings():
    r, history = hand_rollout(), {"config": {"beta": 0.1}}
    for it in range(2):
        rl.end_iteration(history, {"proxy_reward": 0.123456 + it, "kl": 1.0, "t_update": 0.5}, r, ["ab", "cd"],
                         n_samples=1, gold_fn=lambda p, t: len(t) / 3, bar=None)
    assert history["proxy_reward"] == [0.123456, 1.123456] and history["t_update"] == [0.5, 0.5]
    assert history["samples"] == [[{"prompt": "p0", "response": "ab", "score": 1.0, "finished": True, "gold": 0.667}]] * 2
    meta = rl.rl_history_for_meta(history)
    assert meta == {"proxy_reward": [0.1235, 1.1235], "kl": [1.0, 1.0], "samples": history["samples"],
                    "config": {"beta": 0.1}}


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
