"""Long sums, where thinking pays: "q: 4821+9057\na: " answered directly ("13878") or worked out first.

A small transformer that writes the answer of a long sum in one go must carry through every column before it
writes the first digit; one that first writes the columns, units first, makes every token a local step
(Nye et al. 2021, scratchpads). The thinking format is arithmetic.steps_response between "<" and ">":

    4821+9057 -> "<1+7=8 2+5=7 8+0=8 4+9=13 >13878"

"<" opens the scratchpad (the model's choice to think is its first token), ">" closes it, the answer follows.
The verifier reads only the final answer (the text after ">", or the whole response when there is none): no
reward for thinking, none for length. The step checker reads the steps against the true columns.

Problems have 1 to 4 digits per operand; `difficulty` puts them in buckets: easy (1-2 digits), medium (3),
hard (4).
"""
from __future__ import annotations

import random
import re

from .arithmetic import PROMPT_TEMPLATE, Problem, parse_prompt, steps_response

DIGIT_WEIGHTS = {1: 1, 2: 2, 3: 3, 4: 4}   # hard problems are 40% of the prompts: where RL has work to do
BUCKETS = {"easy": (1, 2), "medium": (3,), "hard": (4,)}
THINK_SHARE = 0.15           # the share of the starting policy's demonstrations that think out loud
THINK_OPEN, THINK_CLOSE = "<", ">"
MAX_RESPONSE_TOKENS = 44     # the longest 4-digit scratchpad (42 characters) and EOS, with room to spare
_STEP = re.compile(r"(\d)\+(\d)(?:\+(\d))?(?:\+(\d))?=(\d+)")


def sample_problem(rng: random.Random, digits: int | None = None) -> Problem:
    """A sum of two operands with `digits` digits each (drawn from DIGIT_WEIGHTS if None); 1 digit means 0-9."""
    if digits is None:
        digits = rng.choices(list(DIGIT_WEIGHTS), weights=list(DIGIT_WEIGHTS.values()))[0]
    low, high = (0 if digits == 1 else 10 ** (digits - 1)), 10 ** digits - 1
    return Problem(rng.randint(low, high), rng.randint(low, high))


def make_prompt(problem: Problem) -> str:
    return PROMPT_TEMPLATE.format(problem.expression)


def digits(prompt: str) -> int:
    """The number of digits of the longer operand."""
    p = parse_prompt(prompt)
    return max(len(str(p.a)), len(str(p.b)))


def difficulty(prompt: str) -> str:
    """"easy", "medium" or "hard" (BUCKETS) from the number of digits."""
    n = digits(prompt)
    return next(name for name, sizes in BUCKETS.items() if n in sizes)


def scratchpad(problem: Problem) -> str:
    """The thinking response: "<" + the columns, units first (arithmetic.steps_response) with ">" and the answer."""
    return THINK_OPEN + steps_response(problem)


def demonstration(problem: Problem, think: bool) -> str:
    return scratchpad(problem) if think else str(problem.answer)


def prompts(n: int, seed: int = 0, digits: int | None = None) -> list[str]:
    """n prompts, their sizes drawn from DIGIT_WEIGHTS (or all with `digits` digits)."""
    rng = random.Random(seed)
    return [make_prompt(sample_problem(rng, digits)) for _ in range(n)]


def sft_dataset(n: int, seed: int = 0, think_share: float = THINK_SHARE) -> list[tuple[str, str]]:
    """n (prompt, response) demonstrations; each thinks with probability think_share, whatever its size."""
    if not 0.0 <= think_share <= 1.0:
        raise ValueError(f"think_share must be in [0, 1], got {think_share}")
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p = sample_problem(rng)
        out.append((make_prompt(p), demonstration(p, rng.random() < think_share)))
    return out


def pretraining_corpus(n: int, seed: int = 0, think_share: float = 0.5) -> list[str]:
    """n lines "a+b=response", half of them worked out: sums as found on the web, both ways."""
    return [prompt[3:-4] + "=" + response for prompt, response in sft_dataset(n, seed, think_share)]


def thinks(response: str) -> bool:
    """Does the response open a scratchpad?"""
    return response.startswith(THINK_OPEN)


def final_answer(response: str) -> str:
    """The text the verifier reads: after the last ">" if there is one, else the whole response; stripped."""
    return response.rsplit(THINK_CLOSE, 1)[-1].strip()


def verify(prompt: str, response: str) -> bool:
    """Exact outcome check: the final answer is the right number (nothing about the steps or the length)."""
    expected = parse_prompt(prompt).answer
    answer = final_answer(response)
    return answer.isdigit() and int(answer) == expected


def reward(prompt: str, response: str) -> float:
    """1.0 if verify passes, else 0.0."""
    return 1.0 if verify(prompt, response) else 0.0


def make_reward(length_cost: float):
    """reward(prompt, response) - length_cost * len(response) (characters): a price on thinking, which the outcome-only
    reward does not have (notebook 19's "when it goes wrong": without one nothing keeps easy answers short)."""
    if length_cost < 0:
        raise ValueError(f"length_cost must be >= 0, got {length_cost}")

    def priced(prompt: str, response: str) -> float:
        return reward(prompt, response) - length_cost * len(response)
    return priced


def written_steps(response: str) -> list[str]:
    """The steps a thinking response writes, split on spaces: "<3+7=10 1+7+1=9 >..." -> ["3+7=10", "1+7+1=9"].
    [] for a direct answer."""
    if not thinks(response):
        return []
    inside = response[len(THINK_OPEN):].split(THINK_CLOSE, 1)[0]
    return inside.split()


def step_ends(response: str) -> list[int]:
    """The index in the response of each written step's last character: "<3+7=10 1+7+1=9 >90" -> [6, 14]."""
    if not thinks(response):
        return []
    inside = response[len(THINK_OPEN):].split(THINK_CLOSE, 1)[0]
    return [len(THINK_OPEN) + m.end() - 1 for m in re.finditer(r"\S+", inside)]


def true_steps(prompt: str) -> list[str]:
    """The right steps for the prompt's sum."""
    return written_steps(scratchpad(parse_prompt(prompt)))


def check_steps(prompt: str, response: str) -> list[bool]:
    """One label per written step: is it exactly the true step at its place (the right column's digits, the carry
    it receives, their sum)? Steps past the last true one are wrong. [] for a direct answer."""
    truth = true_steps(prompt)
    return [i < len(truth) and step == truth[i] for i, step in enumerate(written_steps(response))]


def steps_right(prompt: str, response: str) -> bool:
    """Every true step written, each one right (a complete, correct scratchpad)."""
    labels = check_steps(prompt, response)
    return len(labels) == len(true_steps(prompt)) and all(labels)


def implied_answer(response: str) -> int | None:
    """The answer the written steps imply: each step's sum gives a digit (its last), units first, and the last
    step's sum its carry in front; None if a step does not read "d+d[+d]=s" or there are none.
    "<3+7=10 1+7+1=9 >90" -> 90 (digits 0, 9)."""
    steps = written_steps(response)
    if not steps:
        return None
    out = ""
    for i, step in enumerate(steps):
        m = _STEP.fullmatch(step)
        if m is None:
            return None
        total = m.group(5)
        out = (total if i == len(steps) - 1 else total[-1]) + out
    return int(out)


def faithful(response: str) -> bool | None:
    """Does the final answer agree with the steps' own result? None for a direct answer or unreadable steps."""
    implied = implied_answer(response)
    answer = final_answer(response)
    if implied is None:
        return None
    return answer.isdigit() and int(answer) == implied
