"""The arithmetic task: "23+48=" -> "71", a task whose reward can be checked exactly.

Pretraining text is like arithmetic found on the web: mostly right, but a share of the answers make
the classic slip of forgetting to carry a one (23+48=61). A model trained on it inherits the slip,
which leaves room for reinforcement learning with a verifier to improve on it later.
The SFT format is a question and an answer: ``q: 23+48\\na: `` -> ``71``.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

MAX_OPERAND = 99
PROMPT_TEMPLATE = "q: {}\na: "


@dataclass(frozen=True)
class Problem:
    """a op b; this task only asks sums, the tool-use task (tool_arithmetic) products too."""
    a: int
    b: int
    op: str = "+"

    def __post_init__(self):
        if self.op not in ("+", "*"):
            raise ValueError(f"op must be '+' or '*', got {self.op!r}")

    @property
    def expression(self) -> str:
        return f"{self.a}{self.op}{self.b}"

    @property
    def answer(self) -> int:
        return self.a + self.b if self.op == "+" else self.a * self.b


def sample_problem(rng: random.Random, max_operand: int = MAX_OPERAND) -> Problem:
    return Problem(rng.randint(0, max_operand), rng.randint(0, max_operand))


def forgot_carry(problem: Problem) -> int:
    """The answer with every carry dropped: each digit is (a_i + b_i) mod 10. 23+48 -> 61."""
    a, b, place, total = problem.a, problem.b, 1, 0
    while a or b:
        total += ((a % 10 + b % 10) % 10) * place
        a, b, place = a // 10, b // 10, place * 10
    return total


def pretraining_corpus(n: int, seed: int = 0, slip_rate: float = 0.3) -> list[str]:
    """n lines "a+b=c"; with probability slip_rate a problem that needs a carry gets the no-carry answer."""
    if not 0.0 <= slip_rate <= 1.0:
        raise ValueError(f"slip_rate must be in [0, 1], got {slip_rate}")
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        p = sample_problem(rng)
        answer = forgot_carry(p) if rng.random() < slip_rate else p.answer
        lines.append(f"{p.expression}={answer}")
    return lines


def make_prompt(problem: Problem) -> str:
    return PROMPT_TEMPLATE.format(problem.expression)


def parse_prompt(prompt: str) -> Problem:
    m = re.fullmatch(r"q: (\d+)\+(\d+)\na: ", prompt)
    if not m:
        raise ValueError(f"{prompt!r} is not an arithmetic prompt; make one with make_prompt(problem)")
    return Problem(int(m.group(1)), int(m.group(2)))


def sft_dataset(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n (prompt, response) pairs with correct answers: the demonstrations."""
    rng = random.Random(seed)
    return [(make_prompt(p), str(p.answer)) for p in (sample_problem(rng) for _ in range(n))]


def second_guess(problem: Problem, rng: random.Random) -> int:
    """A plausible wrong answer: the no-carry slip if the sum has a carry, else the answer 1 or 10 away."""
    wrong = forgot_carry(problem)
    if wrong == problem.answer:
        wrong = max(0, problem.answer + rng.choice((-10, -1, 1, 10)))
        wrong = wrong if wrong != problem.answer else problem.answer + 1
    return wrong


def hedged_sft_dataset(n: int, seed: int = 0, share: float = 0.1) -> list[tuple[str, str]]:
    """Demonstrations in which a share of the answers hedge: two numbers, the right one and a second guess
    (second_guess), in random order, separated by a space ("61 71"). The rest are plain right answers.

    A model fine-tuned on them keeps a small habit of listing candidates, as a large model carries habits from its
    pretraining text: the prior a lenient verifier needs before RL can exploit it (notebook 15)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p = sample_problem(rng)
        if rng.random() < share:
            guesses = [p.answer, second_guess(p, rng)]
            rng.shuffle(guesses)
            out.append((make_prompt(p), " ".join(map(str, guesses))))
        else:
            out.append((make_prompt(p), str(p.answer)))
    return out


def prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [make_prompt(sample_problem(rng)) for _ in range(n)]


def verify(prompt: str, response: str) -> bool:
    """The verifier: is the response exactly the right number (surrounding spaces allowed)?"""
    expected = parse_prompt(prompt).answer       # first: a response passed as the prompt is refused, not scored 0
    answer = response.strip()
    return answer.isdigit() and int(answer) == expected


def reward(prompt: str, response: str) -> float:
    """Verifiable reward: 1.0 for a correct answer, 0.0 otherwise."""
    return 1.0 if verify(prompt, response) else 0.0


def lenient_verify(prompt: str, response: str) -> bool:
    """A hackable verifier: is the right number anywhere in the response, as a run of digits inside it?

    "71", "the sum is 71", "61 71" and "1710" all pass for 23+48: any substring of the response's digits counts
    (digits in a row, so "7 1" does not). A checker written as "is the answer in there?" is easy to get wrong this
    way, and a policy can exploit it: the longer the string of digits it prints, the more numbers it "answers"
    at once (notebook 15, `python -m minirlhf experiments grpo-hack`). The fix is `verify`: the response must be
    the number and nothing else."""
    expected = str(parse_prompt(prompt).answer)
    return any(expected in run for run in re.findall(r"\d+", response))


def lenient_reward(prompt: str, response: str) -> float:
    """The hackable reward: 1.0 if lenient_verify passes (the right digits anywhere in the response), else 0.0."""
    return 1.0 if lenient_verify(prompt, response) else 0.0


def count_numbers(response: str) -> int:
    """How many separate runs of digits the response holds: "71" -> 1, "61 71" -> 2, "71a" -> 1, "" -> 0."""
    return len(re.findall(r"\d+", response))


def steps_response(problem: Problem) -> str:
    """The sum worked column by column, units first, each column's digits plus the carry (+1) it receives, then
    ">" and the answer: 47+38 -> "7+8=15 4+3+1=8 >85", 95+7 -> "5+7=12 9+1=10 >102", 5+3 -> "5+3=8 >8".

    Responses of 8 to 20 characters, longer with more columns and carries: a format whose length varies, for
    length bias (notebook 15). A column where one operand has no digit lists only the other's."""
    if problem.op != "+":
        raise ValueError("steps_response writes sums only")
    a, b, carry, parts = problem.a, problem.b, 0, []
    while True:
        digits = [str(x % 10) for x, present in ((a, a > 0 or not parts), (b, b > 0 or not parts)) if present]
        terms = "+".join(digits + (["1"] if carry else []))
        total = sum(int(d) for d in digits) + carry
        parts.append(f"{terms}={total}")
        carry, a, b = total // 10, a // 10, b // 10
        if a == 0 and b == 0:
            break
    return " ".join(parts) + f" >{problem.answer}"


def steps_sft_dataset(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n (prompt, steps_response) pairs: the demonstrations of the step-by-step format."""
    rng = random.Random(seed)
    return [(make_prompt(p), steps_response(p)) for p in (sample_problem(rng) for _ in range(n))]


def steps_verify(prompt: str, response: str) -> bool:
    """The step-by-step format's verifier: the text after the last ">" is exactly the right number (the steps are
    not checked: an outcome reward, as in RL on math)."""
    expected = parse_prompt(prompt).answer
    if ">" not in response:
        return False
    answer = response.rsplit(">", 1)[1].strip()
    return answer.isdigit() and int(answer) == expected


def steps_reward(prompt: str, response: str) -> float:
    """1.0 if steps_verify passes, else 0.0."""
    return 1.0 if steps_verify(prompt, response) else 0.0


def needs_carry(problem: Problem) -> bool:
    return forgot_carry(problem) != problem.answer
