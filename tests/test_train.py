"""train.py: pretraining and SFT loops."""

import pytest
import torch

from minirlhf.tasks import arithmetic
from minirlhf.tokenizer import TOKENIZER
from minirlhf.train import cosine_lr, make_optimizer, pretrain, sft, sft_step
from helpers import tiny_model


def test_pretraining_lowers_the_loss_and_is_deterministic():
    texts = arithmetic.pretraining_corpus(500)
    h1 = pretrain(tiny_model(), texts, steps=40, batch_size=8, lr=3e-3, warmup=5)
    h2 = pretrain(tiny_model(), texts, steps=40, batch_size=8, lr=3e-3, warmup=5)
    assert h1["loss"] == h2["loss"]
    assert sum(h1["loss"][-5:]) / 5 < h1["loss"][0] - 0.5


def test_sft_only_learns_the_response():
    """With lr on, SFT changes the model; but the loss never sees prompt tokens: check through the batch mask."""
    model = tiny_model()
    pairs = arithmetic.sft_dataset(50)
    h = sft(model, pairs, steps=5, batch_size=4, lr=1e-3, warmup=1,
            eval_fn=lambda m: {"ok": 1.0}, eval_every=2)
    assert len(h["loss"]) == 5 and [s for s, _ in h["eval"]] == [2, 4, 5]
    with pytest.raises(ValueError, match="context"):
        sft(tiny_model(), [("q: 1+1\na: ", "2" * 40)], steps=1)


def test_cosine_schedule():
    assert cosine_lr(0, 100, 1.0, warmup=10) == pytest.approx(0.1)
    assert cosine_lr(9, 100, 1.0, warmup=10) == pytest.approx(1.0)
    assert cosine_lr(100, 100, 1.0, warmup=10) == pytest.approx(0.1)


def test_nonfinite_loss_stops_training():
    model = tiny_model()
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan")) if hasattr(model, "lm_head") else next(model.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="step 0"):
        pretrain(model, arithmetic.pretraining_corpus(100), steps=2, batch_size=2)


def test_one_step_of_sft_is_sft_step_bit_for_bit():
    """sft's loop and the exercise's sft_step are the same update: same batch, same AdamW, identical weights."""
    from minirlhf.data import encode_pairs
    pairs = arithmetic.sft_dataset(50)
    looped, stepped = tiny_model(), tiny_model()
    h = sft(looped, pairs, steps=1, batch_size=4, lr=1e-3, seed=3)
    tokens, prompt_lengths = encode_pairs(pairs)
    idx = torch.randint(0, tokens.size(0), (4,), generator=torch.Generator().manual_seed(3))   # sft's draw
    batch = tokens[idx][:, :int((tokens[idx] != 0).sum(1).max())]
    stepped.train()
    loss = sft_step(stepped, make_optimizer(stepped, 1e-3), batch, prompt_lengths[idx], grad_clip=1.0)
    assert isinstance(loss, float) and loss == h["loss"][0]
    assert all(torch.equal(a, b) for a, b in zip(looped.parameters(), stepped.parameters()))


def test_sft_with_tool_output_learns_the_calls_but_not_the_tools_answers(monkeypatch):
    """tool_output=True: the batches' loss masks leave out exactly the tool's output (tools.tool_loss_mask)."""
    from minirlhf import train
    from minirlhf.tasks import tool_arithmetic

    pairs = tool_arithmetic.sft_dataset(16, seed=0, product_share=1.0)
    masks = {}
    for flag in (False, True):
        seen = []
        monkeypatch.setattr(train, "lm_step", lambda model, opt, tokens, mask, **kw: seen.append((tokens, mask)) or 0.0)
        sft(tiny_model(context_length=64), pairs, steps=2, batch_size=4, tool_output=flag)
        masks[flag] = seen
    for (tokens, full), (_, masked) in zip(masks[False], masks[True]):
        dropped = full & ~masked
        assert not (masked & ~full).any()
        for row, drop in zip(tokens, dropped):   # what is dropped is the calculator's output: the product's digits, "\n"
            prompt, response = TOKENIZER.decode(row).split("a: ")
            assert TOKENIZER.decode(row[drop]) == str(tool_arithmetic.parse_prompt(prompt + "a: ").answer) + "\n"
            assert response.endswith("</calc>" + TOKENIZER.decode(row[drop]))
