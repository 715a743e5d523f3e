import pytest
import torch

from minirlhf.data import encode_pairs
from minirlhf.model import GPT, GPTConfig
from minirlhf.tokenizer import EOS_ID, PAD_ID, TOKENIZER
from minirlhf.tools import generate_with_tools, sample_text_with_tools, tool_loss_mask
from minirlhf.train import sft

# A tiny model taught these responses by heart; the tool's outputs (1776, err, 56, ...) are in the
# demonstrations but never learned (sft(tool_output=True)): generation must write them.
SCRIPT = [("q: 37*48\na: ", "<calc>37*48</calc>1776\n1776"), ("q: 1+2\na: ", "3"),
          ("q: 5/0\na: ", "<calc>5/0</calc>err\n0"), ("q: 7*8\na: ", "<calc>7*8</calc>56\n<calc>56+1</calc>57\n57"),
          ("q: 6\na: ", "6</calc>err\n6")]
CALLS = [1, 0, 1, 2, 1]
PROMPTS = [TOKENIZER.encode(p, bos=True) for p, _ in SCRIPT]


@pytest.fixture(scope="module")
def scripted():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=TOKENIZER.vocab_size, context_length=64, d_model=32, n_layers=2, n_heads=4))
    sft(model, SCRIPT, steps=80, batch_size=10, lr=1e-2, warmup=10, tool_output=True)
    return model


def labelled_row(segments, width):
    """Left-padded tokens (width,) and the hand-written loss mask of (text, sampled?) segments; the first
    segment is the prompt (BOS added). Returns tokens, attention_mask, loss_mask, prompt length."""
    prompt = TOKENIZER.encode(segments[0][0], bos=True)
    ids, labels = [], []
    for text, sampled in segments[1:]:
        piece = [EOS_ID] if text == "<eos>" else TOKENIZER.encode(text)
        ids += piece
        labels += [sampled] * len(piece)
    return prompt, ids, labels


def batch(rows, P, width):
    tokens = torch.full((len(rows), width), PAD_ID)
    loss = torch.zeros((len(rows), width), dtype=torch.bool)
    for b, (prompt, ids, labels) in enumerate(rows):
        tokens[b, P - len(prompt):P] = torch.tensor(prompt)
        tokens[b, P:P + len(ids)] = torch.tensor(ids)
        loss[b, P:P + len(ids)] = torch.tensor(labels, dtype=torch.bool)
    return tokens, tokens != PAD_ID, loss


HAND = [
    [("q: 7*8\na: ", None), ("<calc>7*8</calc>", True), ("56\n", False), ("<calc>56+1</calc>", True), ("57\n", False),
     ("57", True), ("<eos>", True)],
    [("q: 37*48\na: ", None), ("1776", True), ("<eos>", True)],                      # no call, then PAD
    [("q: 6\na: ", None), ("6</calc>", True), ("err\n", False), ("6\n", True), ("<eos>", True)],   # a lone close tag;
    [("q: 1*2\na: ", None), ("<calc>1*2</calc>", True), ("2", False)],               # a newline the model wrote
]                                                                                    # counts; an output cut short


def test_tool_loss_mask_on_a_hand_built_example():
    rows = [labelled_row(s, 64) for s in HAND]
    P = max(len(p) for p, _, _ in rows)
    width = P + max(len(ids) for _, ids, _ in rows)
    tokens, attention, expected = batch(rows, P, width)
    got = tool_loss_mask(tokens, attention, P)
    assert got.dtype == torch.bool and torch.equal(got, expected)
    assert not got[:, :P].any() and not (got & ~attention).any()
    # the same rows right-padded, as SFT batches them, with per-row prompt lengths
    pairs = [(s[0][0], "".join(t for t, _ in s[1:] if t != "<eos>")) for s in HAND[:3]]
    tokens, lengths = encode_pairs(pairs)
    mask = tool_loss_mask(tokens, tokens != PAD_ID, lengths)
    for b, (prompt, ids, labels) in enumerate(rows[:3]):
        assert mask[b, len(prompt):len(prompt) + len(ids)].tolist() == labels
        assert mask[b].sum() == sum(labels)


def test_greedy_generation_writes_the_tools_output_and_counts_the_calls(scripted):
    g = generate_with_tools(scripted, PROMPTS, 44, greedy=True)
    assert [TOKENIZER.decode(r) for r in g.responses] == [r for _, r in SCRIPT]
    assert g.tool_calls.tolist() == CALLS and g.finished.all()
    # the tool's tokens are read (attention) but not sampled (loss)
    assert torch.equal(g.loss_mask, tool_loss_mask(g.tokens, g.attention_mask, g.prompt_length))
    tool_tokens = g.attention_mask & ~g.loss_mask
    tool_tokens[:, :g.prompt_length] = False
    assert [TOKENIZER.decode(row[keep]) for row, keep in zip(g.tokens, tool_tokens)] == \
        ["1776\n", "", "err\n", "56\n57\n", "err\n"]
    assert torch.equal(g.response_mask, g.attention_mask[:, g.prompt_length:])


def test_batched_generation_equals_one_row_at_a_time(scripted):
    batched = generate_with_tools(scripted, PROMPTS, 44, greedy=True)
    for b, prompt in enumerate(PROMPTS):
        alone = generate_with_tools(scripted, [prompt], 44, greedy=True)
        assert batched.responses[b] == alone.responses[0]
        assert batched.tool_calls[b] == alone.tool_calls[0]
        n = len(alone.responses[0])
        P, p = batched.prompt_length, alone.prompt_length
        assert torch.equal(batched.loss_mask[b, P:P + n], alone.loss_mask[0, p:p + n])


def test_cache_and_no_cache_sample_the_same_tokens(scripted):
    calls = 0
    for seed in range(3):
        runs = [generate_with_tools(scripted, PROMPTS * 2, 44, temperature=1.5, use_cache=use_cache,
                                    generator=torch.Generator().manual_seed(seed)) for use_cache in (True, False)]
        assert torch.equal(runs[0].tokens, runs[1].tokens)
        assert torch.equal(runs[0].loss_mask, runs[1].loss_mask)
        assert torch.equal(runs[0].tool_calls, runs[1].tool_calls)
        assert torch.equal(runs[0].loss_mask, tool_loss_mask(runs[0].tokens, runs[0].attention_mask, runs[0].prompt_length))
        calls += int(runs[0].tool_calls.sum())
    assert calls > 0      # the samples did call the tool


def test_an_output_cut_by_max_new_tokens_stays_cut_and_masked(scripted):
    g = generate_with_tools(scripted, PROMPTS[:1], 19, greedy=True)        # "<calc>37*48</calc>" is 18 tokens
    assert TOKENIZER.decode(g.responses[0]) == "<calc>37*48</calc>1"
    assert g.loss_mask[0, g.prompt_length:].tolist() == [True] * 18 + [False]
    assert g.tool_calls.tolist() == [1] and not g.finished.any()


def test_the_tool_gets_the_response_so_far_and_its_answer_is_written(scripted):
    seen = []

    def tool(text):
        seen.append(text)
        return "42\n"

    texts, calls = sample_text_with_tools(scripted, [SCRIPT[0][0], SCRIPT[3][0]], 44, tool=tool, greedy=True)
    assert seen[:2] == ["<calc>7*8</calc>", "<calc>37*48</calc>"]     # the shorter call closes first
    assert texts[0].startswith("<calc>37*48</calc>42\n") and calls[0] == 1


def test_bad_arguments_are_refused(scripted):
    with pytest.raises(ValueError, match="context_length"):
        generate_with_tools(scripted, PROMPTS, 60)
    with pytest.raises(ValueError, match="empty"):
        generate_with_tools(scripted, [], 4)


def test_the_response_loss_mask_lines_up_with_response_logprobs(scripted):
    """What an RL trainer does with a ToolGeneration: log pi over the response columns (the model attends to
    the tool's tokens), summed where response_loss_mask is True."""
    from minirlhf.logprobs import response_logprobs

    g = generate_with_tools(scripted, PROMPTS, 44, temperature=1.0, generator=torch.Generator().manual_seed(0))
    logp, _ = response_logprobs(scripted, g.tokens, g.attention_mask, g.prompt_length)
    mask = g.response_loss_mask
    assert mask.shape == logp.shape == g.response_mask.shape
    assert torch.equal(mask, g.loss_mask[:, g.prompt_length:]) and not (mask & ~g.response_mask).any()
    assert torch.isfinite(logp[mask]).all()
    assert (g.response_mask & ~mask).sum() > 0            # the samples called the tool: there is something to leave out
    # the tool's digits were not the model's choice: the taught-by-heart model gives them low probability
    assert logp[g.response_mask & ~mask].mean() < logp[mask].mean()


@pytest.mark.slow
def test_the_shipped_tool_model_sampled_hot_makes_malformed_calls_that_get_err_and_never_crash():
    from minirlhf import zoo
    from minirlhf.tasks import tool_arithmetic

    model = zoo.load("arithmetic-tool-sft")
    prompts = [TOKENIZER.encode(p, bos=True) for p in tool_arithmetic.prompts(300, seed=9)]
    g = generate_with_tools(model, prompts, 50, temperature=3.0, generator=torch.Generator().manual_seed(0))
    texts = [TOKENIZER.decode(r) for r in g.responses]
    assert sum(t.count("</calc>err\n") for t in texts) > 10            # garbled calls, each answered "err"
    assert int(g.tool_calls.sum()) == sum(t.count("</calc>") for t in texts)
    assert torch.equal(g.loss_mask, tool_loss_mask(g.tokens, g.attention_mask, g.prompt_length))
