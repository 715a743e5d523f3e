import random
from fractions import Fraction

import pytest

from minirlhf.calculator import (ERROR, MAX_EXPRESSION_LENGTH, CalculatorError, calculate, call_expression, evaluate,
                                 tool_output)
from minirlhf.tokenizer import TOKENIZER


@pytest.mark.parametrize("expression, value", [
    ("37*48", "1776"), ("2+3*4", "14"), ("(2+3)*4", "20"), ("10-2-3", "5"), ("100/10/5", "2"), ("3 - 5", "-2"),
    ("-(-2)", "2"), ("--2", "2"), ("-3*-3", "9"), ("10/4", "2.5"), ("1/3", "0.3333"), ("-2/3", "-0.6667"),
    ("-1/30000", "0"), ("999999*999999", "999998000001"), ("((((7))))", "7"), ("007", "7"),
])
def test_arithmetic_with_precedence_and_exact_division(expression, value):
    assert calculate(expression) == value


def test_agrees_with_python_on_random_expressions():
    """Random well-formed expressions: the parser gives what exact arithmetic on the same tree gives."""
    rng = random.Random(0)

    def expr(depth):
        if depth == 0 or rng.random() < 0.3:
            n = rng.randint(0, 999)
            return str(n), Fraction(n)
        (a, va), (b, vb) = expr(depth - 1), expr(depth - 1)
        op = rng.choice("+-*/")
        if op == "/" and vb == 0:
            op = "+"
        value = {"+": va + vb, "-": va - vb, "*": va * vb, "/": va / vb if vb else None}[op]
        return f"({a}{op}{b})", value

    checked = 0
    for _ in range(300):
        text, value = expr(3)
        if len(text) <= MAX_EXPRESSION_LENGTH:
            assert evaluate(text) == value, text
            checked += 1
    assert checked > 100


@pytest.mark.parametrize("expression, reason", [
    ("", "empty"), ("1+", "ends where a number"), ("(1+2", "unclosed"), ("1+2)", "unexpected"), ("3/0", "division"),
    ("3/(2-2)", "division"), ("1234567", "digits"), ("999999*999999*9", "reaches"), ("1" * 33, "longer than"),
    ("2**3", "unexpected"), ("1.5", "unexpected"), ("abs(1)", "unexpected"), ("__import__('os')", "unexpected"),
    ("(" * 16 + "1" + ")" * 16, "longer than"), ("-" * 31 + "1", None), ("1e9", "unexpected"), ("<calc>1", "unexpected"),
])
def test_refuses_what_is_not_small_arithmetic(expression, reason):
    if reason is None:      # deep but within the limits: a value, not a crash
        assert calculate(expression) == "-1"
        return
    with pytest.raises(CalculatorError, match=reason):
        evaluate(expression)
    assert calculate(expression) == ERROR


def test_never_raises_on_random_text_and_its_output_is_encodable():
    rng = random.Random(1)
    alphabet = "0123456789+-*/() x<>.e"
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        out = calculate(text)
        TOKENIZER.encode(out)
        assert out == ERROR or out.lstrip("-").replace(".", "", 1).isdigit()
    assert calculate(None) == ERROR


def test_the_call_protocol():
    assert call_expression("<calc>37*48</calc>") == "37*48"
    assert call_expression("<calc>1+1</calc>2\n<calc>6*7</calc>") == "6*7"     # the last call
    assert call_expression("12</calc>") is None                                 # a close tag alone
    assert tool_output("<calc>37*48</calc>") == "1776\n"
    assert tool_output("<calc>3/0</calc>") == "err\n" and tool_output("</calc>") == "err\n"
    with pytest.raises(ValueError, match="does not end with"):
        call_expression("<calc>37*48")


def old_decimal_text(value: Fraction) -> str:
    """How a non-integer result was written before the exact rounding: through a float."""
    text = f"{float(round(value, 4)):.4f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def test_results_below_1e11_are_written_as_before_and_larger_ones_exactly():
    rng = random.Random(2)
    compared = 0
    for _ in range(20_000):            # the notebook's calls: two or three operands of up to 6 digits
        operands = [str(rng.randint(0, 10 ** rng.randint(1, 6) - 1)) for _ in range(rng.randint(2, 3))]
        text = operands[0] + "".join(rng.choice("+-*/") + x for x in operands[1:])
        try:
            value = evaluate(text)
        except CalculatorError:
            continue
        if abs(value) < 10 ** 11:
            assert calculate(text) == (str(value.numerator) if value.denominator == 1 else old_decimal_text(value)), text
            compared += 1
    assert compared > 15_000
    # 788539760347.29734427...: through a float it came out as ...2972
    assert calculate("423195/326201+813346*969501") == "788539760347.2973"
    assert calculate("-423195/326201-813346*969501") == "-788539760347.2973"
    assert calculate("1/20000") == "0" and calculate("3/20000") == "0.0002"      # half to even, as before
