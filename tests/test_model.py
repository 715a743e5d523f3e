""""""
import math

import pytest
import torch

from minirlhf.model import GPT, GPTConfig, KVCache, ScalarHead, num_params, training_flops_per_token

TINY = GPTConfig(vocab_size=57, context_length=16, d_model=32, n_layers=2, n_heads=4)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(TINY)


def random_ids(B, T, seed=0):
    return torch.randint(3, TINY.vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))


def test_shapes(model):
    idx = random_ids(3, 7)
    assert model(idx).shape == (3, 7, TINY.vocab_size)
    assert model.hidden_states(idx).shape == (3, 7, TINY.d_model)


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="positive"):
        GPTConfig(n_layers=0)
    with pytest.raises(ValueError, match="unknown"):
        GPTConfig.from_dict({"d_modle": 64})
    assert GPTConfig.from_dict(TINY.to_dict()) == TINY


def test_causal(model):
    idx = random_ids(2, 10)
    changed = idx.clone()
    changed[:, 6] = (changed[:, 6] + 1 - 3) % (TINY.vocab_size - 3) + 3
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=0)
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_left_padding_invariance(model):
    prompt = random_ids(1, 5)
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), prompt], 1)
    mask = torch.tensor([[False] * 3 + [True] * 5])
    expected = model(prompt)[:, -1]
    torch.testing.assert_close(model(padded, mask)[:, -1], expected, rtol=0, atol=1e-5)
    assert not model(padded, mask).isnan().any()


def test_padding_gives_finite_gradients(model):
    idx = random_ids(2, 6)
    mask = torch.tensor([[False, False, True, True, True, True], [True] * 6])
    model(idx.masked_fill(~mask, 0), mask).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_all_true_mask_matches_no_mask(model):
    idx = random_ids(2, 9)
    torch.testing.assert_close(model(idx, torch.ones(2, 9, dtype=torch.bool)), model(idx), rtol=0, atol=1e-5)


def incremental_logits(model, idx, mask, prefill):
    """Prefill `prefill` positions into a cache, then feed one token at a time."""
    cache = KVCache(model.config, idx.shape[0])
    m = (lambda end: None) if mask is None else (lambda end: mask[:, :end])
    chunks = [model(idx[:, :prefill], m(prefill), cache)]
    for t in range(prefill, idx.shape[1]):
        chunks.append(model(idx[:, t:t + 1], m(t + 1), cache))
    assert cache.length == idx.shape[1]
    return torch.cat(chunks, 1)


@pytest.mark.parametrize("padded", [False, True])
def test_kv_cache_matches_full_recompute(model, padded):
    idx = random_ids(3, 12)
    mask = None
    if padded:
        mask = torch.ones(3, 12, dtype=torch.bool)
        mask[1, :4] = False
        mask[2, :2] = False
        idx = idx.masked_fill(~mask, 0)
    torch.testing.assert_close(incremental_logits(model, idx, mask, prefill=5), model(idx, mask), rtol=0, atol=1e-5)


def test_kv_cache_multi_token_chunks(model):
    idx = random_ids(2, 12)
    cache = KVCache(model.config, 2)
    chunks = [model(idx[:, :4], kv_cache=cache), model(idx[:, 4:9], kv_cache=cache), model(idx[:, 9:], kv_cache=cache)]
    torch.testing.assert_close(torch.cat(chunks, 1), model(idx), rtol=0, atol=1e-5)


def test_context_overflow_raises(model):
    with pytest.raises(ValueError, match=r"17.*context_length 16"):
        model(random_ids(1, 17))
    cache = KVCache(model.config, 1)
    model(random_ids(1, 16), kv_cache=cache)
    with pytest.raises(ValueError, match="16"):
        model(random_ids(1, 1), kv_cache=cache)


def test_bad_mask_shape_raises(model):
    with pytest.raises(ValueError, match="attention_mask"):
        model(random_ids(2, 5), torch.ones(2, 4, dtype=torch.bool))


def test_scalar_head():
    h = torch.randn(2, 5, 32)
    reward = ScalarHead(32)
    assert reward(h).shape == (2, 5)
    assert reward.linear.bias.item() == 0
    assert reward.linear.weight.std().item() == pytest.approx(1 / math.sqrt(33), rel=0.5)
    value = ScalarHead(32, zero_init=True)
    assert torch.equal(value(h), torch.zeros(2, 5))


def test_init_and_helpers(model):
    assert num_params(model) == sum(p.numel() for p in model.parameters())
    # GPT-2 init: 0.02 everywhere, residual projections scaled down by sqrt(2 * n_layers).
    assert model.blocks[0].mlp.fc.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert model.blocks[0].mlp.proj.weight.std().item() == pytest.approx(0.01, rel=0.1)
    d, L, V, T = TINY.d_model, TINY.n_layers, TINY.vocab_size, TINY.context_length
    assert training_flops_per_token(TINY) == 6 * (12 * L * d * d + d * V) + 12 * L * d * T


def test_extend_context_keeps_every_learned_weight_and_the_outputs_on_old_positions():
    from minirlhf.model import extend_context

    torch.manual_seed(0)
    short = GPT(GPTConfig(vocab_size=57, context_length=16, d_model=32, n_layers=2, n_heads=4))
    long = extend_context(short, 40)
    assert long.config.context_length == 40 and long.pos_emb.weight.shape == (40, 32)
    assert torch.equal(long.pos_emb.weight[:16], short.pos_emb.weight)
    assert long.pos_emb.weight[16:].std() > 0       # the new rows start as a fresh model's, not zeros or copies
    idx = torch.randint(3, 57, (2, 16))
    assert torch.equal(long(idx), short(idx))
    assert long(torch.randint(3, 57, (2, 40))).shape == (2, 40, 57)
    with pytest.raises(ValueError, match="only extends"):
        extend_context(short, 8)
