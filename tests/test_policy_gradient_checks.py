"""Notebook 09's exercise checks accept the reference, fall back on a stub and reject plausible mistakes."""
import pytest
import torch
import torch.nn.functional as F

from conftest import assert_check_behaves
from minirlhf import exercises as ex


def token_logp(logits, targets, temperature):
    return F.log_softmax(logits / temperature, -1).gather(-1, targets[..., None]).squeeze(-1)


def right_logprobs(logits, targets, mask, temperature):
    return torch.where(mask, token_logp(logits, targets, temperature), 0.0).sum(1)


CHECKS = [
    (ex.check_sequence_logprobs, right_logprobs, [
        (lambda lg, t, m, T: right_logprobs(lg / T, t, m, 1.0 / T), "temperature is missing"),
        (lambda lg, t, m, T: token_logp(lg, t, T).sum(1), "padding after EOS"),
        (lambda lg, t, m, T: right_logprobs(lg, t, m, T) / m.sum(1), "not their mean"),
        (lambda lg, t, m, T: right_logprobs(lg, t, m, 1 / T), "divide them"),
        (lambda lg, t, m, T: (token_logp(lg, t, T) * m).sum(1), "nan"),
        (lambda lg, t, m, T: torch.where(m, token_logp(lg, t, T), 0.0), "shape"),
    ]),
    (ex.check_leave_one_out_baseline, lambda G: (G.sum() - G) / (len(G) - 1), [
        (lambda G: G.mean().expand_as(G), "plain batch mean"),
        (lambda G: (G.sum() - G) / len(G), "B - 1"),
        (lambda G: G - (G.sum() - G) / (len(G) - 1), "not the advantage"),
        (lambda G: torch.zeros_like(G), "expected"),
    ]),
]


@pytest.mark.parametrize("check,right,wrongs", CHECKS, ids=[c[0].__name__ for c in CHECKS])
def test_checks_accept_right_answers_fall_back_on_stub_and_reject_mistakes(check, right, wrongs, capsys):
    assert_check_behaves(check, right, wrongs, capsys)