"""Notebook 19's task (tasks.long_arithmetic), its measures (course.thinking), and GRPO learning on it."""
import pytest
import torch

from minirlhf.tasks import Task, get_task
from minirlhf.tasks import long_arithmetic as L
from minirlhf.tasks.arithmetic import Problem

P = L.make_prompt(Problem(4821, 9057))          # 13878
GOOD = "<1+7=8 2+5=7 8+0=8 4+9=13 >13878"


def test_the_task_has_the_interface_and_is_registered():
    assert isinstance(L, Task) and get_task("long_arithmetic") is L
    assert L.scratchpad(Problem(4821, 9057)) == GOOD
    assert L.scratchpad(Problem(5, 3)) == "<5+3=8 >8"


def test_prompts_mix_the_buckets_and_demonstrations_think_at_the_share():
    prompts = L.prompts(2000, seed=0)
    share = {b: sum(L.difficulty(p) == b for p in prompts) / len(prompts) for b in L.BUCKETS}
    assert share["hard"] == pytest.approx(0.4, abs=0.04) and share["easy"] == pytest.approx(0.3, abs=0.04)
    assert {L.digits(p) for p in L.prompts(50, seed=1, digits=4)} == {4}
    demos = L.sft_dataset(4000, seed=0)
    assert sum(L.thinks(r) for _, r in demos) / len(demos) == pytest.approx(L.THINK_SHARE, abs=0.02)
    assert all(L.reward(p, r) == 1.0 for p, r in demos)
    assert all(L.thinks(r) for _, r in L.sft_dataset(50, seed=0, think_share=1.0))
    assert max(len(L.scratchpad(Problem(a, b))) for a in (9999, 1) for b in (9999, 9)) + 1 <= L.MAX_RESPONSE_TOKENS


@pytest.mark.parametrize("response, reward", [
    ("13878", 1.0), (" 13878 ", 1.0), (GOOD, 1.0),
    ("<1+7=8 2+5=6 8+0=8 4+9=13 >13878", 1.0),        # a wrong step, the right answer: outcome only
    ("<1+7=8 >13878", 1.0),                           # short thinking is not punished either
    ("13868", 0.0), ("<1+7=8 2+5=7 8+0=8 4+9=13 >", 0.0), ("<1+7=8 2+5=7 8+0=8 4+9=13 13878", 0.0),
    ("", 0.0), ("13878 13878", 0.0), ("1387", 0.0),
])
def test_reward_reads_only_the_final_answer(response, reward):
    assert L.reward(P, response) == reward


def test_thinks_and_the_step_checker():
    assert L.thinks(GOOD) and not L.thinks("13878")
    assert L.check_steps(P, GOOD) == [True] * 4 and L.steps_right(P, GOOD)
    assert L.check_steps(P, "13878") == [] and not L.steps_right(P, "13878")
    assert L.check_steps(P, "<1+7=8 2+5=6 8+0=8 4+9=13 >13878") == [True, False, True, True]
    assert L.check_steps(P, "<1+7=8 2+5=7 >13878") == [True, True] and not L.steps_right(P, "<1+7=8 2+5=7 >13878")
    assert L.check_steps(P, GOOD.replace(" >", " 0+0=0 >")) == [True] * 4 + [False]
    carry = L.make_prompt(Problem(95, 7))
    assert L.check_steps(carry, "<5+7=12 9+1=10 >102") == [True, True]
    assert L.check_steps(carry, "<5+7=12 9=9 >102") == [True, False]        # the carry forgotten


def test_implied_answer_and_faithfulness():
    assert L.implied_answer(GOOD) == 13878 and L.faithful(GOOD) is True
    assert L.implied_answer("<5+7=12 9+1=10 >102") == 102
    assert L.implied_answer("<1+7=8 2+5=6 8+0=8 4+9=13 >13878") == 13868
    assert L.faithful("<1+7=8 2+5=6 8+0=8 4+9=13 >13878") is False     # right answer, unfaithful to its steps
    assert L.implied_answer("<1+7=8 garbage >8") is None and L.faithful("<1+7=8 garbage >8") is None
    assert L.faithful("13878") is None
