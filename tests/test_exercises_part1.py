"""exercises/part1.py: every check of notebooks 01-05 accepts right answers (the reference and one written
differently), falls back on a stub, and rejects plausible mistakes, right values of a wrong type and, for
the functions that feed an optimiser, right values with a wrong gradient."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minirlhf import exercises as ex
from minirlhf import losses, preferences
from minirlhf.advantages import discounted_returns
from minirlhf.exercises.part1 import reference_attention, reference_block_forward, reference_next_token_loss
from minirlhf.train import sft_step
from conftest import assert_check_behaves


# ---------------------------------------------------------------- 01 discounted returns
def returns_by_matrix(r, gamma):                 # right: G = U r, U[t, s] = gamma^(s - t) for s >= t
    steps = torch.arange(len(r))
    power = (steps[None, :] - steps[:, None]).clamp(min=0).to(r.dtype)
    return torch.triu(gamma ** power) @ r


def returns_forward(r, gamma):
    out, running = torch.zeros_like(r), 0.0
    for t in range(len(r)):
        running = r[t] + gamma * running
        out[t] = running
    return out


# ---------------------------------------------------------------- 01 REINFORCE
def reinforce_dot(lp, r, b):                     # right: a dot product instead of a mean of products
    return -torch.dot(lp, (r - b).detach()) / len(lp)


def reinforce_wrong_sign(lp, r, b):
    return (lp * (r - b)).mean()


def reinforce_no_baseline(lp, r, b):
    return -(lp * r).mean()


def reinforce_sum(lp, r, b):
    return -(lp * (r - b).detach()).sum()


def reinforce_no_detach(lp, r, b):
    return -(lp * (r - b)).mean()


def reinforce_baseline_not_detached(lp, r, b):   # the returns are detached, a learned baseline is not
    return -(lp * (r.detach() - b)).mean()


# ---------------------------------------------------------------- 02 Bayes-optimal accuracy
def bayes_abs_margin(a, b, t):                   # right, as a 0-d tensor: max(p, 1 - p) = sigmoid(|margin| / T)
    return torch.sigmoid((a - b).abs() / t).mean()


def bayes_mean_p(a, b, t):
    return float(torch.sigmoid((a - b) / t).mean())


def bayes_no_temperature(a, b, t):
    p = torch.sigmoid(a - b)
    return float(torch.maximum(p, 1 - p).mean())


def bayes_times_temperature(a, b, t):
    p = torch.sigmoid((a - b) * t)
    return float(torch.maximum(p, 1 - p).mean())


# ---------------------------------------------------------------- 03 causal attention
def attention_weights(q, k):                     # the notebook's masked softmax, (B, H, T, T)
    T = q.size(-2)
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    return (q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))).masked_fill(future, float("-inf")).softmax(-1)


def attention_explicit(q, k, v):                 # right
    return attention_weights(q, k) @ v


def attention_no_mask(q, k, v):
    return torch.softmax(q @ k.transpose(-2, -1) / q.size(-1) ** 0.5, dim=-1) @ v


def attention_no_scale(q, k, v):
    T = q.size(-2)
    s = (q @ k.transpose(-2, -1)).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return torch.softmax(s, -1) @ v


def attention_upper(q, k, v):
    T = q.size(-2)
    s = (q @ k.transpose(-2, -1) / q.size(-1) ** 0.5).masked_fill(torch.ones(T, T, dtype=torch.bool).tril(-1),
                                                                  float("-inf"))
    return torch.softmax(s, -1) @ v


def attention_softmax_over_queries(q, k, v):
    T = q.size(-2)
    s = (q @ k.transpose(-2, -1) / q.size(-1) ** 0.5).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(),
                                                                  float("-inf"))
    return torch.softmax(s, -2).nan_to_num() @ v


# ---------------------------------------------------------------- 03 the block's forward
def block_by_hand(block, x, mask):               # right: LayerNorm written out, names of its own
    def norm(ln, u):
        return F.layer_norm(u, u.shape[-1:], ln.weight, ln.bias, ln.eps)
    after_attention = x + block.attn(norm(block.ln_1, x), mask, None, 0)
    return after_attention + block.mlp(norm(block.ln_2, after_attention))


def block_post_norm(block, x, mask):
    x = block.ln_1(x + block.attn(x, mask, None, 0))
    return block.ln_2(x + block.mlp(x))


def block_no_attention_residual(block, x, mask):
    x = block.attn(block.ln_1(x), mask, None, 0)
    return x + block.mlp(block.ln_2(x))


def block_no_mlp_residual(block, x, mask):
    return block.mlp(block.ln_2(x + block.attn(block.ln_1(x), mask, None, 0)))


def block_ln_1_twice(block, x, mask):
    x = x + block.attn(block.ln_1(x), mask, None, 0)
    return x + block.mlp(block.ln_1(x))


def block_no_mask(block, x, mask):
    return reference_block_forward(block, x, None)


def block_parallel(block, x, mask):              # GPT-J's parallel block: both branches read the input
    return x + block.attn(block.ln_1(x), mask, None, 0) + block.mlp(block.ln_2(x))


def block_detached_stream(block, x, mask):       # right value; the residual carries no gradient to x
    x = x.detach() + block.attn(block.ln_1(x), mask, None, 0)
    return x + block.mlp(block.ln_2(x))


def block_frozen_mlp(block, x, mask):            # right value; W_1 of the MLP is detached, gets no gradient
    x = x + block.attn(block.ln_1(x), mask, None, 0)
    hidden = F.gelu(F.linear(block.ln_2(x), block.mlp.fc.weight.detach()))
    return x + block.mlp.proj(hidden)


# ---------------------------------------------------------------- 04 next-token loss
def loss_log_softmax(logits, tokens):            # right: log_softmax and gather
    logp = F.log_softmax(logits[:, :-1], dim=-1)
    return -logp.gather(-1, tokens[:, 1:].unsqueeze(-1)).mean()


def loss_in_place(logits, tokens):               # right: shifts its input in place first (harmless for softmax)
    logits -= logits.max(-1, keepdim=True).values
    return loss_log_softmax(logits, tokens)


def loss_no_shift(logits, tokens):
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), tokens.reshape(-1))


def loss_wrong_shift(logits, tokens):
    return F.cross_entropy(logits[:, 1:].reshape(-1, logits.size(-1)), tokens[:, :-1].reshape(-1))


def loss_sum(logits, tokens):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1), reduction="sum")


def loss_unstable(logits, tokens):
    probs = torch.softmax(logits[:, :-1], -1)
    return -torch.log(probs.gather(-1, tokens[:, 1:, None])).mean()


def loss_detached_normaliser(logits, tokens):    # right value; the log-sum-exp carries no gradient
    pred = logits[:, :-1]
    logp = pred - pred.detach().logsumexp(-1, keepdim=True)
    return -logp.gather(-1, tokens[:, 1:, None]).mean()


# ---------------------------------------------------------------- 05 SFT loss mask
def mask_by_rows(tokens, prompt_lengths):        # right: row by row
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    for row, start in enumerate(prompt_lengths.tolist()):
        mask[row, start:] = tokens[row, start:] != 0
    return mask


def mask_includes_prompt(tokens, prompt_lengths):
    return tokens != 0


def mask_off_by_one(tokens, prompt_lengths):
    return (torch.arange(tokens.size(1))[None] > prompt_lengths[:, None]) & (tokens != 0)


def mask_keeps_pad(tokens, prompt_lengths):
    return torch.arange(tokens.size(1))[None] >= prompt_lengths[:, None]


def mask_without_eos(tokens, prompt_lengths):
    return losses.sft_loss_mask(tokens, prompt_lengths) & (tokens != 2)


def mask_includes_last_prompt_token(tokens, prompt_lengths):
    return (torch.arange(tokens.size(1))[None] >= prompt_lengths[:, None] - 1) & (tokens != 0)


TENSOR_LIST = r"expected a torch.Tensor of shape \(\d+,\), got a list"
# ---------------------------------------------------------------- 05 one SFT step
def step_by_hand(model, optimizer, tokens, prompt_lengths, grad_clip):   # right: gather the targets by a mask
    logits = model(tokens)
    targets = losses.sft_loss_mask(tokens, prompt_lengths)[:, 1:]
    loss = F.cross_entropy(logits[:, :-1][targets], tokens[:, 1:][targets])
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item()


def sft_step_with(model, optimizer, tokens, mask, grad_clip, *, zero_grad=True, clip=True, shift=True):
    logits = model(tokens)
    loss = (losses.next_token_loss(logits, tokens, mask) if shift else F.cross_entropy(logits[mask], tokens[mask]))
    if zero_grad:
        optimizer.zero_grad()
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss


def step_prompt_learned(model, opt, t, n, c):
    return sft_step_with(model, opt, t, t != 0, c).item()


def step_padding_learned(model, opt, t, n, c):
    return sft_step_with(model, opt, t, torch.arange(t.size(1))[None, :] >= n[:, None], c).item()


def step_no_shift(model, opt, t, n, c):
    return sft_step_with(model, opt, t, losses.sft_loss_mask(t, n), c, shift=False).item()


def step_no_zero_grad(model, opt, t, n, c):
    return sft_step_with(model, opt, t, losses.sft_loss_mask(t, n), c, zero_grad=False).item()


def step_no_clip(model, opt, t, n, c):
    return sft_step_with(model, opt, t, losses.sft_loss_mask(t, n), c, clip=False).item()


def step_returns_tensor(model, opt, t, n, c):
    return sft_step_with(model, opt, t, losses.sft_loss_mask(t, n), c)


SCALAR_FLOAT = r"expected a torch.Tensor of shape \(\), got float\. Return the tensor itself"
VALUE_RIGHT_GRAD = "the value is right, but"

CHECKS = [    # (check, the function a stub falls back on, right answers, (wrong answer, hint))
    (ex.check_discounted_returns, discounted_returns, [discounted_returns, returns_by_matrix], [
        (returns_forward, "forward in time"),
        (lambda r, g: torch.full_like(r, float(discounted_returns(r, g)[0])), "plain sum"),
        (lambda r, g: g * discounted_returns(r, g), "discounted the first reward"),
        (lambda r, g: r.clone(), "expected"),
        (lambda r, g: discounted_returns(r, g).tolist(), TENSOR_LIST),
        (lambda r, g: discounted_returns(r, g).numpy(), "got numpy.ndarray. Stay in torch"),
    ]),
    (ex.check_reinforce_loss, losses.reinforce_loss, [losses.reinforce_loss, reinforce_dot], [
        (reinforce_wrong_sign, "sign"), (reinforce_no_baseline, "baseline is not subtracted"),
        (reinforce_sum, "not the sum"),
        (lambda lp, r, b: losses.reinforce_loss(lp, r, b).item(), SCALAR_FLOAT),
        (lambda lp, r, b: losses.reinforce_loss(lp, r, b).reshape(1), r"expected a 0-d tensor"),
        (reinforce_no_detach, r"gradient flows into the returns \(and the baseline\).*detach"),
        (reinforce_baseline_not_detached, "gradient flows into the baseline, which must be a constant"),
        (lambda lp, r, b: losses.reinforce_loss(lp.detach(), r, b), "no gradient reaches the logprobs"),
    ]),
    (ex.check_bayes_optimal_accuracy, preferences.bayes_optimal_accuracy,
     [preferences.bayes_optimal_accuracy, bayes_abs_margin], [
        (bayes_mean_p, r"max\(p, 1 - p\)"), (bayes_no_temperature, "temperature is missing"),
        (bayes_times_temperature, "multiplied by the temperature"),
        (lambda a, b, t: [preferences.bayes_optimal_accuracy(a, b, t)], "expected a Python float .*got a list"),
        (lambda a, b, t: [bayes_mean_p(a, b, t)], "got a list"),    # a mistake's value, but a type problem first
        (lambda a, b, t: np.float32(preferences.bayes_optimal_accuracy(a, b, t)), r"numpy.float32. Convert it"),
        (lambda a, b, t: bayes_abs_margin(a, b, t).reshape(1), r"shape \(1,\).*float\(x\) or x.item\(\)"),
    ]),
    (ex.check_causal_attention, reference_attention, [reference_attention, attention_explicit], [
        (attention_no_mask, "sees the future"), (attention_no_scale, "sqrt"), (attention_upper, "wrong way round"),
        (attention_softmax_over_queries, "over the queries"),
        (lambda q, k, v: attention_explicit(q, k, v).detach().numpy(), "got numpy.ndarray"),
        (lambda q, k, v: (attention_explicit(q, k, v),), r"got a tuple of 1 item \(torch.Tensor\)"),
        (lambda q, k, v: attention_weights(q, k).detach() @ v, VALUE_RIGHT_GRAD + " no gradient reaches the q"),
    ]),
    (ex.check_block_forward, reference_block_forward, [reference_block_forward, block_by_hand], [
        (block_post_norm, "post-norm"), (block_no_attention_residual, "residual of the attention is missing"),
        (block_no_mlp_residual, "residual of the MLP is missing"), (block_ln_1_twice, "ln_1 is used twice"),
        (block_no_mask, "ignores the mask"), (block_parallel, "reads the block's input"),
        (lambda b, x, m: reference_block_forward(b, x, m).detach().numpy(), "got numpy.ndarray"),
        (lambda b, x, m: (reference_block_forward(b, x, m), None), r"got a tuple of 2 items"),
        (block_detached_stream, VALUE_RIGHT_GRAD + " the gradient of sum.*with respect to the input x is not"),
        (block_frozen_mlp, VALUE_RIGHT_GRAD + " no gradient reaches the parameter block.mlp.fc.weight"),
    ]),
    (ex.check_next_token_loss, reference_next_token_loss,
     [reference_next_token_loss, loss_log_softmax, loss_in_place], [
        (loss_no_shift, "no shift"), (loss_wrong_shift, "shifted the wrong way"), (loss_sum, "not the sum"),
        (loss_unstable, "log_softmax"),
        (lambda lg, tk: reference_next_token_loss(lg, tk).item(), SCALAR_FLOAT),
        (loss_detached_normaliser, "the gradient with respect to the logits is not: expected"),
        (lambda lg, tk: reference_next_token_loss(lg.detach(), tk), "no gradient reaches the logits"),
    ]),
    (ex.check_sft_loss_mask, losses.sft_loss_mask, [losses.sft_loss_mask, mask_by_rows], [
        (mask_includes_prompt, "prompt is not masked"), (mask_off_by_one, "off by one: the first response"),
        (mask_keeps_pad, "padding"), (mask_without_eos, "EOS is not learned"),
        (mask_includes_last_prompt_token, "last prompt token is included"),
        (lambda t, n: losses.sft_loss_mask(t, n).float(), r"expected a bool mask.*torch.float32.*\.float\(\)"),
        (lambda t, n: losses.sft_loss_mask(t, n).long(), r"expected a bool mask.*torch.int64"),
        (lambda t, n: losses.sft_loss_mask(t, n).tolist(), r"expected a torch.Tensor of shape \(3, 9\), got a list"),
    ]),
    (ex.check_sft_step, sft_step, [sft_step, step_by_hand], [
        (step_prompt_learned, "prompt is not masked"), (step_padding_learned, "padding counts"),
        (step_no_shift, "no shift"), (step_no_zero_grad, "zero_grad"), (step_no_clip, "not clipped"),
        (step_returns_tensor, r"Python float, got a torch.Tensor of shape \(\) \(torch.float32\) with its autograd "
                              r"graph. Return loss.item\(\)"),
        (lambda model, opt, t, n, c: [sft_step(model, opt, t, n, c)], "Python float, got a list"),
    ]),
]


@pytest.mark.parametrize("check,fallback,rights,wrongs", CHECKS, ids=[c[0].__name__ for c in CHECKS])
def test_check_accepts_right_answers_falls_back_on_stub_and_rejects_mistakes(check, fallback, rights, wrongs, capsys):
    assert_check_behaves(check, rights, wrongs, capsys, reference=fallback)


def test_checks_that_build_a_model_leave_the_global_rng_alone(capsys):
    state = torch.get_rng_state()
    ex.check_block_forward(reference_block_forward)
    ex.check_sft_step(sft_step)
    assert torch.equal(torch.get_rng_state(), state)
