"""logprobs.py: per-token and sequence log-probabilities, KL estimators, the last real token."""
import math

import pytest
import torch
import torch.nn.functional as F

from minirlhf.generation import generate
from minirlhf.logprobs import (gather_last, kl_k1, kl_k3, last_token_index, logprobs_from_logits, response_logprobs,
                               text_logprobs)
from minirlhf.tokenizer import PAD_ID, TOKENIZER
from helpers import tiny_model, tiny_models


def test_text_logprobs_sum_the_token_logprobs_and_ignore_padding():
    policy = tiny_model(context_length=64).eval()
    prompt, response = "review: soup\n", "the soup was cold."
    ids = TOKENIZER.encode(prompt, bos=True) + TOKENIZER.encode(response, eos=True)
    with torch.no_grad():
        logits = policy(torch.tensor([ids]))[0, :-1].double()
    logits[:, TOKENIZER.pad_id] = float("-inf")
    logp = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    start = len(TOKENIZER.encode(prompt, bos=True)) - 1
    expected = logp[start:].sum().item()
    got = text_logprobs(policy, [prompt], [response])
    assert got.dtype == torch.float64 and got.item() == pytest.approx(expected, abs=1e-6)
    # in a batch with a longer row, padded, it does not change
    batch = text_logprobs(policy, [prompt, "review: fries\n"], [response, "the fries were warm and i loved it."])
    assert batch[0].item() == pytest.approx(expected, abs=1e-5)
    # an unfinished response does not count the EOS it never wrote
    unfinished = text_logprobs(policy, [prompt], [response], finished=torch.tensor([False]))
    assert unfinished.item() == pytest.approx(logp[start:-1].sum().item(), abs=1e-6)


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


# ---------------------------------------------------------------- the last real token
def test_last_token_index_for_left_right_and_no_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0],      # right-padded
                         [0, 0, 1, 1, 1],      # left-padded
                         [1, 1, 1, 1, 1],      # no padding
                         [0, 1, 1, 0, 0]])     # padded on both sides
    assert last_token_index(mask).tolist() == [2, 4, 4, 2]
    values = torch.arange(20.0).view(4, 5)
    assert gather_last(values, mask.bool()).tolist() == [2.0, 9.0, 14.0, 17.0]
    with pytest.raises(ValueError, match="no real token"):
        last_token_index(torch.tensor([[0, 0, 0]]))
