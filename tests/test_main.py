"""__main__.py: one command line for the course tooling, `python -m minirlhf TOOL [ARGS...]`."""
import importlib
import subprocess
import sys

import pytest

from minirlhf.__main__ import TOOLS, main


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_tool_has_a_main_that_answers_help(tool, capsys):
    module = importlib.import_module(f"minirlhf.course.{TOOLS[tool]}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    assert f"python -m minirlhf {tool}" in capsys.readouterr().out


def test_no_tool_or_an_unknown_one_prints_the_tools_and_fails(capsys):
    assert main([]) == 2 and main(["train"]) == 2
    assert "zoo" in capsys.readouterr().err
    assert main(["--help"]) == 0


def test_the_module_runs_a_tool():
    out = subprocess.run([sys.executable, "-m", "minirlhf", "zoo", "list"], capture_output=True, text=True, check=True)
    assert "reviews-ppo" in out.stdout and "(from reviews-sft, reviews-rm)" in out.stdout
