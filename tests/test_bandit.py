"""The bandit of notebook 01 and PPO's clipped loss: hand values, statistics with fixed seeds."""
import math

import pytest
import torch

from minirlhf import bandit as bd
from minirlhf.losses import ppo_clip_loss, reinforce_loss

MEANS = [5.0, 6.0, 7.0, 6.5, 5.5]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def unclipped_surrogate(logprobs, old_logprobs, advantages):
    return -(torch.exp(logprobs - old_logprobs.detach()) * advantages.detach()).mean()


# ---------------------------------------------------------------- the bandit and the policy
def test_bandit_rewards_have_the_right_means_and_std():
    bandit = bd.GaussianBandit(MEANS, std=1.0, generator=gen(0))
    assert bandit.n_arms == 5 and bandit.best_arm == 2 and bandit.best_mean == 7.0
    rewards = bandit.pull(torch.arange(5).repeat_interleave(20000)).view(5, 20000)
    assert torch.allclose(rewards.mean(1), torch.tensor(MEANS), atol=0.03)
    assert torch.allclose(rewards.std(1), torch.ones(5), atol=0.03)
    assert bd.GaussianBandit(MEANS, std=0.0).pull(torch.tensor([4, 0])).tolist() == [5.5, 5.0]


def test_bandit_is_reproducible_and_validates_input():
    a = bd.GaussianBandit(MEANS, generator=gen(3)).pull(torch.tensor([0, 1, 2]))
    b = bd.GaussianBandit(MEANS, generator=gen(3)).pull(torch.tensor([0, 1, 2]))
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        bd.GaussianBandit(MEANS).pull(torch.tensor([5]))
    with pytest.raises(ValueError):
        bd.GaussianBandit([1.0])
    with pytest.raises(ValueError):
        bd.GaussianBandit(MEANS, std=-1.0)
    assert bd.GaussianBandit(MEANS).expected_reward(torch.full((5,), 0.2)) == pytest.approx(6.0)


def test_softmax_policy_is_uniform_and_its_score_is_onehot_minus_pi():
    policy = bd.SoftmaxPolicy(4)
    assert torch.allclose(policy.probs(), torch.full((4,), 0.25))
    policy = bd.SoftmaxPolicy(4, logits=torch.tensor([1.0, 0.0, -1.0, 0.5]))
    policy.log_prob(torch.tensor([2])).sum().backward()
    expected = torch.nn.functional.one_hot(torch.tensor(2), 4) - policy.probs().detach()
    assert torch.allclose(policy.logits.grad, expected, atol=1e-6)
    counts = torch.bincount(policy.sample(20000, gen(0)), minlength=4) / 20000
    assert torch.allclose(counts, policy.probs().detach(), atol=0.015)


def test_kl_categorical_hand_value():
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.25, 0.75])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert bd.kl_categorical(p.log(), q.log()) == pytest.approx(expected, rel=1e-5)
    assert bd.kl_categorical(p.log(), p.log()) == 0.0


# ---------------------------------------------------------------- REINFORCE
def test_gradient_estimates_are_unbiased_with_leave_one_out_and_shrunk_by_the_plain_mean():
    bandit = bd.GaussianBandit(MEANS, generator=gen(7))
    policy = bd.SoftmaxPolicy(5, logits=torch.tensor([0.3, -0.2, 0.0, 0.1, -0.4]))
    exact = bd.exact_policy_gradient(bandit, policy)
    p = policy.probs().detach()
    assert torch.allclose(exact, p * (bandit.means - (p * bandit.means).sum()))
    est = {k: bd.gradient_estimates(bandit, policy, batch_size=8, n_batches=600, baseline=k, generator=gen(8))
           for k in ("none", "leave_one_out", "mean")}
    # the mean of 600 estimates is within ~4 standard errors of the exact gradient ...
    for k, scale in (("none", 1.0), ("leave_one_out", 1.0), ("mean", 7 / 8)):
        g = est[k]
        se = (g.var(0) / g.size(0)).sqrt()
        # ... and the plain batch mean, which includes the sample itself, scales the gradient by (B - 1) / B
        assert ((g.mean(0) - scale * exact).abs() < 4 * se + 1e-3).all(), k
    assert bd.total_variance(est["none"]) > 8 * bd.total_variance(est["leave_one_out"])
    assert torch.equal(policy.logits.detach(), torch.tensor([0.3, -0.2, 0.0, 0.1, -0.4]))  # not changed


def test_reinforce_with_a_baseline_finds_the_best_arm():
    for seed in range(3):
        bandit = bd.GaussianBandit(MEANS, generator=gen(seed))
        h = bd.train_bandit(bandit, steps=150, batch_size=8, lr=0.2, baseline="leave_one_out", generator=gen(10 + seed))
        assert len(h["expected_reward"]) == 150 and len(h["mean_reward"]) == 150
        assert h["expected_reward"][0] == pytest.approx(6.0)
        assert h["probs"].argmax().item() == 2 and h["probs"][2] > 0.9
        assert bandit.expected_reward(h["probs"]) > 6.9
        assert torch.allclose(h["probs"].sum(), torch.tensor(1.0))


def test_train_bandit_uses_the_given_loss_and_validates():
    calls = []

    def loss_fn(logprobs, returns, baseline):
        calls.append(baseline)
        return reinforce_loss(logprobs, returns, baseline)

    bd.train_bandit(bd.GaussianBandit(MEANS), steps=3, batch_size=4, lr=0.1, baseline="none", loss_fn=loss_fn)
    assert all(torch.equal(b, torch.zeros(4)) for b in calls) and len(calls) == 3
    with pytest.raises(ValueError):
        bd.train_bandit(bd.GaussianBandit(MEANS), steps=0, batch_size=4, lr=0.1)


# ---------------------------------------------------------------- PPO's clipped loss
def test_ppo_clip_loss_hand_values_both_signs_inside_and_outside():
    ratios = torch.tensor([1.1, 1.5, 0.5, 1.5, 0.5, 0.9])
    adv = torch.tensor([2.0, 1.0, -1.0, -1.0, 1.0, -2.0])
    # min(r A, clip(r) A): inside; A>0 clipped at 1.2; A<0 clipped at 0.8; A<0 r high (unclipped side);
    # A>0 r low (unclipped side); inside
    objective = [2.2, 1.2, -0.8, -1.5, 0.5, -1.8]
    logprobs = torch.log(ratios).requires_grad_(True)
    old = torch.zeros(6, requires_grad=True)
    advantages = adv.clone().requires_grad_(True)
    loss = ppo_clip_loss(logprobs, old, advantages, clip_eps=0.2)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(-sum(objective) / 6, rel=1e-6)
    loss.backward()
    # d/dlogprob of r*A is r*A; zero where the clipped branch is the min
    expected_grad = -torch.tensor([2.2, 0.0, 0.0, -1.5, 0.5, -1.8]) / 6
    assert torch.allclose(logprobs.grad, expected_grad, atol=1e-6)
    assert logprobs.grad[1] == 0 and logprobs.grad[2] == 0
    assert old.grad is None and advantages.grad is None  # constants


def test_ppo_clip_loss_at_ratio_one_matches_reinforce_and_eps_matters():
    g = gen(0)
    lp = torch.randn(10, generator=g)
    adv = torch.randn(10, generator=g)
    a, b = lp.clone().requires_grad_(True), lp.clone().requires_grad_(True)
    ppo_clip_loss(a, lp, adv).backward()
    reinforce_loss(b, adv).backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-6)
    assert ppo_clip_loss(lp, lp, adv).item() == pytest.approx(-adv.mean().item(), rel=1e-5)
    r = torch.log(torch.tensor([1.3]))
    assert ppo_clip_loss(r, torch.zeros(1), torch.ones(1), clip_eps=0.5).item() == pytest.approx(-1.3)
    assert ppo_clip_loss(r, torch.zeros(1), torch.ones(1), clip_eps=0.1).item() == pytest.approx(-1.1)
    # (B, T) shapes work too: the mean over every element
    assert ppo_clip_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3)).item() == pytest.approx(-1.0)


def test_clipping_keeps_a_reused_batch_close_to_the_old_policy():
    bandit = bd.GaussianBandit(MEANS)
    kls = {}
    for name, fn in (("free", unclipped_surrogate), ("clip", ppo_clip_loss)):
        policy, g = bd.SoftmaxPolicy(5), gen(0)
        actions = policy.sample(8, g)
        rewards = bd.GaussianBandit(MEANS, generator=g).pull(actions)
        h = bd.reuse_batch(bandit, policy, actions, rewards, inner_steps=30, lr=1.0, loss_fn=fn)
        assert len(h["kl"]) == 31 and len(h["loss"]) == 30 and h["kl"][0] == 0.0 and h["ratio_max"][0] == 1.0
        kls[name] = h["kl"][-1]
        if name == "free":
            assert h["ratio_max"][-1] > 4.0 and policy.probs().max() > 0.9
        else:
            assert h["ratio_max"][-1] < 2.0 and h["ratio_min"][-1] > 0.5
    assert kls["free"] > 1.0 and kls["clip"] < 0.1
