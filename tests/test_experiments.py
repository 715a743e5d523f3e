"""course/experiments.py: the experiments behind the shipped results (quick runs)."""

import pytest
import torch

from minirlhf import zoo
from minirlhf.course import experiments
from minirlhf.model import GPT, GPTConfig
from minirlhf.utils import seed_everything


def test_truncated_policy_keeps_the_first_layers_exactly():
    seed_everything(0)
    gpt = GPT(GPTConfig(vocab_size=57, context_length=16, d_model=32, n_layers=3, n_heads=2))
    small = experiments.truncated_policy(gpt, 2)
    assert small.config.n_layers == 2 and len(small.blocks) == 2
    for name, value in small.state_dict().items():
        assert torch.equal(value, gpt.state_dict()[name]), name
    with pytest.raises(ValueError, match="between 1 and 3"):
        experiments.truncated_policy(gpt, 4)


def test_rm_steps_two_epochs_with_a_floor():
    assert experiments.rm_steps(4000) == 250
    assert experiments.rm_steps(250) == 100


@pytest.mark.slow
def test_a_short_rm_sweep_measures_every_row():
    results = experiments.rm_sweep(n_pairs=(32, 64), layers=(1, 4), quick=True, log=lambda line: None)
    assert [r["n_pairs"] for r in results["by_pairs"]] == [32, 64]
    assert [r["trunk"] for r in results["by_size"]] == ["SFT, 1 layer", "SFT, 4 layers", "random init, 4 layers"]
    assert results["by_size"][1]["ratio"] == results["by_pairs"][-1]["ratio"]      # reused, not retrained
    for row in results["by_pairs"] + results["by_size"]:
        assert 0.5 < row["bayes_ceiling"] < 1 and 0 < row["ratio"] <= 1.0001 and row["steps"] == 10


def test_shipped_rm_sweep_results():
    sweep = zoo.load_results("rm_sweep")
    assert sweep["command"] == "python -m minirlhf experiments rm-sweep"
    best = sweep["by_pairs"][-1]
    shipped = zoo.read_manifest()["reviews-rm"]["test"]
    # the sweep's biggest run is the zoo recipe itself: same data, seed and steps
    assert best["n_pairs"] == 4000 and best["ratio"] == pytest.approx(shipped["ratio"], abs=2e-3)
    with pytest.raises(FileNotFoundError, match="experiments"):
        zoo.load_results("no_such_sweep")


@pytest.mark.slow
def test_a_short_ppo_beta_sweep_keeps_plain_reproducible_histories():
    results = experiments.ppo_beta(betas=(0.1, 1.0), quick=True, log=lambda line: None)
    assert set(results["runs"]) == {"0.1", "1.0"}
    for beta, run in results["runs"].items():
        assert run["config"]["beta"] == float(beta) and run["config"]["target_kl"] is None
        assert len(run["proxy_reward"]) == len(run["gold"]) == len(run["kl"]) == 2
        assert not any(k.startswith("t_") for k in run)          # timings would make the file differ run to run
        assert isinstance(run["samples"][0][0]["response"], str)


@pytest.mark.slow
def test_a_quick_online_rlhf_experiment_compares_one_round_with_two():
    results = experiments.online_rlhf(quick=True, log=lambda line: None)
    assert set(results["runs"]) == {"1 rounds, seed 0", "2 rounds, seed 0"}
    for run in results["runs"].values():
        k = run["n_rounds"]
        assert len(run["rounds"]) == k and run["rounds"][-1]["labels"] == results["label_budget"]
        assert run["ppo"]["round"][-1] == k - 1 and len(run["ppo"]["gold"]) == results["iterations"]


def test_best_of_n_curve_starts_at_zero_rises_in_proxy_and_bounds_the_kl():
    g = torch.Generator().manual_seed(0)
    proxy = torch.randn(5, 16, generator=g)
    gold = proxy + torch.randn(5, 16, generator=g)
    curve = experiments.best_of_n_curve(proxy, gold, (1, 2, 4, 16))
    assert curve["proxy_gain"][0] == pytest.approx(0, abs=1e-4) and curve["gold_gain"][0] == pytest.approx(0, abs=1e-4)
    assert curve["kl_exact"][0] == pytest.approx(0, abs=1e-4)
    assert all(a < b for a, b in zip(curve["proxy_gain"], curve["proxy_gain"][1:]))
    assert all(e <= f + 1e-4 for e, f in zip(curve["kl_exact"], curve["kl_formula"]))
    # n = pool size: always the pool's best
    assert curve["proxy_gain"][-1] == pytest.approx(float(proxy.max(1).values.mean() - proxy.mean()), abs=1e-4)
    # the expected gold itself, and its standard error over the 5 prompts
    per_prompt = torch.stack([row_g[row_p.argmax()] for row_p, row_g in zip(proxy, gold)])
    assert curve["gold"][-1] == pytest.approx(float(per_prompt.mean()), abs=1e-4)
    assert curve["gold_se"][-1] == pytest.approx(float(per_prompt.std() / 5 ** 0.5), abs=1e-4)
    assert curve["gold_gain"][-1] == pytest.approx(curve["gold"][-1] - float(gold.mean()), abs=2e-4)


@pytest.mark.slow
def test_a_quick_reward_hacking_run_records_best_of_n_and_ppo_for_each_rm():
    results = experiments.reward_hacking(quick=True, log=lambda line: None)
    assert set(results["rms"]) == {"64", "4000"}
    for row in results["rms"].values():
        assert 0 < row["test"]["ratio"] <= 1.05
        assert row["best_of_n"]["n"] == [1, 2, 4]
        run = row["ppo"]["0"]
        assert len(run["proxy_reward"]) == len(run["gold"]) == len(run["kl"]) == 2
        assert run["config"]["beta"] == results["beta"]


def test_response_stats_scores_every_response_with_both_verifiers():
    from minirlhf.tasks import arithmetic
    prompt = arithmetic.make_prompt(arithmetic.Problem(23, 48))
    stats = experiments.response_stats([prompt] * 4, ["71", "61 71", "61", "7x1x71"])
    assert stats == {"exact": 0.25, "lenient": 0.75, "numbers": 1.75, "multi": 0.5, "chars": 3.75}


@pytest.mark.slow
def test_a_quick_grpo_hack_scores_every_run_with_both_verifiers():
    results = experiments.grpo_hack(quick=True, log=lambda line: None)
    assert set(results["runs"]) == {"arithmetic-sft, lenient", "hedged, lenient", "hedged, exact"}
    assert [r["temperature"] for r in results["sft_alone"]["long_samples"]] == [1.0, 1.5, 2.0]
    for run in results["runs"].values():
        assert len(run["exact"]) == len(run["lenient"]) == len(run["numbers"]) == len(run["completion_length"]) == 2
        assert all(e <= l for e, l in zip(run["exact"], run["lenient"]))      # exact right is lenient right
        assert len(run["greedy"]) == len(run["greedy_steps"]) == 3
        assert len(run["samples_before"]) == len(run["samples_after"]) == 4
    assert 0 <= results["hedged_sft"]["sampled"]["multi"] <= 1

def test_length_stats_splits_right_and_wrong_answers_and_their_excess_length():
    from minirlhf.tasks import arithmetic
    prompt = arithmetic.make_prompt(arithmetic.Problem(47, 38))           # its demonstration has 18 characters
    stats = experiments.length_stats([prompt] * 3, ["7+8=15 4+3+1=8 >85", ">85", "7+8=15 4+3+1=8 >75 >7"])
    assert stats == {"accuracy": 2 / 3, "length_right": 10.5, "excess_right": -7.5, "length_wrong": 21.0,
                     "excess_wrong": 3.0}
    assert experiments.length_stats([prompt], [">85"])["length_wrong"] is None


@pytest.mark.slow
def test_a_quick_grpo_length_measures_right_and_wrong_answers_per_step():
    results = experiments.grpo_length(quick=True, log=lambda line: None)
    assert set(results["runs"]) == set(experiments.GRPO_LENGTH_METHODS)
    assert results["steps_sft"]["context_length"] == 48
    for run in results["runs"].values():
        assert len(run["accuracy"]) == len(run["excess_wrong"]) == len(run["truncated"]) == 2
        assert 0 <= run["greedy_after"]["accuracy"] <= 1

@pytest.mark.slow
def test_a_quick_dpo_frontier_traces_every_run_and_online_dpo():
    results = experiments.dpo_frontier(quick=True, log=lambda line: None)
    assert set(results["runs"]) == {"dpo beta=0.1 seed=0", "rpo beta=0.1 seed=0", "cdpo beta=0.1 seed=0",
                                    "online beta=0.1 seed=0"}
    plain = results["runs"]["dpo beta=0.1 seed=0"]
    assert plain["eval/step"] == [0, 1, 2] and plain["eval/kl"][0] == 0.0 and len(plain["loss"]) == 2
    assert results["runs"]["cdpo beta=0.1 seed=0"]["config"]["label_smoothing"] == results["label_noise_rate"] > 0
    assert len(results["runs"]["online beta=0.1 seed=0"]["rounds"]) == 1
    bon = results["best_of_n"]
    assert bon["n"] == [1, 2, 4] and bon["kl_exact"][0] == 0.0 and len(bon["gold_se"]) == 3


def test_shipped_dpo_frontier_results():
    results = zoo.load_results("dpo_frontier")
    runs = results["runs"]
    assert len(results["betas"]) >= 3 and len(results["seeds"]) >= 3
    assert {f"dpo beta={b} seed={s}" for b in results["betas"] for s in results["seeds"]} <= set(runs)
    for name, run in runs.items():
        if "eval/gold" in run:   # every offline run starts at the SFT policy and moves away from it
            assert run["eval/kl"][0] == 0.0 and run["eval/kl"][-1] > 0.2, name
    settings, rounds = results["settings"], runs["online beta=0.1 seed=0"]["rounds"]
    assert rounds[-1]["labels"] == settings["steps"] * settings["batch_size"]     # as many labels as one offline run
    bon = results["best_of_n"]
    assert bon["kl_exact"] == sorted(bon["kl_exact"]) and all(se > 0 for se in bon["gold_se"])


@pytest.mark.slow
def test_a_quick_rlaif_run_trains_every_reward_model_and_ppo_with_and_without_a_principle():
    results = experiments.rlaif(quick=True, log=lambda line: None)
    assert set(results["reward_models"]) == {"human", "human x2", "ai sample", "ai sum", "ai sample x2", "ai sum x2",
                                             "ai sum without grammar x2"}
    assert results["reward_models"]["ai sum x2"]["pairs"] == 32
    assert all(0 <= row["gold_order_accuracy"] <= 1 for row in results["reward_models"].values())
    assert set(results["labels"]) == {"human", "ai sample", "ai sum", "ai sum without grammar"}
    assert set(results["ppo"]) == {"0.3", "0.03"}
    assert 0 <= results["sft_policy"]["off_topic"] <= 1 and len(results["sft_policy"]["samples"]) == 3
    for beta, runs in results["ppo"].items():
        assert set(runs) == {"ai sum x2", "ai sum without grammar x2"}
        for name, run in runs.items():
            assert 0 <= run["off_topic"] <= 1 and run["grammar"] >= 0 and len(run["samples"]) == 3, name
            assert len(run["history"]["gold"]) == 2 and run["history"]["beta"][0] == float(beta), name
    with pytest.raises(ValueError, match="no principle about 'politeness'"):
        experiments.rlaif(quick=True, missing="politeness", log=lambda line: None)


def test_tool_buckets_are_the_kinds_they_say_and_bucket_of_agrees():
    buckets = experiments.tool_buckets(30, seed=1)
    assert {name: len(prompts) for name, prompts in buckets.items()} == {
        "products": 30, "one-digit sums": 30, "two-digit sums": 30}
    for name, prompts in buckets.items():
        assert {experiments.bucket_of(p) for p in prompts} == {name}


@pytest.mark.slow
def test_a_quick_tool_rl_run_reports_every_bucket_before_and_after_and_the_unmasked_run():
    results = experiments.tool_rl(quick=True, log=lambda line: None)
    assert set(results["runs"]) == {"c = 0.05", "c = 0.5", "c = 0.05, tool output not masked"}
    keys = {"greedy_accuracy", "greedy_call_rate", "accuracy", "call_rate", "p_alone", "q_call", "tool_output_logprob", "n"}
    for report in [results["sft"]] + [run["after"] for run in results["runs"].values()]:
        assert set(report) == {"products", "one-digit sums", "two-digit sums"}
        assert all(set(row) == keys and 0 <= row["q_call"] <= 1 and row["tool_output_logprob"] < 0 for row in report.values())
    assert results["sft"]["products"]["q_call"] > 0.9 and results["sft"]["products"]["p_alone"] < 0.1
    for run in results["runs"].values():
        assert len(run["by_bucket"]["products"]["call_rate"]) == len(run["reward"]) == 2
    assert set(results["seeds"]) == {"0", "1"} and set(results["seeds"]["1"]) == set(results["runs"])
    assert results["seeds"]["0"]["c = 0.5"] == results["runs"]["c = 0.5"]["after"]


@pytest.mark.slow
def test_a_quick_rm_learners_run_scores_every_learner():
    results = experiments.rm_learners(quick=True, log=lambda line: None)
    assert list(results["learners"]) == list(experiments.capstone.LEARNERS)
    for row in results["learners"].values():
        assert 0 <= row["gold_agreement"] <= 1 and 0 <= row["user_agreement"] <= 1
    assert results["n_train_ratings"] == 200 and results["n_eval_pairs"] > 0


def test_shipped_rm_learners_results_rank_comparisons_first():
    results = zoo.load_results("rm_learners")
    agreement = {k: v["gold_agreement"] for k, v in results["learners"].items()}
    assert max(agreement, key=agreement.get) == "within-user pairs (BT)"
    assert results["learner_steps"] == 300 and results["n_eval_pairs"] > 3000


@pytest.mark.slow
def test_a_quick_capstone_run_reports_every_policy():
    results = experiments.capstone_lab(quick=True, log=lambda line: None)
    for card in (results["ppo_with_check"], results["ppo_without_check"]["card"], results["iterated"]["card"]):
        assert len(card["gold"]) == 2 and 0 <= card["violation_rate"][0] <= 1 and card["worst_intent"]
    assert len(results["ppo_without_check"]["violations"]) == 2 and len(results["best_of_16"]["gold_per_prompt"]) == 16
    assert results["iterated"]["new_ratings"] > 0 and len(results["ppo_minus_best_of_16"]) == 2


def test_shipped_capstone_results_say_what_notebook_17_says():
    results = zoo.load_results("capstone")
    sft_violations = results["ppo_with_check"]["sft_violation_rate"][0]
    assert results["ppo_without_check"]["card"]["violation_rate"][0] > 2 * sft_violations   # the bias, exploited
    assert results["ppo_without_check"]["card"]["gold"][0] < results["ppo_with_check"]["sft_gold"][0]
    assert set(results["seeds"]) == {"0", "1", "2"}
    beats = [s for s, row in results["seeds"].items() if row["minus_best_of_16"][0] - 2 * row["minus_best_of_16"][1] > 0]
    assert beats == ["1", "2"]                                   # seed 0, the zoo's, ties best-of-16
    assert all(row["violation_rate"][0] <= sft_violations for row in results["seeds"].values())
    assert results["variants"]["penalty 5, beta 0.05"]["card"]["violation_rate"][0] == 0.0


def test_pass_at_k_curve_brackets_the_mean_and_starts_at_pass_at_1():
    from minirlhf.course.rlvr import pass_at_k_curve

    curve = pass_at_k_curve([0, 4, 8, 2], n=8, ks=(1, 2, 8))
    assert curve["ks"] == [1, 2, 8]
    assert curve["mean"][0] == pytest.approx(14 / 32) and curve["mean"][-1] == pytest.approx(0.75)
    assert all(lo <= m <= hi for lo, m, hi in zip(curve["low"], curve["mean"], curve["high"]))
    assert curve["mean"] == sorted(curve["mean"])


@pytest.mark.slow
def test_a_quick_rlvr_run_sweeps_every_method_and_measures_pass_at_1_greedy_and_maj():
    from minirlhf.course.rlvr import METHODS, rlvr

    results = rlvr(processes=1, quick=True, log=lambda line: None)
    assert set(results["chosen_lr"]) == set(METHODS)
    assert set(results["runs"]) == {f"{m}, seed {s}" for m in METHODS for s in (0, 1)}
    for run in results["runs"].values():
        assert len(run["eval_pass1"]) == len(run["eval_greedy"]) == len(run["eval_samples_seen"])
        assert {"pass1", "greedy", "maj8", "counts"} <= set(run["final"])
    assert results["runs"]["DAPO, seed 0"]["clip_ratio"][-1] >= 0
    assert set(results["collapse"]) == {"beta 0", "beta 0.04"}
    assert results["arithmetic-sft"]["gradient_agreement"]["mean_cosine"] < 1


def test_past_the_edge_extends_the_grid_only_where_the_best_rate_sits_on_it():
    from minirlhf.course.rlvr import past_the_edge

    assert past_the_edge((1e-4, 2e-4, 4e-4), {1e-4: 0.5, 2e-4: 0.6, 4e-4: 0.7}) == 8e-4
    assert past_the_edge((3e-4, 1e-4, 1e-3), {1e-4: 0.7, 3e-4: 0.6, 1e-3: 0.1}) == pytest.approx(1e-4 / 3)
    assert past_the_edge((1e-4, 2e-4, 4e-4), {1e-4: 0.5, 2e-4: 0.8, 4e-4: 0.7}) is None
    assert past_the_edge((1e-4,), {1e-4: 0.5}) is None
