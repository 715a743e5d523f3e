"""The AI judge: constitution files, the human's per-principle comparisons, verdicts, swap-averaging,
position bias, labelling with a constitution, and a judge that learns."""
import math
import random
import time

import pytest
import torch

from minirlhf import judge as J
from minirlhf.model import GPT, GPTConfig
from minirlhf.tasks import reviews
from minirlhf.tokenizer import TOKENIZER
from helpers import tiny_model

SENTIMENT, GRAMMAR = J.PRINCIPLES["sentiment"], J.PRINCIPLES["grammar"]


def tiny_judge(seed=0):
    return J.init_judge(tiny_model(seed, context_length=48), context_length=160)


# ---------------------------------------------------------------- the constitution
def test_parse_constitution_skips_blanks_and_comments():
    text = f"# my constitution\n\n  {SENTIMENT}  \n# {GRAMMAR}\nbe kind.\n"
    assert J.parse_constitution(text) == [SENTIMENT, "be kind."]


@pytest.mark.parametrize("text,message", [
    ("Be Kind.\n", "line 1.*cannot encode 'B'"),
    ("be kind.\n" + "x" * (J.MAX_PRINCIPLE_CHARS + 1), "line 2.*at most 60 characters"),
    ("be kind.\nbe brief.\nbe kind.\n", "line 3.*already listed on line 1"),
    ("# nothing here\n\n", "no principle"),
])
def test_parse_constitution_names_the_bad_line(text, message):
    with pytest.raises(ValueError, match=message):
        J.parse_constitution(text)


def test_read_constitution(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(f"{SENTIMENT}\n")
    assert J.read_constitution(path) == [SENTIMENT]
    with pytest.raises(FileNotFoundError, match="one principle per line"):
        J.read_constitution(tmp_path / "missing.txt")


def test_read_constitution_takes_a_byte_order_mark_and_names_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"\xef\xbb\xbf" + f"{SENTIMENT}\nbe kind.\n".encode())       # as older Windows editors save
    assert J.read_constitution(path) == [SENTIMENT, "be kind."]
    path.write_bytes(f"{SENTIMENT}\n".encode() + "be kind, caf\u00e9.\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{path} is not UTF-8 text: byte 45 \(line 2\) is b'\\xe9'. Save the file as UTF-8"):
        J.read_constitution(path)


def test_the_duplicate_check_is_linear_in_the_number_of_lines():
    text = "\n".join(f"principle {i}." for i in range(40_000))     # quadratic: about 17 s; linear: a few ms
    start = time.perf_counter()
    assert len(J.parse_constitution(text)) == 40_000
    assert time.perf_counter() - start < 2.0


def test_the_shipped_constitution_covers_every_aspect_the_human_knows():
    shipped = J.read_constitution()
    assert sorted(J.principle_aspect(p) for p in shipped) == sorted(J.PRINCIPLES)


def test_principle_aspect_refuses_principles_the_human_was_never_asked():
    assert J.principle_aspect(GRAMMAR) == "grammar"
    with pytest.raises(ValueError, match="never asked 'be kind.'"):
        J.principle_aspect("be kind.")


def test_aspect_score_is_higher_for_the_better_response():
    p = reviews.make_prompt("soup")
    assert J.aspect_score(p, "the soup was lovely.", "sentiment") == 2.0
    assert J.aspect_score(p, "the soup was lovely.", "grammar") == 0.0
    assert J.aspect_score(p, "the soup was was lovely.", "grammar") == -1.0
    assert J.aspect_score(p, "the cake was lovely.", "off_topic") == -1.0
    with pytest.raises(ValueError, match="unknown aspect"):
        J.aspect_score(p, "the soup was lovely.", "politeness")


# ---------------------------------------------------------------- the judge model
def test_judge_prompt_fits_the_alphabet_and_ends_where_the_answer_goes():
    text = J.judge_prompt(SENTIMENT, reviews.make_prompt("soup"), "the soup was cold.", "i loved the soup.")
    assert text == (f"principle: {SENTIMENT}\nreview: soup\na: the soup was cold.\nb: i loved the soup.\nbetter:")
    TOKENIZER.encode(text)
    assert all(len(TOKENIZER.encode(a)) == 1 for a in J.ANSWERS)


def test_init_judge_keeps_the_base_model_on_the_positions_it_had():
    base = tiny_model(0, context_length=48)
    judge = J.init_judge(base, context_length=160)
    assert judge.config.context_length == 160
    tokens = torch.tensor([TOKENIZER.encode("the soup was lovely.", bos=True)])
    torch.testing.assert_close(judge(tokens), base(tokens))
    torch.testing.assert_close(judge.pos_emb.weight[48:96], base.pos_emb.weight)
    with pytest.raises(ValueError, match="shorter than the base model's 48"):
        J.init_judge(base, context_length=32)


def comparisons_of(texts_a, texts_b, principle=SENTIMENT):
    n = len(texts_a)
    return [principle] * n, [reviews.make_prompt("soup")] * n, texts_a, texts_b


def test_judge_probability_is_a_probability_and_does_not_depend_on_the_batch():
    judge = tiny_judge()
    args = comparisons_of(["the soup was lovely.", "i hated the soup.", "the soup was cold and the cake was dry."],
                          ["i loved the soup.", "the soup was warm.", "the soup was great."])
    p = J.judge_probability(judge, *args)
    assert p.shape == (3,) and ((p > 0) & (p < 1)).all()
    torch.testing.assert_close(J.judge_probability(judge, *args, batch_size=1), p)


def test_judge_probability_refuses_mismatched_or_too_long_input():
    judge = tiny_judge()
    with pytest.raises(ValueError, match="one of each per comparison"):
        J.judge_probability(judge, [SENTIMENT], ["review: soup\n"] * 2, ["a"] * 2, ["b"] * 2)
    long = "the soup was lovely. " * 5
    with pytest.raises(ValueError, match="more than the judge's context 160"):
        J.judge_probability(judge, *comparisons_of([long], [long]))


# ---------------------------------------------------------------- order and agreement
def test_swap_averaging_cancels_a_position_bias_and_keeps_the_sign():
    d = torch.tensor([-2.0, -0.3, 0.0, 0.5, 3.0])      # the judge's log-odds for a over b
    bias = 1.0                                        # what it adds for being shown first
    p_ab, p_ba = torch.sigmoid(d + bias), torch.sigmoid(-d + bias)
    p = J.swap_averaged(p_ab, p_ba)
    assert torch.equal(torch.sign(p - 0.5), torch.sign(d))
    assert ((p - 0.5).abs() <= (torch.sigmoid(d) - 0.5).abs() + 1e-7).all()     # pulled toward 1/2
    torch.testing.assert_close(J.swap_averaged(torch.sigmoid(d), torch.sigmoid(-d)), torch.sigmoid(d))


def test_position_bias_counts_pairs_whose_winner_follows_the_position():
    p_ab = torch.tensor([0.9, 0.8, 0.3, 0.6])
    p_ba = torch.tensor([0.1, 0.7, 0.4, 0.2])         # pairs 2 and 3 pick the same position in both orders
    bias = J.position_bias(p_ab, p_ba)
    assert bias["flip_rate"] == 0.5
    assert bias["first_preference"] == pytest.approx(float(torch.cat([p_ab, p_ba]).mean()))


def test_judge_gold_agreement_leaves_gold_ties_out_and_counts_no_verdict_half():
    p = torch.tensor([0.9, 0.2, 0.5, 0.7])
    gold_a, gold_b = torch.tensor([1.0, 1.0, 2.0, 0.0]), torch.tensor([0.0, 0.0, 0.0, 0.0])
    assert J.judge_gold_agreement(p, gold_a, gold_b) == pytest.approx((1 + 0 + 0.5) / 3)


# ---------------------------------------------------------------- the human's comparisons
def test_human_comparisons_follow_the_asked_aspect_when_noiseless():
    prompt = reviews.make_prompt("soup")
    pool = [{"prompt": prompt, "a": "the soup was lovely.", "b": "i hated the soup."},
            {"prompt": prompt, "a": "the soup was was cold.", "b": "the soup was cold."}] * 10
    labelled = J.human_comparisons(pool, [SENTIMENT, GRAMMAR], temperature=0, seed=3)
    assert {c["principle"] for c in labelled} == {SENTIMENT, GRAMMAR}
    for c in labelled:
        expected = {("the soup was lovely.", SENTIMENT): 1, ("the soup was lovely.", GRAMMAR): 0.5,
                    ("the soup was was cold.", SENTIMENT): 0.5, ("the soup was was cold.", GRAMMAR): 0}[c["a"], c["principle"]]
        if expected != 0.5:                           # a tie is a coin flip
            assert c["prefers_a"] == expected
    examples = J.judge_examples(labelled, both_orders=False)
    assert examples[0][0] == J.judge_prompt(labelled[0]["principle"], prompt, labelled[0]["a"], labelled[0]["b"])
    assert [e[1] for e in examples] == ["a" if c["prefers_a"] else "b" for c in labelled]
    both = J.judge_examples(labelled)
    assert both[0::2] == examples
    assert both[1][0] == J.judge_prompt(labelled[0]["principle"], prompt, labelled[0]["b"], labelled[0]["a"])
    assert [e[1] for e in both[1::2]] == ["b" if c["prefers_a"] else "a" for c in labelled]


def test_sample_comparison_pool_draws_two_responses_per_prompt():
    policy = tiny_model(0, context_length=48)
    prompts = [reviews.make_prompt(t) for t in ("soup", "cake", "fries")]
    pool = J.sample_comparison_pool(policy, prompts, seed=1, max_new_tokens=20)
    assert [c["prompt"] for c in pool] == prompts
    assert all(isinstance(c["a"], str) and isinstance(c["b"], str) for c in pool)
    assert pool == J.sample_comparison_pool(policy, prompts, seed=1, max_new_tokens=20)


# ---------------------------------------------------------------- labelling with a constitution
def test_constitution_probability_sample_and_sum_agree_with_the_verdict_matrix():
    judge = tiny_judge()
    a, b = ["the soup was lovely.", "i hated the soup."] * 4, ["i loved the soup.", "the soup was warm."] * 4
    prompts = [reviews.make_prompt("soup")] * 8
    constitution = [SENTIMENT, GRAMMAR]
    verdicts = J.principle_verdicts(judge, constitution, prompts, a, b)
    assert verdicts.shape == (2, 8)
    torch.testing.assert_close(verdicts[1], J.swap_averaged(*J.judge_both_orders(judge, [GRAMMAR] * 8, prompts, a, b)))
    for mode in ("sample", "sum"):
        torch.testing.assert_close(J.constitution_probability(judge, constitution, prompts, a, b, mode=mode, seed=4),
                                   J.combine_verdicts(verdicts, mode, seed=4), atol=1e-6, rtol=0)
    unswapped = J.constitution_probability(judge, constitution, prompts, a, b, swap=False, seed=4)
    drawn = [constitution[i] for i in J.draw_principles(8, 2, seed=4).tolist()]
    torch.testing.assert_close(unswapped, J.judge_probability(judge, drawn, prompts, a, b))
    with pytest.raises(ValueError, match="mode must be"):
        J.constitution_probability(judge, constitution, prompts, a, b, mode="vote")


def test_combine_verdicts():
    verdicts = torch.tensor([[0.9, 0.5, 0.2], [0.5, 0.8, 0.2]])
    torch.testing.assert_close(J.combine_verdicts(verdicts, "sum"), torch.tensor([0.9, 0.8, 1 / 17]))
    drawn = J.draw_principles(3, 2, seed=1)
    torch.testing.assert_close(J.combine_verdicts(verdicts, "sample", seed=1), verdicts[drawn, torch.arange(3)])
    assert set(J.draw_principles(200, 3, seed=0).tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="mode must be"):
        J.combine_verdicts(verdicts, "max")


def test_ai_label_pairs_choose_the_judges_winner():
    prompt = reviews.make_prompt("soup")
    pairs = J.ai_label_pairs([prompt] * 2, ["the soup was lovely.", "the soup was cold."],
                             ["the soup was cold.", "the soup was lovely."], torch.tensor([0.8, 0.3]))
    assert [p["chosen"] for p in pairs] == ["the soup was lovely.", "the soup was lovely."]
    assert [p["p_chosen"] for p in pairs] == pytest.approx([0.8, 0.7])
    assert pairs[0]["gold_chosen"] == reviews.gold_reward(prompt, "the soup was lovely.")


# ---------------------------------------------------------------- the judge learns
def sentiment_pool(n, seed):
    """Pairs of one-sentence reviews, one loving and one hating the topic, in random order."""
    rng = random.Random(seed)
    pool = []
    for _ in range(n):
        topic = rng.choice(reviews.NOUNS)
        good, bad = f"i {rng.choice(('loved', 'liked'))} the {topic}.", f"i hated the {topic}."
        a, b = (good, bad) if rng.random() < 0.5 else (bad, good)
        pool.append({"prompt": reviews.make_prompt(topic), "a": a, "b": b})
    return pool


def test_train_judge_learns_to_agree_with_the_gold_order():
    torch.manual_seed(0)
    judge = GPT(GPTConfig(vocab_size=TOKENIZER.vocab_size, context_length=128, d_model=32, n_layers=2, n_heads=2))
    train = J.human_comparisons(sentiment_pool(256, seed=1), [SENTIMENT], temperature=0.3, seed=2)
    test = sentiment_pool(100, seed=3)

    def agreement():
        prompts, a, b = ([c[k] for c in test] for k in ("prompt", "a", "b"))
        p = J.judge_probability(judge, [SENTIMENT] * len(test), prompts, a, b)
        gold = [[J.aspect_score(pr, r, "sentiment") for pr, r in zip(prompts, side)] for side in (a, b)]
        return J.judge_gold_agreement(p, *gold)

    before = agreement()
    history = J.train_judge(judge, train, steps=200, batch_size=16, lr=3e-3, warmup=10, both_orders=False)
    after = agreement()
    assert history["loss"][-1] < history["loss"][0]
    assert before < 0.7 and after > 0.85, (before, after)


def test_informative_comparisons_ask_only_about_an_aspect_that_differs():
    prompt = reviews.make_prompt("soup")
    pool = [{"prompt": prompt, "a": "the soup was lovely.", "b": "i hated the soup."},     # differ in sentiment only
            {"prompt": prompt, "a": "the soup was warm.", "b": "the soup was fresh."}]      # differ in nothing
    labelled = J.human_comparisons(pool * 5, [SENTIMENT, GRAMMAR], temperature=0, seed=0, informative=True)
    assert len(labelled) == 5
    assert all(c["principle"] == SENTIMENT and c["prefers_a"] == 1 for c in labelled)


def test_balanced_comparisons_ask_more_often_about_the_rarer_difference():
    prompt = reviews.make_prompt("soup")
    both = {"prompt": prompt, "a": "the soup was lovely.", "b": "i hated soup the."}       # sentiment and grammar
    sentiment_only = {"prompt": prompt, "a": "the soup was lovely.", "b": "i hated the soup."}
    pool = [both] * 20 + [sentiment_only] * 180
    def grammar_share(balanced):
        asked = J.human_comparisons(pool, [SENTIMENT, GRAMMAR], seed=0, informative=True, balanced=balanced)
        return sum(c["principle"] == GRAMMAR for c in asked) / 20
    # grammar differs in 20 pairs, sentiment in 200: weights 1/20 vs 1/200 on the 20 pairs where both differ
    assert grammar_share(False) < 0.75 and grammar_share(True) > 0.8


def test_judge_report_per_aspect_against_the_human_ceiling():
    judge = tiny_judge()
    prompt = reviews.make_prompt("soup")
    comparisons = [
        {"prompt": prompt, "a": "the soup was lovely.", "b": "i hated the soup.", "principle": SENTIMENT, "prefers_a": 1},
        {"prompt": prompt, "a": "i hated the soup.", "b": "the soup was lovely.", "principle": SENTIMENT, "prefers_a": 1},
        {"prompt": prompt, "a": "the soup was warm.", "b": "soup the was warm.", "principle": GRAMMAR, "prefers_a": 0},
    ]
    report = J.judge_report(judge, comparisons)
    assert report["comparisons"] == 3 and set(report["aspects"]) == {"sentiment", "grammar"}
    p_ab, p_ba = J.judge_both_orders(judge, *([c[k] for c in comparisons] for k in ("principle", "prompt", "a", "b")))
    labels = torch.tensor([1, 1, 0])
    assert report["human_label_accuracy"] == pytest.approx(float(((p_ab > 0.5).long() == labels).double().mean()), abs=1e-4)
    assert report["flip_rate"] == pytest.approx(J.position_bias(p_ab, p_ba)["flip_rate"], abs=1e-4)
    sentiment = report["aspects"]["sentiment"]
    # each sentiment pair differs by 4 (2 vs -2): the T = 1 human is right with sigma(4)
    assert sentiment["n"] == 2 and sentiment["human_gold_agreement"] == pytest.approx(1 / (1 + math.exp(-4)), abs=1e-4)
    swap = J.swap_averaged(p_ab, p_ba)[:2]
    assert sentiment["swap_judge_gold_agreement"] == pytest.approx(
        J.judge_gold_agreement(swap, torch.tensor([2.0, -2.0]), torch.tensor([-2.0, 2.0])), abs=1e-4)
    assert report["aspects"]["grammar"]["human_gold_agreement"] == pytest.approx(1 / (1 + math.exp(-1)), abs=1e-4)
