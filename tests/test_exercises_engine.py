"""exercises/engine.py: what every check does (stub fallback, types, gradients, messages, RNG, summary)."""

import numpy as np
import pytest
import torch

from minirlhf import exercises as ex
from minirlhf import losses
from minirlhf.advantages import discounted_returns
from minirlhf.exercises.part1 import reference_attention
from conftest import stub

CHECKS = [getattr(ex, name) for name in ex.__all__ if name.startswith("check_")]


def test_check_does_not_touch_global_rng():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    ex.check_causal_attention(reference_attention)                      # gradients drawn with random weights
    with pytest.raises(ex.ExerciseError):
        ex.check_ppo_clip_loss(lambda lp, old, a, e: -(torch.exp(lp - old) * a).mean())
    assert torch.equal(before, torch.get_rng_state())


def test_checks_are_deterministic():
    def messages():
        out = []
        for wrong in (lambda q, k, v: reference_attention(q, k, v.detach()) + 0 * v,   # right value, no grad into v
                      lambda q, k, v: reference_attention(q, k, v) + 1e-3):
            with pytest.raises(ex.ExerciseError) as e:
                ex.check_causal_attention(wrong)
            out.append(str(e.value))
        return out

    assert messages() == messages()


def test_check_messages_for_shape_none_and_non_callable():
    with pytest.raises(ex.ExerciseError, match="shape"):
        ex.check_causal_attention(lambda q, k, v: q[..., :1])
    with pytest.raises(ex.ExerciseError, match="return"):
        ex.check_discounted_returns(lambda r, g: None)
    with pytest.raises(TypeError, match="function itself"):
        ex.check_discounted_returns(torch.zeros(3))


def test_a_crash_of_the_students_function_names_the_case_and_its_error():
    with pytest.raises(ex.ExerciseError, match=r"discounted_returns raised ZeroDivisionError on case '[^']+': "
                                               r"division by zero\.$"):
        ex.check_discounted_returns(lambda r, g: 1 / 0)


def test_a_function_that_edits_its_inputs_in_place_does_not_change_the_cases(capsys):
    def returns_then_clobber(r, gamma):
        out = discounted_returns(r, gamma)
        r.zero_()
        return out

    def kappa_then_clear(x, y):
        n = len(x)
        p_o = sum(a == b for a, b in zip(x, y)) / n
        p_e = sum(x.count(c) / n * y.count(c) / n for c in set(x) | set(y))
        x.clear()
        return (p_o - p_e) / (1 - p_e)

    assert ex.check_discounted_returns(returns_then_clobber) is returns_then_clobber
    assert ex.check_cohens_kappa(kappa_then_clear) is kappa_then_clear
    assert capsys.readouterr().out.count("correct on") == 2


WEIRD = [object(), "text", {"a": 1}, (torch.zeros(1), "x"), [[1.0, 2.0], [3.0]], np.zeros(3),
         torch.zeros(2, dtype=torch.complex64), 10 ** 400, True, float("nan"), torch.tensor(float("nan")),
         (x for x in range(2))]


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_any_answer_gets_an_exercise_error_never_an_error_of_the_check_itself(check):
    for value in WEIRD:
        with pytest.raises(ex.ExerciseError):
            check(lambda *args: value)


def test_summary_lists_what_remains(capsys):
    ex.check_sft_loss_mask(losses.sft_loss_mask)
    ex.check_next_token_loss(stub)
    ex.exercise_summary(["sft_loss_mask", "next_token_loss"])
    out = capsys.readouterr().out
    assert "1 of 2 exercises pass" in out and "next_token_loss" in out.split("Still to do:")[1]


def test_summary_forgets_a_pass_once_the_function_is_wrong(capsys):
    ex.check_sft_loss_mask(losses.sft_loss_mask)
    with pytest.raises(ex.ExerciseError):
        ex.check_sft_loss_mask(lambda t, n: t != 0)
    ex.exercise_summary(["sft_loss_mask"])
    assert "Still to do: sft_loss_mask" in capsys.readouterr().out


# ---------------------------------------------------------------- types
def total(x):                                                  # a reference that returns a Python float
    return float(x.sum())


TOTAL_CASES = [("three numbers", (torch.tensor([1.0, 2.0, 3.0]),))]


def check_total(fn, **options):
    mistakes = {"you took the mean, not the sum.": lambda x: float(x.mean())}
    return ex.run_check("total", fn, total, TOTAL_CASES, mistakes, **options)


def test_a_float_may_come_as_an_int_or_a_numpy_float64_and_as_a_0d_tensor_only_where_the_check_allows():
    for right in (lambda x: 6, lambda x: np.float64(6.0), lambda x: float(x.sum())):
        assert check_total(right) is right
    with pytest.raises(ex.ExerciseError, match=r"expected a Python float, got a torch.Tensor of shape \(\)"):
        check_total(lambda x: x.sum())
    tensor_sum = lambda x: x.sum()  # noqa: E731
    assert check_total(tensor_sum, scalar_tensor_ok=True) is tensor_sum
    with pytest.raises(ex.ExerciseError, match=r"expected a Python float \(or a 0-d tensor\), got bool"):
        check_total(lambda x: True, scalar_tensor_ok=True)


def test_a_right_value_of_a_wrong_type_is_a_type_problem_even_when_it_equals_a_known_mistake():
    with pytest.raises(ex.ExerciseError, match="took the mean"):
        check_total(lambda x: float(x.mean()))
    with pytest.raises(ex.ExerciseError, match=r"expected a Python float, got a list of 1 item \(float\)"):
        check_total(lambda x: [float(x.mean())])


# ---------------------------------------------------------------- gradients
def const(scale):
    return torch.as_tensor(scale).detach()


def scaled(x, scale):                     # the reference: gradient `scale` into x, none into the constant scale
    return (x * const(scale)).sum()


SCALED_CASES = [("three numbers", (torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, -1.0, 2.0]))),
                ("a Python float as the scale is not differentiated", (torch.tensor([1.0, 2.0]), 2.0))]


def check_scaled(fn, reference=scaled, **options):
    return ex.run_check("scaled", fn, reference, SCALED_CASES, grad_args={0: "x", 1: "scale"}, **options)


class BrokenBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("no way back")


def test_gradients_are_compared_with_the_reference():
    written_differently = lambda x, s: torch.dot(x, const(s).expand_as(x))  # noqa: E731
    assert check_scaled(written_differently) is written_differently
    wrongs = [
        (lambda x, s: (x * s).sum(), "the value is right, but gradient flows into the scale, which must be a constant"),
        (lambda x, s: (x.detach() * s).sum(), "no gradient reaches the x"),
        (lambda x, s: scaled(x, s) + (x - x.detach()).sum(),
         r"the gradient with respect to the x is not: expected \[0.5, -1.0, 2.0\], got \[1.5, 0.0, 3.0\]"),
        (lambda x, s: scaled(x, s) + torch.where(x > 100, torch.log(x - x.detach()), 0.0).sum(),
         "gradient with respect to the x contains nan"),
        (lambda x, s: scaled(BrokenBackward.apply(x), s),
         "backpropagating through scaled's result raised RuntimeError on case 'three numbers': no way back"),
    ]
    for wrong, message in wrongs:
        with pytest.raises(ex.ExerciseError, match=message):
            check_scaled(wrong)


def test_a_known_gradient_mistake_gets_its_hint_and_a_vector_output_is_weighted():
    grad_mistakes = {"the scale must be detached.": lambda x, s: (x * s).sum()}
    with pytest.raises(ex.ExerciseError, match="the value is right, but the gradient is not: the scale must be"):
        check_scaled(lambda x, s: (x * s).sum(), grad_mistakes=grad_mistakes)
    elementwise = lambda x, s: x * const(s)  # noqa: E731
    with pytest.raises(ex.ExerciseError, match=r"gradient of sum\(w \* output\), w fixed random weights"):
        check_scaled(lambda x, s: elementwise(x, s) + (x - x.detach()), elementwise)


def test_values_are_checked_on_every_case_before_gradients():
    def wrong(x, s):    # right value with a wrong gradient on the first case, a wrong value on the second
        return (x * s).sum() if isinstance(s, torch.Tensor) else x.sum()
    with pytest.raises(ex.ExerciseError, match="a Python float as the scale is not differentiated': expected"):
        check_scaled(wrong)
