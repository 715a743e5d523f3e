"""exercises/part1.py: every check of notebooks 01-05 accepts right answers and rejects plausible mistakes."""

import pytest
import torch
import torch.nn.functional as F

from minirlhf import exercises as ex
from minirlhf import losses, preferences
from minirlhf.advantages import discounted_returns
from minirlhf.exercises.part1 import reference_attention, reference_next_token_loss
from conftest import stub


def returns_forward(r, gamma):
    out, running = torch.zeros_like(r), 0.0
    for t in range(len(r)):
        running = r[t] + gamma * running
        out[t] = running
    return out


def attention_no_mask(q, k, v):
    return torch.softmax(q @ k.transpose(-2, -1) / q.size(-1) ** 0.5, dim=-1) @ v


def attention_no_scale(q, k, v):
    T = q.size(-2)
    s = (q @ k.transpose(-2, -1)).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return torch.softmax(s, -1) @ v


def attention_upper(q, k, v):
    T = q.size(-2)
    s = (q @ k.transpose(-2, -1) / q.size(-1) ** 0.5).masked_fill(torch.ones(T, T, dtype=torch.bool).tril(-1), float("-inf"))
    return torch.softmax(s, -1) @ v


def loss_no_shift(logits, tokens):
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), tokens.reshape(-1))


def loss_unstable(logits, tokens):
    probs = torch.softmax(logits[:, :-1], -1)
    return -torch.log(probs.gather(-1, tokens[:, 1:, None])).mean()


def mask_includes_prompt(tokens, prompt_lengths):
    return tokens != 0


def mask_off_by_one(tokens, prompt_lengths):
    return (torch.arange(tokens.size(1))[None] > prompt_lengths[:, None]) & (tokens != 0)


def mask_keeps_pad(tokens, prompt_lengths):
    return torch.arange(tokens.size(1))[None] >= prompt_lengths[:, None]


def reinforce_wrong_sign(lp, r, b):
    return (lp * (r - b)).mean()


def reinforce_no_detach(lp, r, b):
    return -(lp * (r - b)).mean()


def reinforce_no_baseline(lp, r, b):
    return -(lp * r).mean()


def bayes_mean_p(a, b, t):
    return float(torch.sigmoid((a - b) / t).mean())


def bayes_no_temperature(a, b, t):
    p = torch.sigmoid(a - b)
    return float(torch.maximum(p, 1 - p).mean())


CASES = [
    (ex.check_discounted_returns, discounted_returns,
     [(returns_forward, "forward in time"), (lambda r, g: r.clone(), "expected")]),
    (ex.check_reinforce_loss, losses.reinforce_loss,
     [(reinforce_wrong_sign, "sign"), (reinforce_no_baseline, "baseline"), (reinforce_no_detach, "detach")]),
    (ex.check_bayes_optimal_accuracy, preferences.bayes_optimal_accuracy,
     [(bayes_mean_p, "max(p, 1 - p)"), (bayes_no_temperature, "temperature")]),
    (ex.check_causal_attention, reference_attention,
     [(attention_no_mask, "sees the future"), (attention_no_scale, "sqrt"), (attention_upper, "wrong way round")]),
    (ex.check_next_token_loss, reference_next_token_loss,
     [(loss_no_shift, "no shift"), (loss_unstable, "log_softmax")]),
    (ex.check_sft_loss_mask, losses.sft_loss_mask,
     [(mask_includes_prompt, "prompt is not masked"), (mask_off_by_one, "off by one"), (mask_keeps_pad, "padding")]),
]


@pytest.mark.parametrize("check,reference,wrongs", CASES, ids=[c[0].__name__ for c in CASES])
def test_check_accepts_reference_falls_back_on_stub_and_rejects_mistakes(check, reference, wrongs, capsys):
    assert check(reference) is reference
    assert "correct" in capsys.readouterr().out
    fallback = check(stub)
    assert fallback is not stub
    assert "not implemented yet" in capsys.readouterr().out
    for wrong, hint in wrongs:
        with pytest.raises(ex.ExerciseError, match=hint.replace("(", r"\(").replace(")", r"\)")):
            check(wrong)
