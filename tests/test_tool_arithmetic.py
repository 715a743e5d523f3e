import random
import re
import time

import pytest

from minirlhf.tasks import arithmetic, tool_arithmetic as ta
from minirlhf.tokenizer import TOKENIZER


def test_prompts_mix_products_and_the_arithmetic_tasks_sums():
    prompts = ta.prompts(400, seed=0)
    products = [p for p in prompts if ta.is_product(p)]
    assert 150 < len(products) < 250
    for p in prompts:
        problem = ta.parse_prompt(p)
        if problem.op == "+":
            assert arithmetic.parse_prompt(p) == arithmetic.Problem(problem.a, problem.b)   # the same prompts
        else:
            assert 10 <= problem.a <= 99 and 10 <= problem.b <= 99
    assert all(ta.is_product(p) for p in ta.prompts(20, product_share=1.0))
    assert not any(ta.is_product(p) for p in ta.prompts(20, product_share=0.0))
    with pytest.raises(ValueError, match="product_share"):
        ta.prompts(3, product_share=1.5)


def test_demonstrations_call_on_every_product_and_on_a_share_of_the_sums():
    pairs = ta.sft_dataset(600, seed=1)
    assert pairs == ta.sft_dataset(600, seed=1)
    sums = [(p, r) for p, r in pairs if not ta.is_product(p)]
    assert all(r.startswith("<calc>") for p, r in pairs if ta.is_product(p))
    assert 0.05 < sum(r.startswith("<calc>") for _, r in sums) / len(sums) < 0.16     # SUM_CALL_SHARE = 0.1
    assert all(ta.verify(p, r) for p, r in pairs)
    assert ta.sft_dataset(50, seed=1, sum_call_share=0.0) and all(
        "<calc>" not in r for p, r in ta.sft_dataset(50, seed=1, sum_call_share=0.0) if not ta.is_product(p))
    longest = max(len(TOKENIZER.encode(p + r, bos=True, eos=True)) for p, r in ta.sft_dataset(2000, seed=1))
    assert 32 < longest <= 64          # past the arithmetic models' context, within the tool model's


def test_demonstration_format():
    problem = ta.parse_prompt("q: 37*48\na: ")
    assert ta.demonstration(problem, call=True) == "<calc>37*48</calc>1776\n"
    assert ta.demonstration(problem, call=False) == "1776"
    TOKENIZER.encode(ta.make_prompt(problem) + ta.demonstration(problem, call=True))


@pytest.mark.parametrize("response, answer, calls", [
    ("1776", 1776, 0), (" 1776 ", 1776, 0), ("<calc>37*48</calc>1776\n", 1776, 1), ("<calc>37*48</calc>1776\n1776", 1776, 1),
    ("<calc>37*48</calc>1776\n1777", 1777, 1), ("<calc>37*4</calc>148\n<calc>37*48</calc>1776\n", 1776, 2),
    ("<calc>37*48</calc>1776", None, 1), ("48</calc>err\n1776", None, 1), ("<calc>37*48", None, 0),
    ("1776 1776", None, 0), ("", None, 0), ("<calc>3/0</calc>err\n", None, 1), ("<calc>3/0</calc>err\n12", 12, 1),
    ("<calc>1/4</calc>0.25\n", None, 1),
])
def test_parse_response(response, answer, calls):
    assert ta.parse_response(response) == (answer, calls)


def test_reward_is_correct_minus_cost_per_call():
    prompt = "q: 37*48\na: "
    assert ta.reward(prompt, "1776") == 1.0
    assert ta.reward(prompt, "<calc>37*48</calc>1776\n") == pytest.approx(1.0 - ta.CALL_COST)
    assert ta.reward(prompt, "<calc>37*48</calc>1776\n1777") == pytest.approx(-ta.CALL_COST)
    assert ta.reward(prompt, "<calc>1</calc>1\n<calc>2</calc>2\n1776", call_cost=0.3) == pytest.approx(0.4)
    assert ta.make_reward(0.05)(prompt, "<calc>37*48</calc>1776\n") == pytest.approx(0.95)
    assert ta.reward("q: 3+4\na: ", "7") == 1.0 and ta.reward("q: 3+4\na: ", "8") == 0.0
    with pytest.raises(ValueError, match="call_cost"):
        ta.make_reward(-1.0)
    with pytest.raises(ValueError, match="prompt"):
        ta.reward("1776", prompt)


# The pattern before it was made linear: kept to check that the new one matches exactly as it did.
OLD_RESPONSE = re.compile(r"(?:<calc>[^\n]*?</calc>([^\n]*)\n)*\s*(-?\d+)?\s*")


def test_the_response_pattern_matches_as_the_old_one_did():
    rng = random.Random(0)
    pieces = ["<calc>", "</calc>", "\n", " ", "1", "23", "-", "*", "err", "0.5", "x", "<calc>37*48</calc>1776\n"]
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 8))) for _ in range(20_000)]
    texts += [f"<calc>{p.expression}</calc>{answer}\n{tail}" for p in map(arithmetic.sample_problem, [rng] * 200)
              for answer, tail in ((p.answer, ""), (p.answer, str(p.answer)), ("err", " 7 "))]
    matched = 0
    for text in texts:
        old, new = OLD_RESPONSE.fullmatch(text), ta._RESPONSE.fullmatch(text)
        assert (old is None) == (new is None) and (old is None or old.groups() == new.groups()), text
        matched += old is not None
    assert matched > 2000


def test_parse_response_takes_linear_time_on_repeated_lines():
    # Each line could end its call at either CALL_CLOSE: the old pattern's time doubled with every line.
    text = "<calc>1</calc>2</calc>3\n" * 30 + "x"
    start = time.perf_counter()
    assert ta.parse_response(text) == (None, 60)
    assert ta.parse_response(" " * 5000 + "x") == (None, 0)
    assert time.perf_counter() - start < 0.5
