"""A calculator a model can call, and the text protocol of a call.

The model writes ``<calc>37*48</calc>``; the environment answers by appending the tool's output,
``1776`` and a newline, which the model reads but did not write. The calculator parses the model's text
itself (a recursive-descent parser over digits, + - * / and parentheses): model text is never handed to
Python's `eval`, and every way a call can be wrong (a typo, a huge number, a division by zero) is
answered with the short string ERROR, so a malformed call never stops a run.
"""
from __future__ import annotations

from fractions import Fraction

CALL_OPEN, CALL_CLOSE = "<calc>", "</calc>"
OUTPUT_END = "\n"               # the tool's output ends here; it never contains a newline itself
ERROR = "err"
MAX_EXPRESSION_LENGTH = 32      # characters between the tags
MAX_OPERAND_DIGITS = 6
MAX_RESULT = 10 ** 12           # |every intermediate and final value| must stay below this
DECIMALS = 4                    # a non-integer result is rounded to this many decimals


class CalculatorError(ValueError):
    """An expression the calculator refuses; the message says why (the model only ever sees ERROR)."""


def evaluate(expression: str) -> Fraction:
    """The exact value of an arithmetic expression, or CalculatorError.

    Grammar (spaces ignored), each rule a function below:
        expr   := term (('+' | '-') term)*
        term   := factor (('*' | '/') factor)*
        factor := '-' factor | '(' expr ')' | number
    Limits: MAX_EXPRESSION_LENGTH characters, MAX_OPERAND_DIGITS digits per number, |value| < MAX_RESULT
    at every step (so no input can make the work or the answer large), no division by zero.
    """
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise CalculatorError(f"expression longer than {MAX_EXPRESSION_LENGTH} characters")
    text = expression.replace(" ", "")
    if not text:
        raise CalculatorError("empty expression")
    value, end = _expr(text, 0)
    if end != len(text):
        raise CalculatorError(f"unexpected {text[end]!r} at position {end}")
    return value


def calculate(expression: str | None) -> str:
    """The tool: an expression -> its value as text ("1776", "-3", "0.3333"), or ERROR. Never raises.

    None (a closing tag without an opening one) is answered with ERROR too."""
    if expression is None:
        return ERROR
    try:
        value = evaluate(expression)
    except CalculatorError:
        return ERROR
    if value.denominator == 1:
        return str(value.numerator)
    return decimal_text(value)


def decimal_text(value: Fraction) -> str:
    """value rounded to DECIMALS decimals (half to even), without trailing zeros: 2/3 -> "0.6667", -1/30000 -> "0".
    Exact throughout: through a float, values from 1e11 up lose their last decimal (a float keeps ~16 digits)."""
    units = int(round(value, DECIMALS) * 10 ** DECIMALS)      # an integer: round() leaves a multiple of 10^-DECIMALS
    whole, fraction = divmod(abs(units), 10 ** DECIMALS)
    sign = "-" if units < 0 else ""
    return f"{sign}{whole}.{fraction:0{DECIMALS}d}".rstrip("0").rstrip(".")


def call_expression(text: str) -> str | None:
    """The expression of the call that `text` ends with: what follows the last CALL_OPEN, up to the final
    CALL_CLOSE. None when there is no CALL_OPEN before it (a closing tag written alone)."""
    if not text.endswith(CALL_CLOSE):
        raise ValueError(f"{text[-20:]!r} does not end with {CALL_CLOSE!r}: only a finished call has an expression")
    body = text[:-len(CALL_CLOSE)]
    start = body.rfind(CALL_OPEN)
    return None if start < 0 else body[start + len(CALL_OPEN):]


def tool_output(text: str) -> str:
    """What the environment appends after a response that ends with CALL_CLOSE: the calculator's answer to
    that call, then OUTPUT_END. "<calc>37*48</calc>" -> "1776\\n"; "<calc>3/0</calc>" -> "err\\n"."""
    return calculate(call_expression(text)) + OUTPUT_END


def _check(value: Fraction) -> Fraction:
    if abs(value) >= MAX_RESULT:
        raise CalculatorError(f"a value reaches {MAX_RESULT} or more")
    return value


def _expr(text: str, i: int) -> tuple[Fraction, int]:
    value, i = _term(text, i)
    while i < len(text) and text[i] in "+-":
        op = text[i]
        right, i = _term(text, i + 1)
        value = _check(value + right if op == "+" else value - right)
    return value, i


def _term(text: str, i: int) -> tuple[Fraction, int]:
    value, i = _factor(text, i)
    while i < len(text) and text[i] in "*/":
        op = text[i]
        right, i = _factor(text, i + 1)
        if op == "/" and right == 0:
            raise CalculatorError("division by zero")
        value = _check(value * right if op == "*" else value / right)
    return value, i


def _factor(text: str, i: int) -> tuple[Fraction, int]:
    # Recursion depth is bounded by the length limit: each level consumes at least one character.
    if i >= len(text):
        raise CalculatorError("expression ends where a number is due")
    if text[i] == "-":
        value, i = _factor(text, i + 1)
        return -value, i
    if text[i] == "(":
        value, i = _expr(text, i + 1)
        if i >= len(text) or text[i] != ")":
            raise CalculatorError("unclosed parenthesis")
        return value, i + 1
    end = i
    while end < len(text) and text[end] in "0123456789":
        end += 1
    if end == i:
        raise CalculatorError(f"unexpected {text[i]!r} at position {i}, a number is due")
    if end - i > MAX_OPERAND_DIGITS:
        raise CalculatorError(f"a number longer than {MAX_OPERAND_DIGITS} digits")
    return _check(Fraction(int(text[i:end]))), end
