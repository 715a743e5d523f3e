"""exercises/engine.py: what every check does (stub fallback, messages, RNG, summary)."""

import pytest
import torch

from minirlhf import exercises as ex
from minirlhf import losses
from minirlhf.exercises.part1 import reference_attention
from conftest import stub


def test_check_does_not_touch_global_rng():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    ex.check_causal_attention(reference_attention)
    assert torch.equal(before, torch.get_rng_state())


def test_check_messages_for_shape_none_and_non_callable():
    with pytest.raises(ex.ExerciseError, match="shape"):
        ex.check_causal_attention(lambda q, k, v: q[..., :1])
    with pytest.raises(ex.ExerciseError, match="return"):
        ex.check_discounted_returns(lambda r, g: None)
    with pytest.raises(TypeError, match="function itself"):
        ex.check_discounted_returns(torch.zeros(3))


def test_summary_lists_what_remains(capsys):
    ex.check_sft_loss_mask(losses.sft_loss_mask)
    ex.check_next_token_loss(stub)
    ex.exercise_summary(["sft_loss_mask", "next_token_loss"])
    out = capsys.readouterr().out
    assert "1 of 2 exercises pass" in out and "next_token_loss" in out.split("Still to do:")[1]
