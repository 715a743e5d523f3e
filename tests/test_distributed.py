"""distributed.py: the package's losses under torch.distributed (gloo on CPU), launched with torchrun."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from minirlhf import distributed


def test_shards_are_contiguous_equal_and_keep_groups_whole():
    assert [distributed.shard(8, r, 2) for r in range(2)] == [slice(0, 4), slice(4, 8)]
    assert [distributed.shard_groups(4, 8, r, 2) for r in range(2)] == [slice(0, 16), slice(16, 32)]
    with pytest.raises(ValueError, match="divisible by the world size"):
        distributed.shard(7, 0, 2)
    assert len({distributed.rank_seed(0, r) for r in range(8)}) == 8 and distributed.rank_seed(5, 0) == 5


def test_global_token_mean_is_the_token_mean_in_one_process():
    per_token = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 5.0, 6.0, 7.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert float(distributed.global_token_mean(per_token, mask)) == pytest.approx(28 / 7)


def test_setup_outside_torchrun_says_how_to_launch(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(RuntimeError, match="torchrun --standalone"):
        distributed.setup()


def _torchrun(tmp_path, *extra):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found next to this Python (it ships with torch)")
    out = tmp_path / "ddp.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", *extra, "-m", "minirlhf.distributed",
                           "--out", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


@pytest.mark.slow
def test_two_processes_take_the_one_process_step_and_each_pitfall_is_measurably_wrong(tmp_path):
    result, stdout = _torchrun(tmp_path)
    runs = result["runs"]
    assert result["world_size"] == 2 and "max |parameters" in stdout
    for name in ("sft", "dpo", "grpo", "sft, FSDP2 (fully_shard)"):
        assert runs[name]["max_abs_diff"] < 1e-6 and runs[name]["max_abs_update"] > 1e-2, (name, runs[name])
    for name in ("sft, local token counts (pitfall)", "grpo, local token counts (pitfall)",
                 "grpo, groups split over ranks (pitfall)"):
        assert runs[name]["max_abs_diff"] > 1e-3, (name, runs[name])


@pytest.mark.slow
def test_two_nodes_on_loopback_run_the_same_command(tmp_path):
    """--nnodes=2: two torchrun launchers (here both on this machine, one process each) meet at a master address."""
    import socket
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found next to this Python (it ships with torch)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen([torchrun, "--nnodes=2", "--nproc_per_node=1", f"--node_rank={rank}",
                               "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "minirlhf.distributed",
                               "--out", str(tmp_path / f"node{rank}.json")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for rank in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), [err[-2000:] for _, err in outputs]
    runs = json.loads((tmp_path / "node0.json").read_text())["runs"]
    assert not (tmp_path / "node1.json").exists()               # only global rank 0 writes
    assert runs["dpo"]["max_abs_diff"] < 1e-6 and runs["grpo, groups split over ranks (pitfall)"]["max_abs_diff"] > 1e-3
