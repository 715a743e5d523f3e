"""exercises/part4_tools.py: the tool loss-mask check accepts right answers (the reference and one written
differently), falls back on a stub, and rejects plausible wrong masks with their hints."""
import re

import torch

from minirlhf import exercises as ex
from minirlhf.tokenizer import EOS_ID, TOKENIZER
from minirlhf.tools import tool_loss_mask
from conftest import assert_check_behaves


def mask_by_text(tokens, attention_mask, prompt_length):   # right: a regex over each row's characters
    mask = attention_mask.clone()
    mask[:, :prompt_length] = False
    for b, row in enumerate(tokens.tolist()):
        chars = "".join(TOKENIZER.itos[i] if i >= 3 else "\0" for i in row[prompt_length:])
        for m in re.finditer(r"</calc>([^\n]*\n?)", chars):
            mask[b, prompt_length + m.start(1):prompt_length + m.end(1)] = False
    return mask


def spans(tokens, attention_mask, prompt_length, *, start=0, end=0, stop_at_newline=True):
    """A token loop with the span's start and end moved, for the wrong answers."""
    close, newline = TOKENIZER.encode("</calc>"), TOKENIZER.encode("\n")[0]
    mask = attention_mask.clone()
    mask[:, :prompt_length] = False
    for b, row in enumerate(tokens.tolist()):
        t = prompt_length
        while t < len(row):
            if row[max(prompt_length, t - 6):t + 1] == close:
                u = t + 1
                while u < len(row) and not (stop_at_newline and row[u] == newline):
                    u += 1
                mask[b, t + 1 + start:min(u + 1 + end, len(row))] = False
                t = u
            t += 1
    return mask


def test_tool_loss_mask_check(capsys):
    wrongs = [
        (lambda t, a, p: a & (torch.arange(t.size(1)) >= p), "tool's output is in your mask"),
        (lambda t, a, p: tool_loss_mask(t, a, p) | a & (torch.arange(t.size(1)) < p), "prompt is in your mask"),
        (lambda t, a, p: spans(t, a, p, start=-1), "last token '>'"),
        (lambda t, a, p: spans(t, a, p, end=-1), "newline that ends it"),
        (lambda t, a, p: spans(t, a, p, stop_at_newline=False), "sampled by the policy again"),
        (lambda t, a, p: tool_loss_mask(t, a, p) & (t != EOS_ID), "EOS is missing"),
        (lambda t, a, p: tool_loss_mask(t, a, p).float(), "bool mask"),
        (lambda t, a, p: tool_loss_mask(t, a, p).tolist(), "torch.Tensor"),
        (lambda t, a, p: tool_loss_mask(t, a, p)[:, p:], "shape"),
        (lambda t, a, p: tool_loss_mask(t, torch.ones_like(a), p), "padding is in your mask"),
    ]
    assert_check_behaves(ex.check_tool_loss_mask, [tool_loss_mask, mask_by_text, spans], wrongs, capsys)


def test_the_cases_hold_what_they_claim():
    """Calls, an error, a lone closing tag, a model-written newline, a cut output, padding on both sides."""
    from minirlhf.exercises.part4_tools import _rows
    tokens, attention, P = _rows([("q: 7*8\na: ", "<calc>7*8</calc><calc>56+1</calc>57", True),
                                  ("q: 5+6\na: ", "11", True), ("q: 6\na: ", "6</calc>x", False)])
    texts = [TOKENIZER.decode(row[P:]) for row in tokens]
    assert texts == ["<calc>7*8</calc>56\n<calc>56+1</calc>57\n57", "11", "6</calc>err\nx"]
    assert not attention[1, :P - len("q: 5+6\na: ") - 1].any() and not attention[1, P + 3:].any()


# ---------------------------------------------------------------- the calculator
def tokens_calculate(expression):          # right, written differently: a token list and an index, no Fractions
    import re
    text = expression.replace(" ", "")
    if len(expression) > 32 or not text or re.search(r"[^0-9+*()-]", text):
        return "err"
    toks, pos = re.findall(r"\d+|[+*()-]", text), [0]

    def peek():
        return toks[pos[0]] if pos[0] < len(toks) else None

    def take():
        pos[0] += 1
        return toks[pos[0] - 1]

    def small(v):
        if abs(v) >= 10 ** 12:
            raise ValueError
        return v

    def factor():
        t = take() if peek() is not None else None
        if t == "-":
            return small(-factor())
        if t == "(":
            v = expr()
            if take() != ")":
                raise ValueError
            return v
        if t is None or not t.isdigit() or len(t) > 6:
            raise ValueError
        return int(t)

    def term():
        v = factor()
        while peek() == "*":
            take()
            v = small(v * factor())
        return v

    def expr():
        v = term()
        while peek() in ("+", "-"):
            v = small(v + term() if take() == "+" else v - term())
        return v

    try:
        v = expr()
        return str(v) if pos[0] == len(toks) else "err"
    except (ValueError, IndexError):
        return "err"


def eval_calculate(expression):            # wrong: eval (without builtins, on the check's fixed strings only)
    try:
        return str(eval(expression, {"__builtins__": {}}))
    except Exception:
        return "err"


def test_calculate_check(capsys):
    from minirlhf.calculator import calculate
    from minirlhf.exercises.part4_tools import _left_to_right, _right_to_left

    def checked(fn):                        # the limits and the refusals right, the arithmetic wrong
        return lambda e: "err" if tokens_calculate(e) == "err" else fn(e)

    def unlimited(e):
        text = e.replace(" ", "")
        return str(int(text)) if text.isdigit() else tokens_calculate(e)

    def raises_on_bad_input(e):
        out = tokens_calculate(e)
        if out == "err":
            raise SyntaxError("bad expression")
        return out

    wrongs = [
        (eval_calculate, "never hand model text to eval"),
        (checked(_left_to_right), "bind tighter"),
        (checked(_right_to_left), "left-associative"),
        (lambda e: int(tokens_calculate(e)) if tokens_calculate(e) != "err" else "err", "expected text"),
        (raises_on_bad_input, "must never raise"),
        (unlimited, "too large"),
    ]
    assert_check_behaves(ex.check_calculate, [calculate, tokens_calculate], wrongs, capsys)
