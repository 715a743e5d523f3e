"""Smoke tests of the benchmark: it runs and prints its table. Timings are never asserted."""
import subprocess
import sys

import pytest

from minirlhf.course.bench import BENCHMARKS, format_table, main


@pytest.mark.slow
def test_quick_bench_prints_the_table():
    # One thread: with two, a machine busy with other work can slow tiny ops down a hundredfold.
    out = subprocess.run([sys.executable, "-m", "minirlhf", "bench", "--quick", "--threads", "1"], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    for line in ["[matmul]", "dense fp32 matmul", "[train]", "tokens/s", "GFLOP/s", "of matmul",
                 "[generate]", "KV cache speedup", "greedy outputs match",
                 "[reward]", "ms/step", "of the Bayes ceiling", "[ppo]", "PPO iteration", "generate", "update",
                 "[grpo]", "GRPO step", "score",
                 "[dpo]", "DPO step", "reference log-probs precomputed", "precomputing saves"]:
        assert line in out, f"missing {line!r} in:\n{out}"
    matches = [line for line in out.splitlines() if "greedy outputs match" in line]
    assert len(matches) == 2 and all(" yes " in line for line in matches), out


@pytest.mark.slow
def test_only_runs_one_section(capsys):
    main(["--quick", "--only", "matmul", "--default-malloc", "--seconds", "0"])
    out = capsys.readouterr().out
    assert "[matmul]" in out and "[train]" not in out
    assert set(BENCHMARKS) >= {"matmul", "train", "generate", "reward", "ppo", "grpo"}


def test_format_table_aligns_columns():
    lines = format_table([("a", "1 x", "note"), ("longer name", "22 x", "")]).splitlines()
    assert lines == ["a             1 x  note", "longer name  22 x"]
