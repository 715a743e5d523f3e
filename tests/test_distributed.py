"""distributed.py: the package's losses under torch.distributed (gloo on CPU), launched with torchrun."""
import os
import signal
import sys
import time
import uuid
from pathlib import Path

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


def _processes_with(marker: str) -> list[int]:
    """Pids of the processes whose command line holds marker (psutil if installed, else /proc)."""
    try:
        import psutil
    except ImportError:
        return [int(d.name) for d in Path("/proc").iterdir()
                if d.name.isdigit() and marker.encode() in _read_or_empty(d / "cmdline")]
    return [p.pid for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]


def _read_or_empty(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:            # the process ended meanwhile
        return b""


def _assert_none_left(marker: str) -> None:
    """Nothing with marker in its command line runs a few seconds on; whatever does is killed (a failing test must
    not leave a hung torchrun behind) and the test fails."""
    deadline = time.monotonic() + 5
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _processes_with(marker)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, f"processes left running: {left}"


def _rank_script(folder: Path, body: str) -> Path:
    """A worker script for torchrun whose file name is a marker no other process holds."""
    script = folder / f"rank_script_{uuid.uuid4().hex}.py"
    script.write_text("import atexit, os, sys, time\nrank = int(os.environ['RANK'])\n" + body)
    return script


needs_proc = pytest.mark.skipif(not Path("/proc").is_dir() and "psutil" not in sys.modules,
                                reason="finding leftover processes needs /proc or psutil")


@needs_proc
def test_a_hung_rank_fails_the_launch_at_its_timeout_and_leaves_no_process(tmp_path):
    script = _rank_script(tmp_path, "if rank == 1:\n    time.sleep(600)\n")
    start = time.monotonic()
    try:
        with pytest.raises(TimeoutError, match="did not finish within 20 s"):
            distributed._launch([[distributed._torchrun(), "--standalone", "--nproc_per_node=2", str(script)]],
                                tmp_path / "out.json", timeout=20)
        assert time.monotonic() - start < 20 + 15
    finally:
        _assert_none_left(script.name)


@needs_proc
def test_a_node_that_fails_before_joining_fails_the_launch_at_once_with_its_error(tmp_path):
    marker = f"node0_{uuid.uuid4().hex}"
    node0 = [distributed._torchrun(), "--nnodes=2", "--nproc_per_node=1", "--node_rank=0", "--master_addr=127.0.0.1",
             f"--master_port={distributed._free_port()}", "-m", "minirlhf.distributed", "--steps", "1",
             "--out", str(tmp_path / f"{marker}.json")]
    node1 = [sys.executable, "-c", "import sys; sys.exit('node 1 cannot start: no such interface')"]
    start = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match="(?s)launcher 2 of 2.*node 1 cannot start: no such interface"):
            distributed._launch([node0, node1], tmp_path / f"{marker}.json", timeout=60)
        assert time.monotonic() - start < 30
    finally:
        _assert_none_left(marker)


@needs_proc
def test_the_failing_rank_s_own_error_is_shown_however_much_follows_it(tmp_path):
    """What follows a rank's traceback (teardown warnings, torchrun's own traceback and report) pushed it out of the
    last 3000 characters of the output, which were all the error showed."""
    script = _rank_script(tmp_path, "if rank == 1:\n"
                                    "    atexit.register(lambda: sys.stderr.write('[W teardown] a warning\\n' * 200))\n"
                                    "    raise ValueError('rank 1 broke: the batch has 7 rows')\n"
                                    "time.sleep(60)\n")
    try:
        with pytest.raises(RuntimeError) as error:
            distributed._launch([[distributed._torchrun(), "--standalone", "--nproc_per_node=2", str(script)]],
                                tmp_path / "out.json", timeout=120)
    finally:
        _assert_none_left(script.name)
    message = str(error.value)
    assert "ValueError: rank 1 broke: the batch has 7 rows" in message and "Root Cause" in message
    assert len(message) < 6000


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
