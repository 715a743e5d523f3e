""""""

import pytest
import torch

from minirlhf.generation import Generation, generate, pick_next_token, sample_text
from minirlhf.logprobs import sampling_logits
from minirlhf.model import GPT, GPTConfig
from minirlhf.tokenizer import BOS_ID, EOS_ID, PAD_ID, TOKENIZER

TINY = GPTConfig(vocab_size=57, context_length=32, d_model=32, n_layers=2, n_heads=4)


PROMPTS = [[BOS_ID, 10, 11, 12], [BOS_ID, 20], [BOS_ID, 30, 31, 32, 33, 34, 35]]


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(TINY)


def eos_loving_model():
    """A model that strongly prefers EOS after the token 20, so row 1 of PROMPTS finishes at once."""
    torch.manual_seed(0)
    m = GPT(TINY)
    with torch.no_grad():
        m.tok_emb.weight[EOS_ID] = m.tok_emb.weight[20] * 50
    return m


def test_shapes_and_masks(model):
    g = generate(model, PROMPTS, 5, greedy=True, eos_id=None)
    P = max(map(len, PROMPTS))
    assert g.prompt_length == P
    assert g.tokens.shape == g.attention_mask.shape == (3, P + 5)
    assert g.response_mask.shape == (3, 5) and g.response_mask.all()
    # Left padding: each prompt is right-aligned, PAD and masked before it.
    for row, prompt in enumerate(PROMPTS):
        assert g.tokens[row, P - len(prompt):P].tolist() == prompt
        assert not g.attention_mask[row, :P - len(prompt)].any()
        assert (g.tokens[row, :P - len(prompt)] == PAD_ID).all()
    assert torch.equal(g.attention_mask, g.tokens != PAD_ID)
    assert [len(r) for r in g.responses] == [5, 5, 5]


@pytest.mark.parametrize("eos_id", [None, EOS_ID])
def test_greedy_cache_matches_no_cache(model, eos_id):
    a = generate(model, PROMPTS, 20, greedy=True, eos_id=eos_id)
    b = generate(model, PROMPTS, 20, greedy=True, eos_id=eos_id, use_cache=False)
    assert torch.equal(a.tokens, b.tokens)
    assert torch.equal(a.attention_mask, b.attention_mask)


@pytest.mark.parametrize("eos_id", [None, EOS_ID])
@pytest.mark.parametrize("prompts", [PROMPTS + [[BOS_ID, 40, 41, 42]], [[BOS_ID, 20], [BOS_ID, 40], [BOS_ID, 50]]],
                         ids=["padded", "equal-length"])
def test_batched_greedy_matches_one_prompt_at_a_time(prompts, eos_id):
    m = eos_loving_model()  # the row ending in 20 finishes at once; it must not disturb the others
    batched = generate(m, prompts, 8, greedy=True, eos_id=eos_id).responses
    alone = [generate(m, [p], 8, greedy=True, eos_id=eos_id).responses[0] for p in prompts]
    assert batched == alone


def test_outputs_can_enter_autograd(model):
    g = generate(model, PROMPTS, 3, greedy=True)
    assert not g.tokens.is_inference() and not g.attention_mask.is_inference()
    model(g.tokens, g.attention_mask).sum().backward()  # as PPO will, to score the responses


def test_sampling_reproducible(model):
    def run(seed):
        return generate(model, PROMPTS, 10, temperature=1.5, top_k=20,
                        generator=torch.Generator().manual_seed(seed)).tokens
    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_eos_finishes_rows_and_stops_early():
    m = eos_loving_model()
    g = generate(m, PROMPTS, 10, greedy=True)
    assert g.finished[1]
    assert g.response_tokens[1, 0] == EOS_ID and (g.response_tokens[1, 1:] == PAD_ID).all()
    assert g.response_mask[1].tolist() == [True] + [False] * (g.response_tokens.shape[1] - 1)
    assert g.responses[1] == [EOS_ID]
    assert torch.equal(g.attention_mask, g.tokens != PAD_ID)
    # When every row emits EOS at once, generation stops after one step.
    g = generate(m, [[BOS_ID, 20]] * 2, 10, greedy=True)
    assert g.tokens.shape == (2, 3) and g.finished.all()


def test_pad_is_never_sampled():
    logits = torch.zeros(4, 57)
    logits[:, PAD_ID] = 100.0
    assert (pick_next_token(logits, greedy=True) != PAD_ID).all()
    assert (pick_next_token(logits, generator=torch.Generator().manual_seed(0)) != PAD_ID).all()


def test_sampling_logits_temperature_and_top_k():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])
    out = sampling_logits(logits, temperature=2.0, top_k=2)
    assert out[0, 3:].tolist() == [1.5, 2.0]
    assert torch.isinf(out[0, :3]).all()
    assert logits[0, 0] == 0.0  # the caller's logits are not modified


def test_sample_text(model):
    texts = sample_text(model, TOKENIZER, ["ab", "hello"], 4, generator=torch.Generator().manual_seed(0))
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="empty"):
        generate(model, [], 5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, PROMPTS, 0)
    with pytest.raises(ValueError, match="greedy=True"):
        generate(model, PROMPTS, 5, temperature=0)
    with pytest.raises(ValueError, match="top_k"):
        generate(model, PROMPTS, 5, top_k=0)
    with pytest.raises(ValueError, match=r"context_length 32.*max_new_tokens"):
        generate(model, PROMPTS, 30)


def test_generation_is_a_dataclass_with_responses():
    g = Generation(torch.tensor([[PAD_ID, BOS_ID, 5, EOS_ID, PAD_ID]]), torch.tensor([[0, 1, 1, 1, 0]]).bool(), 2,
                   torch.tensor([[True, True, False]]), torch.tensor([True]))
    assert g.responses == [[5, EOS_ID]]
