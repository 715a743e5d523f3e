"""PPO for RLHF: GAE, whitening, log-probs, KL estimators, rewards, value loss, KL controllers, the PPO and
REINFORCE loops (tiny random models, seconds), the NaN guard, and the notebook-10 exercise checks."""
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_check_behaves
from minirlhf import exercises as ex
from minirlhf import losses, ppo
from minirlhf.advantages import gae, masked_mean, masked_var, whiten
from minirlhf.generation import generate
from minirlhf.model import GPT, GPTConfig
from minirlhf.ppo import (ActorCritic, AdaptiveKLController, FixedKLController, PPOConfig, kl_k1, kl_k3,
                          logprobs_from_logits, policy_gradient_variance, response_logprobs, rlhf_rewards,
                          sequence_baseline, train_ppo, train_reinforce, value_loss)
from minirlhf.reward import RewardModel
from minirlhf.tasks import reviews
from minirlhf.tokenizer import PAD_ID, TOKENIZER

TINY = dict(vocab_size=TOKENIZER.vocab_size, context_length=48, d_model=32, n_layers=1, n_heads=2)


def tiny_models(seed=0):
    """(policy, reference = a copy of it, reward model), all tiny and random."""
    torch.manual_seed(seed)
    policy, rm = GPT(GPTConfig(**TINY)), RewardModel(GPTConfig(**TINY))
    reference = GPT(GPTConfig(**TINY))
    reference.load_state_dict(policy.state_dict())
    return policy, reference, rm.eval()


def tiny_config(**overrides):
    return PPOConfig(**{**dict(iterations=3, batch_size=8, minibatches=2, max_new_tokens=12, seed=0), **overrides})


# ---------------------------------------------------------------- GAE and whitening
def naive_gae(rewards, values, mask, gamma, lam):
    """Row by row, over the real tokens only, straight from the definitions."""
    adv, ret = torch.zeros_like(rewards), torch.zeros_like(rewards)
    for b in range(rewards.size(0)):
        n = int(mask[b].sum())
        r, v = rewards[b, :n].tolist(), values[b, :n].tolist() + [0.0]   # V = 0 after the last real token
        a = 0.0
        for t in reversed(range(n)):
            delta = r[t] + gamma * v[t + 1] - v[t]
            a = delta + gamma * lam * a
            adv[b, t], ret[b, t] = a, a + v[t]
    return adv, ret


def padded_batch(seed=0, B=4, T=7):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([T, 1, 4, 6])[:B]
    mask = torch.arange(T)[None, :] < lengths[:, None]
    return torch.randn(B, T, generator=g), torch.randn(B, T, generator=g), mask


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (1.0, 0.0), (0.0, 0.95), (0.5, 0.5)])
def test_gae_matches_a_naive_per_row_loop_with_padding(gamma, lam):
    rewards, values, mask = padded_batch()
    adv, ret = gae(rewards, values, mask, gamma, lam)
    want_adv, want_ret = naive_gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(adv, want_adv)
    torch.testing.assert_close(ret, want_ret)
    assert (adv[~mask] == 0).all() and (ret[~mask] == 0).all()


def test_gae_edge_cases_lam_1_is_monte_carlo_and_lam_0_is_td():
    rewards, values, mask = padded_batch(1)
    m = mask.float()
    # lam = 1, gamma = 1: A_t = (sum of rewards from t to the end) - V_t
    future = (rewards * m).flip(1).cumsum(1).flip(1)
    torch.testing.assert_close(gae(rewards, values, mask, 1.0, 1.0)[0], (future - values) * m)
    # lam = 0: A_t = r_t + gamma V_{t+1} - V_t, V = 0 after the last real token
    next_v = torch.cat([values[:, 1:] * m[:, 1:], torch.zeros(4, 1)], 1)
    torch.testing.assert_close(gae(rewards, values, mask, 0.9, 0.0)[0], (rewards + 0.9 * next_v - values) * m)
    # gamma = 0: only the immediate reward counts, whatever lam
    torch.testing.assert_close(gae(rewards, values, mask, 0.0, 0.95)[0], (rewards - values) * m)


def test_gae_hand_values_score_at_the_end():
    # one response of 3 tokens, reward 1 at the end, V = 0: every advantage is lam^(T-1-t)
    adv, ret = gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool), 1.0, 0.5)
    torch.testing.assert_close(adv, torch.tensor([[0.25, 0.5, 1.0]]))
    torch.testing.assert_close(ret, adv)


def test_gae_ignores_whatever_the_padding_holds():
    rewards, values, mask = padded_batch(2)
    junk_r, junk_v = rewards.clone(), values.clone()
    junk_r[~mask], junk_v[~mask] = 1e6, -1e6
    for a, b in zip(gae(rewards, values, mask), gae(junk_r, junk_v, mask)):
        torch.testing.assert_close(a, b)


def test_gae_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        gae(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3, dtype=torch.bool))


def test_whiten_over_the_mask_only():
    x, _, mask = padded_batch(3)
    x = x * 3 + 5
    x[~mask] = 1e4                                     # padding must not move the statistics
    w = whiten(x, mask)
    real = w[mask]
    assert real.mean().abs() < 1e-5 and real.std().item() == pytest.approx(1.0, abs=1e-4)
    assert (w[~mask] == 0).all()
    kept = whiten(x, mask, shift_mean=False)[mask]
    assert kept.mean().item() == pytest.approx(x[mask].mean().item(), rel=1e-4)      # the mean stays, the spread is 1
    assert kept.std().item() == pytest.approx(1.0, abs=1e-4)
    assert masked_mean(x, mask).item() == pytest.approx(x[mask].mean().item(), rel=1e-6)
    assert masked_var(x, mask).item() == pytest.approx(x[mask].var().item(), rel=1e-5)


# ---------------------------------------------------------------- log-probabilities
def naive_response_logprobs(model, gen, temperature):
    """Each row alone, unpadded: log softmax(logits / T with PAD banned) of each response token."""
    P = gen.prompt_length
    out = torch.zeros(gen.response_mask.shape)
    for b in range(gen.tokens.size(0)):
        real = gen.tokens[b][gen.attention_mask[b]]
        n_prompt = int(gen.attention_mask[b, :P].sum())
        logits = model(real[None, :-1])[0] / temperature
        logits[:, PAD_ID] = float("-inf")
        lp = F.log_softmax(logits, -1)
        for t in range(len(real) - n_prompt):
            out[b, t] = lp[n_prompt - 1 + t, real[n_prompt + t]]
    return out


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_response_logprobs_match_an_unpadded_per_row_computation(temperature):
    policy, _, _ = tiny_models()
    prompts = [TOKENIZER.encode(p, bos=True) for p in ["review: soup\n", "review: fries\n", "review: staff\n"]]
    gen = generate(policy, prompts, 10, temperature=temperature, generator=torch.Generator().manual_seed(3))
    logp, entropy = response_logprobs(policy, gen.tokens, gen.attention_mask, gen.prompt_length, temperature)
    torch.testing.assert_close(logp, naive_response_logprobs(policy, gen, temperature), atol=1e-5, rtol=1e-5)
    assert (logp[~gen.response_mask] == 0).all() and (logp[gen.response_mask] < 0).all()
    real_entropy = entropy[gen.response_mask]
    assert (real_entropy > 0).all() and (real_entropy <= math.log(TOKENIZER.vocab_size - 1) + 1e-5).all()
    if temperature != 1.0:     # the temperature really enters
        other, _ = response_logprobs(policy, gen.tokens, gen.attention_mask, gen.prompt_length, 1.0)
        assert not torch.allclose(other, logp)


def test_logprobs_from_logits_entropy_and_gradients_are_finite_with_pad_targets_and_top_k():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 9, generator=g).requires_grad_(True)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    banned = logits.detach().clone()
    banned[..., PAD_ID] = float("-inf")
    targets = banned.argmax(-1).masked_fill(~mask, PAD_ID)     # sampled tokens are always inside the top k
    logp, ent = logprobs_from_logits(logits, targets, mask, temperature=1.0, top_k=3)
    assert torch.isfinite(logp).all() and torch.isfinite(ent).all()
    (logp.sum() + ent.sum()).backward()
    assert torch.isfinite(logits.grad).all()
    # entropy without top-k equals the categorical entropy with PAD banned
    _, ent = logprobs_from_logits(logits.detach(), targets, mask)
    want = torch.distributions.Categorical(logits=banned).entropy()
    torch.testing.assert_close(ent[mask], want[mask])


def test_actor_critic_one_forward_gives_the_policy_logits_and_zero_values_at_init():
    policy, _, _ = tiny_models()
    ac = ActorCritic(policy)
    tokens = torch.randint(3, TOKENIZER.vocab_size, (2, 9))
    logits, values = ac(tokens)
    torch.testing.assert_close(logits, policy(tokens))
    assert values.shape == (2, 9) and (values == 0).all()
    gen = generate(policy, [TOKENIZER.encode("review: soup\n", bos=True)] * 2, 8, generator=torch.Generator().manual_seed(0))
    lp, ent, v = ac.response_outputs(gen.tokens, gen.attention_mask, gen.prompt_length)
    want_lp, want_ent = response_logprobs(policy, gen.tokens, gen.attention_mask, gen.prompt_length)
    torch.testing.assert_close(lp, want_lp)
    torch.testing.assert_close(ent, want_ent)
    assert v.shape == lp.shape
    assert set(dict(ac.named_parameters())) == {f"policy.{n}" for n, _ in policy.named_parameters()} | {
        "value_head.linear.weight", "value_head.linear.bias"}


@pytest.mark.parametrize("critic", ["shared", "detached", "separate"])
def test_actor_critic_value_gradients_reach_the_policy_only_when_shared(critic):
    policy, _, _ = tiny_models()
    ac = ActorCritic(policy, critic)
    tokens = torch.randint(3, TOKENIZER.vocab_size, (2, 9))
    ac.value_head.linear.weight.data.normal_()          # a non-zero head, so values depend on the trunk
    _, values = ac(tokens)
    values.sum().backward()
    trunk_grad = policy.blocks[0].attn.qkv.weight.grad
    assert (trunk_grad is not None and trunk_grad.abs().sum() > 0) == (critic == "shared")
    assert ac.value_head.linear.weight.grad.abs().sum() > 0
    if critic == "separate":
        assert ac.critic_trunk.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
        assert ac.critic_trunk is not policy and torch.equal(ac.critic_trunk.tok_emb.weight, policy.tok_emb.weight)
    with pytest.raises(ValueError, match="critic"):
        ActorCritic(policy, "twin")


# ---------------------------------------------------------------- KL estimators
def test_kl_estimators_are_unbiased_and_k3_is_nonnegative():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(6, generator=g), 0)
    q = torch.softmax(torch.randn(6, generator=g), 0)
    exact = float((p * (p.log() - q.log())).sum())
    x = torch.multinomial(p, 400_000, replacement=True, generator=g)
    k1, k3 = kl_k1(p.log()[x], q.log()[x]), kl_k3(p.log()[x], q.log()[x])
    assert (k3 >= 0).all() and (k1 < 0).any()                 # k1 is negative on some samples, k3 never
    for k in (k1, k3):
        assert k.double().mean().item() == pytest.approx(exact, abs=4 * k.double().std().item() / 400_000 ** 0.5)
    # for close distributions k3 has (much) lower variance than k1
    q_close = torch.softmax(p.log() + 0.1 * torch.randn(6, generator=g), 0)
    assert kl_k3(p.log()[x], q_close.log()[x]).var() < 0.2 * kl_k1(p.log()[x], q_close.log()[x]).var()


def test_kl_estimators_hand_values_and_extremes():
    lp, lr = torch.tensor([-1.0, -2.0]), torch.tensor([-2.0, -1.0])
    torch.testing.assert_close(kl_k1(lp, lr), torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(kl_k3(lp, lr), torch.tensor([math.exp(-1) - 1 + 1, math.e - 1 - 1]))
    tiny = torch.tensor([1e-7, -1e-7, 0.0])
    assert (kl_k3(tiny, torch.zeros(3)) >= 0).all()            # expm1: no negative values from rounding
    assert kl_k3(torch.tensor([1e-4]), torch.zeros(1)).item() == pytest.approx(0.5e-8, rel=1e-3)
    extreme = kl_k3(torch.tensor([-50.0, 0.0, -1e-30]), torch.tensor([0.0, -80.0, -1e-30]))
    assert torch.isfinite(extreme).all() and (extreme >= 0).all()


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


def test_value_loss_hand_values_and_clipping():
    old = torch.tensor([[0.0, 0.0, 0.0]])
    ret = torch.tensor([[1.0, -1.0, 5.0]])
    mask = torch.tensor([[True, True, False]])
    v = torch.tensor([[0.5, 0.5, 0.0]], requires_grad=True)
    # t=0: unclipped (0.5-1)^2 = 0.25, clipped V=0.2: 0.64 -> max 0.64; t=1: 2.25 vs (0.2+1)^2 = 1.44 -> 2.25
    loss = value_loss(v, old, ret, mask, clip=0.2)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 2.25) / 2)
    loss.backward()
    # t=0 is clipped (gradient 0: it already moved 0.5 > 0.2 toward the target); t=1 is not: (0.5 + 1) / 2
    torch.testing.assert_close(v.grad, torch.tensor([[0.0, 0.75, 0.0]]))
    assert value_loss(v, old, ret, mask, clip=None).item() == pytest.approx(0.5 * (0.25 + 2.25) / 2)


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


# ---------------------------------------------------------------- the loops
HISTORY_KEYS = {"proxy_reward", "gold", "kl", "kl_k3", "approx_kl", "clip_frac", "ratio", "entropy", "value_loss",
                "policy_loss", "response_length", "beta", "frac_finished", "non_score_reward", "explained_variance",
                "t_generate", "t_score", "t_update", "samples"}


def test_train_ppo_end_to_end_tiny_is_finite_and_deterministic():
    config = tiny_config(target_kl=1.0, horizon=100)
    policy, reference, rm = tiny_models()
    before = [p.clone() for p in policy.parameters()]
    out, history = train_ppo(policy, reference, rm, reviews.prompts, config, gold_fn=reviews.gold_reward)
    assert out is policy and any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    assert HISTORY_KEYS <= set(history)
    for key in HISTORY_KEYS - {"samples"}:
        assert len(history[key]) == config.iterations, key
        assert all(math.isfinite(x) for x in history[key]), key
    assert history["kl"][0] == pytest.approx(0.0, abs=1e-5)           # policy == reference at the first rollout
    assert history["beta"][0] == config.beta and history["beta"][1] != config.beta
    assert all(0 <= x <= 1 for x in history["clip_frac"] + history["frac_finished"])
    assert len(history["samples"][0]) == 3 and {"prompt", "response", "score", "gold"} <= set(history["samples"][0][0])
    for p in reference.parameters():
        assert p.grad is None                                         # the reference is never trained
    # same seed, same models -> the same run
    _, again = train_ppo(*tiny_models(), reviews.prompts, config, gold_fn=reviews.gold_reward)
    assert again["proxy_reward"] == history["proxy_reward"] and again["kl"] == history["kl"]


@pytest.mark.parametrize("critic", ["shared", "detached"])
def test_train_ppo_runs_with_every_critic(critic):
    _, history = train_ppo(*tiny_models(), reviews.prompts, tiny_config(iterations=2, critic=critic, target_kl=2.0))
    assert all(math.isfinite(x) for x in history["value_loss"] + history["policy_loss"])


def test_learning_rate_anneals_linearly_to_zero():
    policy, _, _ = tiny_models()
    optimizer = torch.optim.SGD(policy.parameters(), lr=1.0)
    config = tiny_config(iterations=4, lr=0.2)
    lrs = []
    for it in range(4):
        ppo._set_lr(optimizer, config, it)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.2, 0.15, 0.1, 0.05])
    ppo._set_lr(optimizer, tiny_config(iterations=4, lr=0.2, anneal_lr=False), 3)
    assert optimizer.param_groups[0]["lr"] == 0.2


def test_train_ppo_takes_a_prompt_list():
    _, history = train_ppo(*tiny_models(), ["review: soup\n", "review: fries\n"], tiny_config(iterations=1))
    assert {s["prompt"] for s in history["samples"][0]} <= {"review: soup\n", "review: fries\n"}
    with pytest.raises(ValueError, match="divisible"):
        train_ppo(*tiny_models(), ["review: soup\n"], tiny_config(batch_size=6, minibatches=4))


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
        train_reinforce(*tiny_models()[:2], NaNAfter(rm, 2), reviews.prompts, tiny_config())
    monkeypatch.setattr(ppo, "value_loss", lambda *a, **k: torch.tensor(float("nan")))
    with pytest.raises(FloatingPointError, match=r"PPO loss became nan at iteration 0"):
        train_ppo(*tiny_models(), reviews.prompts, tiny_config())


def test_sequence_baselines_hand_values():
    g = torch.tensor([1.0, 2.0, 6.0])
    torch.testing.assert_close(sequence_baseline(g, "none"), torch.zeros(3))
    torch.testing.assert_close(sequence_baseline(g, "mean"), torch.full((3,), 3.0))
    torch.testing.assert_close(sequence_baseline(g, "leave_one_out"), torch.tensor([4.0, 3.5, 1.5]))
    with pytest.raises(ValueError, match="baseline"):
        sequence_baseline(g, "median")


def test_train_reinforce_end_to_end_tiny():
    policy, reference, rm = tiny_models()
    _, history = train_reinforce(policy, reference, rm, reviews.prompts, tiny_config(), baseline="leave_one_out",
                                 gold_fn=reviews.gold_reward)
    for key in ("proxy_reward", "gold", "kl", "loss", "grad_norm", "entropy", "t_generate", "t_update"):
        assert len(history[key]) == 3 and all(math.isfinite(x) for x in history[key]), key
    assert history["kl"][0] == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="baseline"):
        train_reinforce(policy, reference, rm, reviews.prompts, tiny_config(), baseline="median")


def test_policy_gradient_variance_a_baseline_removes_the_offset_noise():
    policy, reference, rm = tiny_models()

    class Offset(torch.nn.Module):      # rewards far from 0: without a baseline, every sample pushes its own way
        def forward(self, tokens, mask):
            return rm(tokens, mask) + 10.0

    before = [p.clone() for p in policy.parameters()]
    out = policy_gradient_variance(policy, reference, Offset(), reviews.prompts, tiny_config(), n_batches=4)
    assert set(out) == {"none", "mean", "leave_one_out"}
    assert all(p.grad is None for p in policy.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    assert out["mean"]["variance"] < 0.1 * out["none"]["variance"]
    # over the whole batch, leave-one-out = B / (B - 1) x the mean baseline: same direction, same SNR
    assert out["leave_one_out"]["snr"] == pytest.approx(out["mean"]["snr"], rel=1e-6)
    assert out["leave_one_out"]["variance"] == pytest.approx(out["mean"]["variance"] * (8 / 7) ** 2, rel=1e-5)


def test_evaluate_policy_reports_zero_kl_for_the_reference_itself():
    policy, reference, rm = tiny_models()
    out = ppo.evaluate_policy(policy, reference, rm, reviews.prompts(6), max_new_tokens=8, gold_fn=reviews.gold_reward)
    assert set(out) == {"proxy", "gold", "kl", "length", "finished"}
    assert out["kl"] == pytest.approx(0.0, abs=1e-5) and 1 <= out["length"] <= 8


# ---------------------------------------------------------------- exercise checks
def clip_no_min(lp, old, a, eps):
    return -(torch.exp(lp - old) * a).mean()


def clip_max(lp, old, a, eps):
    r = torch.exp(lp - old)
    return -torch.max(r * a, r.clamp(1 - eps, 1 + eps) * a).mean()


def clip_only_clipped(lp, old, a, eps):
    return -(torch.exp(lp - old).clamp(1 - eps, 1 + eps) * a).mean()


def clip_log_ratio(lp, old, a, eps):
    r = lp - old
    return -torch.min(r * a, r.clamp(1 - eps, 1 + eps) * a).mean()


def clip_inverted(lp, old, a, eps):
    r = torch.exp(old - lp)
    return -torch.min(r * a, r.clamp(1 - eps, 1 + eps) * a).mean()


def clip_sign(lp, old, a, eps):
    return -losses.ppo_clip_loss(lp, old, a, eps)


def clip_sum(lp, old, a, eps):
    r = torch.exp(lp - old.detach())
    return -torch.min(r * a.detach(), r.clamp(1 - eps, 1 + eps) * a.detach()).sum()


def clip_not_detached(lp, old, a, eps):
    r = torch.exp(lp - old)
    return -torch.min(r * a, r.clamp(1 - eps, 1 + eps) * a).mean()


def gae_forward_loop(r, v, m, gamma, lam):
    mf = m.float()
    a = torch.zeros_like(r)
    prev = torch.zeros_like(r[:, 0])
    for t in range(r.size(1)):   # wrong direction
        nxt_v = v[:, t + 1] * mf[:, t + 1] if t + 1 < r.size(1) else torch.zeros_like(prev)
        prev = (r[:, t] + gamma * nxt_v - v[:, t] + gamma * lam * prev) * mf[:, t]
        a[:, t] = prev
    return a, (a + v) * mf


def gae_unmasked(r, v, m, gamma, lam):
    return gae(r, v, torch.ones_like(m), gamma, lam)


def gae_masked_outputs_only(r, v, m, gamma, lam):
    a, ret = gae(r, v, torch.ones_like(m), gamma, lam)
    return a * m, ret * m


def gae_swapped(r, v, m, gamma, lam):
    return gae(r, v, m, lam, gamma)


def gae_no_lam(r, v, m, gamma, lam):
    return gae(r, v, m, gamma, 1.0)


def gae_returns_are_advantages(r, v, m, gamma, lam):
    a, _ = gae(r, v, m, gamma, lam)
    return a, a


def gae_no_bootstrap(r, v, m, gamma, lam):
    mf = m.float()
    delta = (r - v) * mf
    a, nxt = torch.zeros_like(r), torch.zeros_like(r[:, 0])
    for t in reversed(range(r.size(1))):
        nxt = (delta[:, t] + gamma * lam * nxt) * mf[:, t]
        a[:, t] = nxt
    return a, (a + v) * mf


def gae_discounted_returns(r, v, m, gamma, lam):
    a, _ = gae(r, v, m, gamma, lam)
    ret, running = torch.zeros_like(r), torch.zeros_like(r[:, 0])
    for t in reversed(range(r.size(1))):
        running = r[:, t] * m[:, t] + gamma * running
        ret[:, t] = running * m[:, t]
    return a, ret


def gae_returns_only(r, v, m, gamma, lam):
    return gae(r, v, m, gamma, lam)[0]


def rewards_last_column(s, lp, lr, m, beta, f, pen):
    out = -beta * (lp - lr) * m
    out[:, -1] += s - pen * (~f).float()
    return out


def rewards_first_token(s, lp, lr, m, beta, f, pen):
    out = -beta * (lp - lr) * m
    out[:, 0] += s - pen * (~f).float()
    return out


def rewards_kl_sign(s, lp, lr, m, beta, f, pen):
    return rlhf_rewards(s, lr, lp, m, beta, f, pen)


def rewards_kl_on_padding(s, lp, lr, m, beta, f, pen):
    out = -beta * (lp - lr)
    idx = m.sum(1) - 1
    out[torch.arange(len(s)), idx] += s - pen * (~f).float()
    return out


def rewards_no_penalty(s, lp, lr, m, beta, f, pen):
    return rlhf_rewards(s, lp, lr, m, beta, torch.ones_like(f), pen)


def rewards_penalty_replaces(s, lp, lr, m, beta, f, pen):
    return rlhf_rewards(torch.where(f, s, -pen * torch.ones_like(s)), lp, lr, m, beta, torch.ones_like(f), pen)


def rewards_after_last(s, lp, lr, m, beta, f, pen):
    out = -beta * (lp - lr) * m
    idx = m.sum(1).clamp(max=m.size(1) - 1)
    out[torch.arange(len(s)), idx] += s - pen * (~f).float()
    return out


def rewards_every_token(s, lp, lr, m, beta, f, pen):
    return -beta * (lp - lr) * m + (s - pen * (~f).float())[:, None] * m


def rewards_penalty_on_finished(s, lp, lr, m, beta, f, pen):
    return rlhf_rewards(s, lp, lr, m, beta, ~f, pen)


def rewards_no_beta(s, lp, lr, m, beta, f, pen):
    return rlhf_rewards(s, lp, lr, m, 1.0, f, pen)


CHECKS = [
    (ex.check_ppo_clip_loss, losses.ppo_clip_loss,
     [(clip_no_min, "nothing is clipped"), (clip_max, "max"), (clip_only_clipped, "only the clipped term"),
      (clip_log_ratio, "not exponentiated"), (clip_inverted, "upside down"), (clip_sign, "sign is flipped"),
      (clip_sum, "not the sum"), (clip_not_detached, "gradient flows into the old_logprobs")]),
    (ex.check_gae, gae,
     [(gae_forward_loop, "forward in time"), (gae_unmasked, "padding is not ignored"),
      (gae_masked_outputs_only, "bootstrapped from the value of the padding"), (gae_swapped, "swapped"),
      (gae_no_lam, "lam is missing"), (gae_returns_are_advantages, "returns are the advantages"),
      (gae_no_bootstrap, "no bootstrap"), (gae_discounted_returns, "discounted rewards"),
      (gae_returns_only, "must return a tuple")]),
    (ex.check_kl_penalty_rewards, rlhf_rewards,
     [(rewards_last_column, "last COLUMN"), (rewards_first_token, "first response token"),
      (rewards_kl_sign, "wrong sign"), (rewards_kl_on_padding, "also applied on the padding"),
      (rewards_no_penalty, "must lose no_eos_penalty"), (rewards_penalty_replaces, "REPLACED"),
      (rewards_no_beta, "beta is missing"), (rewards_after_last, "off by one"), (rewards_every_token, "every token"),
      (rewards_penalty_on_finished, "FINISHED")]),
]


@pytest.mark.parametrize("check,reference,wrongs", CHECKS, ids=[c[0].__name__ for c in CHECKS])
def test_checks_accept_reference_fall_back_on_stub_and_reject_mistakes(check, reference, wrongs, capsys):
    assert_check_behaves(check, reference, wrongs, capsys, reference=reference)

