"""Notebook 19's task (tasks.long_arithmetic), its measures (course.thinking), and GRPO learning on it."""
import pytest

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


def test_step_curves_and_bucket_report_split_by_difficulty():
    from minirlhf.course.thinking import bucket_report, mean_se, step_curves
    easy, hard = L.make_prompt(Problem(3, 4)), P
    samples = [[{"prompt": easy, "response": "7", "reward": 1.0}, {"prompt": hard, "response": GOOD, "reward": 1.0},
                {"prompt": hard, "response": "13868", "reward": 0.0}]]
    curves = step_curves(samples)
    assert curves["easy"]["thinks"] == [0.0] and curves["hard"]["thinks"] == [0.5] and curves["hard"]["reward"] == [0.5]
    assert curves["medium"]["reward"] == [0.0]                # no medium sample this step
    report = bucket_report([easy, hard, hard], ["7", GOOD, "13868"])
    assert report["hard"] == {"n": 2, "accuracy": 0.5, "thinks": 0.5, "length": (len(GOOD) + 5) / 2}
    assert report["all"]["n"] == 3 and "medium" not in report
    assert mean_se([1.0, 2.0, 3.0]) == pytest.approx((2.0, (1 / 3) ** 0.5)) and mean_se([0.5]) == (0.5, 0.0)


def test_the_length_price():
    priced = L.make_reward(0.01)
    assert priced(P, "13878") == pytest.approx(0.95) and priced(P, GOOD) == pytest.approx(1 - 0.01 * len(GOOD))
    assert priced(P, "1") == pytest.approx(-0.01)
    with pytest.raises(ValueError):
        L.make_reward(-1.0)


@pytest.mark.slow
def test_greedy_modes_on_the_starting_policy():
    from minirlhf import zoo
    from minirlhf.course.thinking import greedy_responses
    model = zoo.load("think-sft")
    prompts = L.prompts(8, seed=3, digits=4)
    assert all(L.thinks(r) for r in greedy_responses(model, prompts, "think"))
    assert not any(L.thinks(r) for r in greedy_responses(model, prompts, "direct"))


@pytest.mark.slow
def test_thinking_experiment_quick_smoke():
    from minirlhf.course.thinking import thinking
    out = thinking(quick=True, log=lambda line: None)
    assert set(out["gap"]) == {"think-base", "think-sft"} and out["held_out_per_bucket"] == {"easy": 10, "medium": 10,
                                                                                            "hard": 10}
    assert [r["method"] for r in out["runs"]] == ["GRPO", "RFT", "distill", "GRPO + length cost", "GRPO + KL"]
    grpo, rft, distill, priced, kl = out["runs"]
    assert len(grpo["reward"]) == 2 and len(grpo["by_bucket"]["hard"]["thinks"]) == 2
    assert grpo["samples_seen"] == rft["samples_seen"] and distill["n_examples"] == sum(rft["kept"])
    assert set(out["sweep"]) == {"GRPO", "RFT", "distill"} and priced["lr"] == out["chosen_lr"]["GRPO"]
    assert set(out["summary"]) == {"GRPO", "RFT", "distill", "GRPO + length cost", "GRPO + KL"}


@pytest.mark.slow
def test_grpo_on_long_sums_raises_the_reward():
    from minirlhf import zoo
    from minirlhf.course.recipes import THINK_GRPO, THINK_SAMPLING
    from minirlhf.evaluate import correct_counts
    from minirlhf.grpo import GRPOConfig, train_grpo
    from minirlhf.utils import seed_everything

    def sampled_reward(model, prompts):
        return sum(correct_counts(model, prompts, L.reward, 4, max_new_tokens=L.MAX_RESPONSE_TOKENS, seed=5)) / (4 * len(prompts))

    seed_everything(0, threads=1)
    policy = zoo.load("think-sft")
    hard = L.prompts(32, seed=11, digits=4)
    before = sampled_reward(policy, hard)
    # lr 3e-4 (the experiment's larger rate) so that 12 steps of 8 hard prompts show it: 0.125 -> 0.46 measured
    config = GRPOConfig(**{**THINK_GRPO, **THINK_SAMPLING, "steps": 12, "prompts_per_step": 8, "lr": 3e-4, "seed": 0})
    train_grpo(policy, hard, L.reward, config)
    assert before < 0.2 and sampled_reward(policy, hard) > before + 0.2


def test_shipped_thinking_results_say_what_notebook_19_says():
    from minirlhf import zoo
    r = zoo.load_results("thinking")
    gap = r["gap"]["think-sft"]
    assert gap["direct"]["hard"]["accuracy"] <= 0.4 and gap["think"]["hard"]["accuracy"] >= 0.9
    s = r["summary"]
    assert s["GRPO"]["seeds"] == 3 and s["GRPO"]["hard"]["accuracy"][0] >= 0.9 and s["GRPO"]["hard"]["thinks"][0] >= 0.9
    assert s["GRPO"]["samples"][0] == s["RFT"]["samples"][0] == 60 * 16 * 8
    assert s["GRPO + length cost"]["hard"]["thinks"][0] < 0.05
    grpo = [run for run in r["runs"] if run["method"] == "GRPO"]
    assert all(run["final"]["faithfulness"]["right_answer_wrong_step"] == 0 for run in grpo)


def test_step_ends_and_verifier_targets():
    import torch
    from minirlhf.course.thinking import auc, best_of_n, majority_and_oracle, verifier_targets
    assert L.step_ends(GOOD) == [5, 11, 17, 24] and [GOOD[i] for i in L.step_ends(GOOD)] == ["8", "7", "8", "3"]
    assert L.step_ends("13878") == []
    bad = "<1+7=8 2+5=6 8+0=8 4+9=13 >13878"
    tokens, mask, where, labels = verifier_targets([P, P], [GOOD, bad], process=True)
    start = 1 + len(P)
    assert where[1].nonzero().squeeze(1).tolist() == [start + 5, start + 11, start + 17, start + 24, start + len(bad)]
    assert labels[1][where[1]].tolist() == [1.0, 0.0, 1.0, 1.0, 1.0]             # a wrong step, a right answer
    _, _, where_o, labels_o = verifier_targets([P], ["13868"], process=False)
    assert where_o.sum() == 1 and labels_o.sum() == 0 and where_o[0, start + 5]  # on EOS, after the 5 characters
    assert auc(torch.tensor([2.0, 1.0, 0.0]), torch.tensor([True, False, False])) == 1.0
    assert auc(torch.tensor([1.0, 1.0]), torch.tensor([True, False])) == 0.5
    cands = [["13868", GOOD, "1"]]
    assert best_of_n([P], cands, torch.tensor([0.0, 5.0, 1.0]), [1, 3]) == {"1": 0.0, "3": 1.0}
    assert majority_and_oracle([P], [["1", GOOD, "13878"]], [1, 3]) == {"majority": {"1": 0.0, "3": 1.0},
                                                                        "oracle": {"1": 0.0, "3": 1.0}}


@pytest.mark.slow
def test_thinking_rm_quick_smoke():
    from minirlhf.course.thinking import thinking_rm
    out = thinking_rm(quick=True, log=lambda line: None)
    assert out["train_candidates"] == 160 and set(out["outcome"]) == {"1", "2", "4"}
    assert out["outcome"]["1"] == out["process"]["1"] == out["oracle"]["1"]      # one candidate: nothing to choose
    assert 0.0 <= out["process_auc"] <= 1.0
