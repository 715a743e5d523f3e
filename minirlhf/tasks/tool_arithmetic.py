"""The tool-use task: sums the arithmetic model can do alone, and two-digit products it cannot, with a
calculator it may call.

Prompts are those of the arithmetic task, with "*" as well as "+": ``q: 37*48\\na: ``. A response either
answers at once (``85``) or calls the calculator and stops, the calculator's output being its answer:

    <calc>37*48</calc>1776\\n<eos>
    ^ the model       ^ tool  ^ the model

The answer is the text after the last call's output or, if there is none, that output itself.

The demonstrations call on every product and on a small share of the sums (SUM_CALL_SHARE), enough for
RL to find out what calling on a sum is worth. Not more: in the SFT of `arithmetic-tool-sft`, demonstrations
that call on half the sums took the sums it answered alone from 89% to under 20% right, while a tenth
keeps 80% (greedy, on held-out prompts).

The reward is correct - c * calls: a call costs c, so calling pays only where it raises the chance of
being right by more than c (1 - p_alone > c for a tool that is always right).
"""
from __future__ import annotations

import random
import re
from typing import Callable

from ..calculator import CALL_CLOSE, CALL_OPEN, tool_output
from .arithmetic import Problem, make_prompt

OPERATORS = ("+", "*")
PRODUCT_SHARE = 0.5        # share of products among prompts
SUM_CALL_SHARE = 0.1       # share of the sum demonstrations that call the tool (every product demonstration does)
CALL_COST = 0.1            # c in the reward correct - c * calls
# Calls, each followed by the tool's output up to OUTPUT_END (the last output captured), then the answer if any.
# Each piece matches in one way only, so a failed match costs linear time: a call's expression is what comes before
# its first CALL_CLOSE (a lazy [^\n]*? there could also end at a later one, doubling the work with every such line),
# and the answer's digits come with the whitespace after them (two optional \s* side by side split a run of spaces
# in every way).
_CALL = rf"{re.escape(CALL_OPEN)}(?:(?!{re.escape(CALL_CLOSE)})[^\n])*{re.escape(CALL_CLOSE)}"
_RESPONSE = re.compile(rf"(?:{_CALL}([^\n]*)\n)*\s*(?:(-?\d+)\s*)?")


def sample_problem(rng: random.Random, product_share: float = PRODUCT_SHARE) -> Problem:
    """A product of two two-digit numbers (10..99) with probability product_share, else a sum of two
    numbers in 0..99 (the arithmetic task's problems)."""
    if rng.random() < product_share:
        return Problem(rng.randint(10, 99), rng.randint(10, 99), "*")
    return Problem(rng.randint(0, 99), rng.randint(0, 99), "+")


def parse_prompt(prompt: str) -> Problem:
    m = re.fullmatch(r"q: (\d+)([+*])(\d+)\na: ", prompt)
    if not m:
        raise ValueError(f"{prompt!r} is not a tool-arithmetic prompt; make one with make_prompt(problem)")
    return Problem(int(m.group(1)), int(m.group(3)), m.group(2))


def call_text(expression: str) -> str:
    """A call and the tool's output: "37*48" -> "<calc>37*48</calc>1776\\n"."""
    call = f"{CALL_OPEN}{expression}{CALL_CLOSE}"
    return call + tool_output(call)


def demonstration(problem: Problem, call: bool) -> str:
    """The response that answers `problem`: the calculator's call and output if call, else the answer."""
    return call_text(problem.expression) if call else str(problem.answer)


def _check_share(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def prompts(n: int, seed: int = 0, product_share: float = PRODUCT_SHARE) -> list[str]:
    _check_share("product_share", product_share)
    rng = random.Random(seed)
    return [make_prompt(sample_problem(rng, product_share)) for _ in range(n)]


def sft_dataset(n: int, seed: int = 0, product_share: float = PRODUCT_SHARE,
                sum_call_share: float = SUM_CALL_SHARE) -> list[tuple[str, str]]:
    """n (prompt, response) demonstrations: every product through the calculator, a share sum_call_share
    of the sums too (the others answered at once), so the SFT model sometimes calls on a sum and RL can
    learn what that is worth."""
    _check_share("product_share", product_share)
    _check_share("sum_call_share", sum_call_share)
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        p = sample_problem(rng, product_share)
        pairs.append((make_prompt(p), demonstration(p, p.op == "*" or rng.random() < sum_call_share)))
    return pairs


def pretraining_corpus(n: int, seed: int = 0) -> list[str]:
    """n lines "a+b=c" / "a*b=c", all correct: the interface's text without prompts. No zoo model is
    pretrained on it (the tool model starts from arithmetic-sft)."""
    rng = random.Random(seed)
    return [f"{p.expression}={p.answer}" for p in (sample_problem(rng) for _ in range(n))]


def parse_response(response: str) -> tuple[int | None, int]:
    """(the final answer or None if the response has no well-formed one, the number of calls).

    The answer is the number after the last call's output, or that output itself if nothing follows it.
    Calls are counted as the environment counts them: every CALL_CLOSE the model wrote triggered the tool."""
    calls = response.count(CALL_CLOSE)
    m = _RESPONSE.fullmatch(response)
    if m is None:
        return None, calls
    answer = m.group(2) if m.group(2) is not None else m.group(1)
    return (int(answer) if answer is not None and re.fullmatch(r"-?\d+", answer) else None), calls


def verify(prompt: str, response: str) -> bool:
    """Is the response's final answer (after any calls and their outputs) exactly right?"""
    expected = parse_prompt(prompt).answer       # first: a response passed as the prompt is refused
    answer, _ = parse_response(response)
    return answer == expected


def reward(prompt: str, response: str, call_cost: float = CALL_COST) -> float:
    """correct - c * calls: 1.0 for a right final answer, minus call_cost for each call made."""
    _, calls = parse_response(response)
    return float(verify(prompt, response)) - call_cost * calls


def make_reward(call_cost: float) -> Callable[[str, str], float]:
    """The (prompt, response) -> float reward with call cost c = call_cost, for the trainers."""
    if call_cost < 0:
        raise ValueError(f"call_cost must be >= 0 (a cost, subtracted per call), got {call_cost}")
    return lambda prompt, response: reward(prompt, response, call_cost)


def is_product(prompt: str) -> bool:
    return parse_prompt(prompt).op == "*"

