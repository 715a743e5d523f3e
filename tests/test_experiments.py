"""The experiment commands whose results ship in data/results (run shortened here)."""
import pytest
import torch

from minirlhf import experiments, zoo
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


def test_a_short_rm_sweep_measures_every_row():
    results = experiments.rm_sweep(n_pairs=(32, 64), layers=(1, 4), quick=True, log=lambda line: None)
    assert [r["n_pairs"] for r in results["by_pairs"]] == [32, 64]
    assert [r["trunk"] for r in results["by_size"]] == ["SFT, 1 layer", "SFT, 4 layers", "random init, 4 layers"]
    assert results["by_size"][1]["ratio"] == results["by_pairs"][-1]["ratio"]      # reused, not retrained
    for row in results["by_pairs"] + results["by_size"]:
        assert 0.5 < row["bayes_ceiling"] < 1 and 0 < row["ratio"] <= 1.0001 and row["steps"] == 10


def test_shipped_rm_sweep_results():
    sweep = experiments.load_results("rm_sweep")
    assert sweep["command"] == "python -m minirlhf.experiments rm-sweep"
    best = sweep["by_pairs"][-1]
    shipped = zoo.read_manifest()["reviews-rm"]["test"]
    # the sweep's biggest run is the zoo recipe itself: same data, seed and steps
    assert best["n_pairs"] == 4000 and best["ratio"] == pytest.approx(shipped["ratio"], abs=2e-3)
    with pytest.raises(FileNotFoundError, match="experiments"):
        experiments.load_results("no_such_sweep")


def test_a_short_ppo_beta_sweep_keeps_plain_reproducible_histories():
    results = experiments.ppo_beta(betas=(0.1, 1.0), quick=True, log=lambda line: None)
    assert set(results["runs"]) == {"0.1", "1.0"}
    for beta, run in results["runs"].items():
        assert run["config"]["beta"] == float(beta) and run["config"]["target_kl"] is None
        assert len(run["proxy_reward"]) == len(run["gold"]) == len(run["kl"]) == 2
        assert not any(k.startswith("t_") for k in run)          # timings would make the file differ run to run
        assert isinstance(run["samples"][0][0]["response"], str)
