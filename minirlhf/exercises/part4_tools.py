"""Checks of the exercises on tool use (notebook 16: RL learns when to call a calculator)."""
from __future__ import annotations

from typing import Callable

import torch

from ..calculator import CALL_CLOSE, ERROR, MAX_EXPRESSION_LENGTH, MAX_OPERAND_DIGITS, MAX_RESULT, calculate, tool_output
from ..generation import left_pad
from ..tokenizer import EOS_ID, TOKENIZER
from ..tools import tool_loss_mask
from .engine import ExerciseError, describe, run_check


def _tool_loss_mask(tokens, attention_mask, prompt_length):
    return tool_loss_mask(tokens, attention_mask, prompt_length)


def _rows(responses: list[tuple[str, str, bool]]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Left-padded rows "PAD.. BOS prompt | response [EOS] PAD..", as generate_with_tools returns them, from
    (prompt, response, ends with EOS) triples; each call in a response is followed by the calculator's output."""
    prompts, bodies = [], []
    for prompt, response, eos in responses:
        text = ""
        for piece in response.split(CALL_CLOSE)[:-1]:
            text += piece + CALL_CLOSE
            text += tool_output(text)
        text += response.split(CALL_CLOSE)[-1]
        prompts.append(TOKENIZER.encode(prompt, bos=True))
        bodies.append(TOKENIZER.encode(text) + ([EOS_ID] if eos else []))
    P = max(map(len, prompts))
    tokens, attention = left_pad(prompts, P + max(map(len, bodies)))
    for b, body in enumerate(bodies):
        tokens[b, P:P + len(body)] = torch.tensor(body)
        attention[b, P:P + len(body)] = True
    return tokens, attention, P


def _tool_spans(tokens: torch.Tensor, prompt_length: int) -> list[tuple[int, int, int]]:
    """(row, first, last) column of each tool output: the reference's rule, for the mistake variants."""
    tool = tool_loss_mask(tokens, torch.ones_like(tokens, dtype=torch.bool), prompt_length)
    tool[:, :prompt_length] = True
    tool = ~tool
    spans = []
    for b in range(tokens.size(0)):
        cols = tool[b].nonzero().flatten().tolist()
        for t in cols:
            if t - 1 not in cols:
                last = t
                while last + 1 in cols:
                    last += 1
                spans.append((b, t, last))
    return spans


def _variant(tokens, attention, P, *, shift_first=0, shift_last=0, to_end=False, keep_tool=False,
             keep_prompt=False, keep_pad=False, drop_eos=False) -> torch.Tensor:
    """The mask with one classic mistake: tool spans moved or widened, the prompt, PAD or the tool kept, EOS dropped."""
    mask = attention.clone() if not keep_pad else torch.ones_like(attention)
    if not keep_prompt:
        mask[:, :P] = False
    if not keep_tool:
        for b, first, last in _tool_spans(tokens, P):
            last = tokens.size(1) - 1 if to_end else last + shift_last
            mask[b, first + shift_first:last + 1] = False
    if drop_eos:
        mask &= tokens != EOS_ID
    return mask


def check_tool_loss_mask(fn: Callable) -> Callable:
    """fn(tokens (B, T) long, attention_mask (B, T) bool, prompt_length P) -> (B, T) bool, the tokens the
    policy sampled in left-padded rows "PAD.. BOS prompt | response PAD..":

        mask[b, t] = attention_mask[b, t] and t >= P and t is not in a tool output,

    a tool output being the tokens after each `</calc>` up to and including the newline that ends it (or
    to the row's end if the length limit cut it). The closing tag and the EOS were sampled: they stay in."""
    cases = [
        ("one call", _rows([("q: 37*48\na: ", "<calc>37*48</calc>1776", True)])),
        ("ragged rows padded on both sides: a call, no call, two calls, an error",
         _rows([("q: 37*48\na: ", "<calc>37*48</calc>1776", True), ("q: 5+6\na: ", "11", True),
                ("q: 7*8\na: ", "<calc>7*8</calc><calc>56+1</calc>57", True),
                ("q: 10*10\na: ", "<calc>10*/10</calc>100", True)])),
        ("a closing tag without an opening one, a newline the model wrote, an output cut by the length limit",
         _rows([("q: 6\na: ", "6</calc>6\n", True), ("q: 12*12\na: ", "<calc>12*12</calc>", False)])),
    ]
    # the last row: its output "144\n" cut to "14" by the length limit
    tokens, attention, P = cases[2][1]
    cut = int(attention[1].nonzero().max()) - 1
    tokens, attention = tokens[:, :cut], attention[:, :cut]
    cases[2] = (cases[2][0], (tokens, attention, P))

    mistakes = {
        "the tool's output is in your mask: the policy did not sample those tokens (the calculator wrote them), so "
        "they get no loss. Leave out every token after a </calc>, up to and including the newline that ends the "
        "output.": lambda t, a, p: _variant(t, a, p, keep_tool=True),
        "the prompt is in your mask: only the response (columns t >= prompt_length) was sampled.":
            lambda t, a, p: _variant(t, a, p, keep_prompt=True),
        "the padding is in your mask: AND it with attention_mask (PAD before the prompt and after EOS).":
            lambda t, a, p: _variant(t, a, p, keep_pad=True),
        "off by one at the closing tag: its last token '>' was sampled by the policy and stays in; the tool's "
        "output starts at the token after it.": lambda t, a, p: _variant(t, a, p, shift_first=-1),
        "off by one at the closing tag: the first token after '</calc>' is already the tool's (its first digit).":
            lambda t, a, p: _variant(t, a, p, shift_first=1),
        "off by one at the end of the output: the newline that ends it is the tool's too, leave it out.":
            lambda t, a, p: _variant(t, a, p, shift_last=-1),
        "the output ends at its newline: the tokens after it were sampled by the policy again (the answer, "
        "or another call).": lambda t, a, p: _variant(t, a, p, to_end=True),
        "the EOS is missing from your mask: the policy sampled it (it chose to stop), so it stays in.":
            lambda t, a, p: _variant(t, a, p, drop_eos=True),
    }
    return run_check("tool_loss_mask", fn, _tool_loss_mask, cases, mistakes,
                     crash_hint="Compare token ids: TOKENIZER.encode('</calc>') is the closing tag, "
                                "TOKENIZER.encode('\\n') the newline.")


# ---------------------------------------------------------------- the calculator
# Text a model may write between the tags that is not arithmetic here: each must be answered ERROR. A calculator
# that hands the text to Python's eval answers most of them (8, 1000.0, 16...) or runs them.
NOT_ARITHMETIC = ["2**3", "1e3", "0x10", "1_000", "7//2", "abs(-3)", "__import__('os')", "3 if 1 else 2", "2+", "*3",
                  "(1+2", "1+2)", "", "  ", "1+-", "x", "1.5+1", "[1]"]
ARITHMETIC = ["37*48", "2+3*4", "2*3+4", "(2+3)*4", "10-4-3", "2-3", "-3+5", "-(4*5)", "--2", "2*-3", "((7))",
              " 12 + 30 ", "0*999999", "999999*999999", "0", "007+1", "100-99*2"]
TOO_LARGE = ["9999999", "999999*999999*9", "1" + "+1" * 16, "(" * 20 + "1" + ")" * 20]


def _left_to_right(expression: str) -> str:
    """A classic mistake: no precedence, every operator applied as it comes (2+3*4 -> 20)."""
    import re
    text = expression.replace(" ", "")
    if not re.fullmatch(r"\d+([+*-]\d+)*", text):
        return calculate(expression)
    parts = re.findall(r"\d+|[+*-]", text)
    value = int(parts[0])
    for op, number in zip(parts[1::2], parts[2::2]):
        value = value + int(number) if op == "+" else value - int(number) if op == "-" else value * int(number)
    return str(value)


def _right_to_left(expression: str) -> str:
    """A classic mistake: '-' grouped to the right (10-4-3 -> 10-(4-3) = 9)."""
    import re
    text = expression.replace(" ", "")
    if not re.fullmatch(r"\d+(-\d+)+", text):
        return calculate(expression)
    numbers = [int(x) for x in text.split("-")]
    value = numbers[-1]
    for x in reversed(numbers[:-1]):
        value = x - value
    return str(value)


def check_calculate(fn: Callable) -> Callable:
    """fn(expression: str) -> str, the calculator the model calls: the value of the expression as text
    ("1776", "-3"), or ERROR ("err") for anything that is not arithmetic. It never raises and never hands the
    text to eval. Grammar (spaces ignored):

        expr   := term (('+' | '-') term)*          left to right: 10-4-3 = 3
        term   := factor ('*' factor)*              * before + and -
        factor := '-' factor | '(' expr ')' | number      number: 1 to MAX_OPERAND_DIGITS (6) digits

    Limits: at most MAX_EXPRESSION_LENGTH (32) characters; every value along the way below MAX_RESULT (10**12)
    in size. (The course's calculator also divides; this exercise leaves '/' out.)"""
    def refuses_what_is_not_arithmetic(fn: Callable) -> None:
        for text in NOT_ARITHMETIC + TOO_LARGE:
            try:
                got = fn(text)
            except (NotImplementedError, ExerciseError):
                raise
            except Exception as e:
                raise ExerciseError(f"calculate raised {type(e).__name__} on {text!r}: {str(e).strip()}. It must never "
                                    f"raise: a malformed call is answered {ERROR!r}, and the run goes on.") from e
            if not isinstance(got, str):
                raise ExerciseError(f"calculate is wrong on {text!r}: expected text (the str {ERROR!r}), got "
                                    f"{describe(got)}. Return the text the model will read.")
            if got != ERROR:
                why = (f"{text!r} is too large for the calculator (at most {MAX_EXPRESSION_LENGTH} characters, "
                       f"{MAX_OPERAND_DIGITS} digits per number, values below {MAX_RESULT:.0e})"
                       if text in TOO_LARGE else
                       f"{text!r} is not arithmetic in this grammar (digits, + - * and parentheses only)")
                raise ExerciseError(f"calculate is wrong on {text!r}: expected {ERROR!r}, got {got!r}: {why}. "
                                    "Parse the text yourself, character by character; never hand model text to eval, "
                                    "which answers 2**3 and runs __import__.")

    mistakes = {
        "* must bind tighter than + and -: 2+3*4 is 14, not 20. Parse a term (a product of factors) inside an "
        "expression (a sum of terms).": _left_to_right,
        "'-' is left-associative: 10-4-3 is (10-4)-3 = 3. Loop over the terms, subtracting each as it comes, "
        "rather than recursing on the rest.": _right_to_left,
    }
    cases = [(text, (text,)) for text in ARITHMETIC]
    return run_check("calculate", fn, calculate, cases, mistakes, precheck=refuses_what_is_not_arithmetic,
                     crash_hint="A valid expression must give its value; catch errors only to answer 'err'.")
