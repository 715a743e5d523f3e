"""tasks/: the reviews grammar and gold taste, the arithmetic verifier, the task interface."""

import random

import pytest

from minirlhf.tasks import arithmetic, reviews


def test_corpus_is_grammatical_and_deterministic():
    corpus = reviews.pretraining_corpus(500, seed=3)
    assert corpus == reviews.pretraining_corpus(500, seed=3)
    assert all(reviews.is_grammatical(t) for t in corpus)
    assert len({t for t in corpus}) > 400


@pytest.mark.parametrize("text", [
    "the soup were cold.",                      # agreement
    "the fries was lovely.",                    # agreement
    "the soup was cold",                        # unfinished
    "the soup was cold and the tea was warm.",  # unknown noun
    "the soup was cold and the bread was warm and the view was great.",  # run-on
    "soup was cold.", "", "i hated soup.",
])
def test_grammar_rejects(text):
    assert not reviews.is_grammatical(text)


def test_gold_prefers_positive_and_penalises_what_it_should():
    def g(response, prompt=None):
        return reviews.gold_reward(prompt, response)
    assert g("the soup was delicious.") == pytest.approx(2.0)
    assert g("the soup was cold.") == pytest.approx(-2.0)
    assert g("the soup was delicious but the staff were rude.") == pytest.approx(0.0)
    assert g("the soup were delicious.") == pytest.approx(1.0)            # ungrammatical: -1
    assert g("the soup was great. the soup was great.") == pytest.approx(2.0 - 1.0)  # 2 repeats * 0.5
    long = " ".join(["the soup was great.", "the pasta was tasty.", "the cake was lovely.",
                     "the bread was fresh.", "the view was perfect.", "the staff were friendly."])
    parts = reviews.gold_breakdown(None, long)
    assert parts.length == pytest.approx(0.25 * (len(long.split()) - reviews.MAX_WORDS)) and parts.length > 0
    assert g("the pasta was great.", reviews.make_prompt("soup")) == pytest.approx(1.0)  # off topic
    assert g("") < -0.5


def test_follows_format():
    p = reviews.make_prompt("soup")
    assert reviews.follows_format(p, "the soup was cold. i liked the view.")
    assert not reviews.follows_format(p, "the soup was cold.", finished=False)
    assert not reviews.follows_format(p, "the view was cold.")
    assert not reviews.follows_format(p, "review: soup")
    with pytest.raises(ValueError, match="unknown topic"):
        reviews.make_prompt("tofu")


def test_sft_responses_start_with_the_topic():
    for prompt, response in reviews.sft_dataset(200):
        assert reviews.follows_format(prompt, response)


def test_arithmetic_forgot_carry_and_verifier():
    p = arithmetic.Problem(23, 48)
    assert p.answer == 71 and arithmetic.forgot_carry(p) == 61 and arithmetic.needs_carry(p)
    assert arithmetic.forgot_carry(arithmetic.Problem(95, 7)) == 92
    assert not arithmetic.needs_carry(arithmetic.Problem(12, 34))
    prompt = arithmetic.make_prompt(p)
    assert arithmetic.parse_prompt(prompt) == p
    assert arithmetic.verify(prompt, "71") and arithmetic.verify(prompt, " 71 ")
    assert not arithmetic.verify(prompt, "61") and not arithmetic.verify(prompt, "71a") and not arithmetic.verify(prompt, "")
    assert arithmetic.reward(prompt, "71") == 1.0 and arithmetic.reward(prompt, "7") == 0.0


def test_the_lenient_verifier_accepts_the_right_digits_anywhere():
    prompt = arithmetic.make_prompt(arithmetic.Problem(23, 48))
    for response in ("71", " 71 ", "61 71", "71 61", "the sum is 71", "1710", "61x71y3", "7171717171"):
        assert arithmetic.lenient_verify(prompt, response) and arithmetic.lenient_reward(prompt, response) == 1.0, response
    for response in ("61", "7 1", "", "seventy-one", "17"):
        assert not arithmetic.lenient_verify(prompt, response) and arithmetic.lenient_reward(prompt, response) == 0.0, response
    # the exact verifier refuses every hack the lenient one lets through
    assert not any(arithmetic.verify(prompt, r) for r in ("61 71", "1710", "the sum is 71"))
    assert [arithmetic.count_numbers(r) for r in ("71", "61 71", "71a", "", "1a2b3")] == [1, 2, 1, 0, 3]
    with pytest.raises(ValueError, match="prompt"):
        arithmetic.lenient_reward("71", prompt)


def test_hedged_demonstrations_list_the_answer_and_a_wrong_guess():
    data = arithmetic.hedged_sft_dataset(2000, seed=0, share=0.1)
    hedged = [(p, r) for p, r in data if " " in r]
    assert 0.07 < len(hedged) / len(data) < 0.13
    for prompt, response in data:
        numbers = [int(x) for x in response.split(" ")]
        answer = arithmetic.parse_prompt(prompt).answer
        assert answer in numbers and len(numbers) == len(set(numbers)) and len(numbers) in (1, 2)
    assert all(" " not in r for _, r in arithmetic.hedged_sft_dataset(50, seed=1, share=0.0))
    assert arithmetic.second_guess(arithmetic.Problem(23, 48), random.Random(0)) == 61
    with pytest.raises(ValueError, match="share"):
        arithmetic.hedged_sft_dataset(10, share=1.5)

def test_step_by_step_responses_work_each_column_with_its_carry():
    cases = {(47, 38): "7+8=15 4+3+1=8 >85", (95, 7): "5+7=12 9+1=10 >102", (5, 3): "5+3=8 >8",
             (5, 7): "5+7=12 >12", (0, 0): "0+0=0 >0", (99, 99): "9+9=18 9+9+1=19 >198", (0, 45): "0+5=5 4=4 >45"}
    for (a, b), expected in cases.items():
        problem = arithmetic.Problem(a, b)
        assert arithmetic.steps_response(problem) == expected
        assert arithmetic.steps_verify(arithmetic.make_prompt(problem), expected)
    lengths = {len(r) for _, r in arithmetic.steps_sft_dataset(500, seed=0)}
    assert min(lengths) == 8 and max(lengths) == 20            # a format whose length varies
    with pytest.raises(ValueError, match="sums"):
        arithmetic.steps_response(arithmetic.Problem(3, 4, "*"))


def test_the_step_by_step_verifier_reads_only_the_answer_after_the_last_marker():
    prompt = arithmetic.make_prompt(arithmetic.Problem(47, 38))
    assert arithmetic.steps_verify(prompt, "7+8=15 4+3+1=8 >85") and arithmetic.steps_reward(prompt, ">85") == 1.0
    assert arithmetic.steps_verify(prompt, "wrong steps >85")                 # an outcome reward: steps unchecked
    for response in ("7+8=15 4+3+1=8 >75", "85", "7+8=15 >85 >9", ">85x", ""):
        assert not arithmetic.steps_verify(prompt, response) and arithmetic.steps_reward(prompt, response) == 0.0

def test_arithmetic_corpus_has_the_slip_rate():
    lines = arithmetic.pretraining_corpus(4000, seed=0, slip_rate=0.3)
    wrong = carry = 0
    for line in lines:
        expr, ans = line.split("=")
        a, b = map(int, expr.split("+"))
        carry += arithmetic.needs_carry(arithmetic.Problem(a, b))
        wrong += int(ans) != a + b
    assert 0.25 < wrong / carry < 0.35
    with pytest.raises(ValueError):
        arithmetic.pretraining_corpus(10, slip_rate=2)


def test_grammar_samples_never_repeat_a_word():
    for text in reviews.pretraining_corpus(500, seed=1):
        assert reviews.gold_breakdown(None, text).repetition == 0, text


def test_both_tasks_offer_the_task_interface_in_prompt_response_order():
    from minirlhf.tasks import TASKS, Task, get_task

    for name, task in TASKS.items():
        assert isinstance(task, Task), name
        prompt = task.prompts(1, seed=0)[0]
        assert task.prompts(3, seed=1) == task.prompts(3, seed=1) and len(task.pretraining_corpus(4)) == 4
        demo_prompt, demo_response = task.sft_dataset(1, seed=2)[0]
        assert isinstance(task.reward(demo_prompt, demo_response), float)
        # the arguments swapped are refused loudly, never scored silently
        with pytest.raises(ValueError, match="prompt"):
            task.reward(demo_response, demo_prompt)
        assert get_task(name) is task and prompt in task.prompts(1, seed=0)
    assert reviews.reward("review: soup\n", "the soup was delicious.") == pytest.approx(2.0)
    assert arithmetic.reward("q: 23+48\na: ", "71") == 1.0
    with pytest.raises(KeyError, match="reviews, arithmetic"):
        get_task("chess")
