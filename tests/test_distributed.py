"""distributed.py: the package's losses under torch.distributed (gloo on CPU), launched with torchrun."""
import pytest
import torch

from minirlhf import distributed


def test_shards_are_contiguous_equal_and_keep_groups_whole():
    assert [distributed.shard(8, r, 2) for r in range(2)] == [slice(0, 4), slice(4, 8)]
    assert [distributed.shard_groups(4, 8, r, 2) for r in range(2)] == [slice(0, 16), slice(16, 32)]
    with pytest.raises(ValueError, match="divisible by the world size"):
        distributed.shard(7, 0, 2)
    assert len({distributed.rank_seed(0, r) for r in range(8)}) == 8 and distributed.rank_seed(5, 0) == 5


def test_num_items_is_the_token_count_in_one_process_and_the_losses_take_it():
    from minirlhf.losses import aggregate_token_losses, next_token_loss
    per_token = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 5.0, 6.0, 7.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert float(distributed.num_items(mask)) == 7
    assert float(aggregate_token_losses(per_token, mask, "dapo", num_items=distributed.num_items(mask))) == pytest.approx(28 / 7)
    assert float(aggregate_token_losses(per_token, mask, "dapo", num_items=14.0)) == pytest.approx(2.0)
    logits, tokens = torch.randn(2, 4, 5), torch.randint(0, 5, (2, 4))
    assert float(next_token_loss(logits, tokens, mask, num_items=6.0)) == pytest.approx(
        float(next_token_loss(logits, tokens, mask)) * mask[:, 1:].sum().item() / 6.0)


def test_the_same_seed_on_every_rank_draws_every_sample_twice_and_rank_seed_does_not():
    """Counted, not assumed: a tiny untrained GPT's answers almost never repeat by chance."""
    for world in (2, 4):
        result = distributed.seed_pitfall(world=world, num_generations=8)
        same, seeded = result["same seed"], result["rank_seed"]
        assert same["samples"] == seeded["samples"] == 16 * 8
        assert same["duplicated"] == 1.0 and same["distinct_per_group"] == 8 / world
        assert seeded["duplicated"] < 0.1 and seeded["distinct_per_group"] > 7


def test_seed_pitfall_counts_repeats_a_model_draws_by_chance_and_the_group_statistics():
    from minirlhf.model import GPT, GPTConfig
    from minirlhf.tokenizer import TOKENIZER

    class Fixed(GPT):            # always answers "7" then EOS: every sample repeats, whatever the seed
        def forward(self, tokens, attention_mask=None, cache=None):
            logits = torch.full((*tokens.shape, TOKENIZER.vocab_size), -1e4)
            last = tokens[:, -1:]
            logits[..., TOKENIZER.encode("7")[0]] = 0.0
            logits[..., TOKENIZER.eos_id] = torch.where(last == TOKENIZER.encode("7")[0], 1e4, -1e4).float()
            return logits

    model = Fixed(GPTConfig(vocab_size=TOKENIZER.vocab_size, context_length=32, d_model=8, n_layers=1, n_heads=1))
    result = distributed.seed_pitfall(model, ["q: 3+4\na: ", "q: 1+1\na: "], lambda p, a: float(a == "7"), world=2, num_generations=4)
    for run in ("same seed", "rank_seed"):
        assert result[run]["duplicated"] == 1.0 and result[run]["distinct"] == 2
        assert result[run]["frac_reward_zero_std"] == 1.0 and result[run]["reward_std"] == 0.0
    with pytest.raises(ValueError, match="split num_generations evenly"):
        distributed.seed_pitfall(world=3, num_generations=8)


def test_setup_outside_torchrun_says_how_to_launch(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(RuntimeError, match="torchrun --standalone"):
        distributed.setup()


def test_a_failed_launch_raises_with_the_workers_error(tmp_path):
    launch = [distributed._torchrun(), "--standalone", "--nproc_per_node=1", "-m", "minirlhf.distributed"]
    with pytest.raises(RuntimeError, match="(?s)torchrun failed: .*unrecognized arguments: --bogus"):
        distributed._launch([launch + ["--bogus"]], tmp_path / "out.json", timeout=120)
    with pytest.raises(RuntimeError, match="wrote no"):
        distributed._launch([launch + ["--steps", "0"]], tmp_path / "none.json", timeout=120)   # no --out: nothing written


@pytest.mark.slow
def test_two_processes_take_the_one_process_step_and_each_pitfall_is_measurably_wrong():
    result = distributed.run_standalone()
    runs = result["runs"]
    assert result["world_size"] == 2
    for name in ("sft", "dpo", "grpo", "sft, FSDP2 (fully_shard)"):
        assert runs[name]["max_abs_diff"] < 1e-6 and runs[name]["max_abs_update"] > 1e-2, (name, runs[name])
        assert [r["rank"] for r in runs[name]["ranks"]] == [0, 1]
    for name in ("sft, local token counts (pitfall)", "grpo, local token counts (pitfall)",
                 "grpo, groups split over ranks (pitfall)"):
        assert runs[name]["max_abs_diff"] > 1e-3, (name, runs[name])


@pytest.mark.slow
def test_two_nodes_on_loopback_run_the_same_command():
    """--nnodes=2: two torchrun launchers (here both on this machine, one process each) meet at a master address."""
    result = distributed.run_nodes(2)
    assert result["world_size"] == 2 and result["files_written"] == ["node0.json"]    # only global rank 0 writes
    runs = result["runs"]
    assert runs["dpo"]["max_abs_diff"] < 1e-6 and runs["grpo, groups split over ranks (pitfall)"]["max_abs_diff"] > 1e-3
