"""The checking engine behind every exercise: run a student's function on fixed cases against the
package's reference, and explain what is wrong when it differs.

Every `check_<name>(fn)` runs the student's `fn` on fixed cases against the package's reference:
- all cases right: prints one line saying so and returns `fn`;
- `fn` raises NotImplementedError (the stub): says so and returns the reference, so the rest of the
  notebook still runs;
- a case wrong: raises ExerciseError saying which case and what to fix. In this order: a crash of `fn`
  (its own error), a result of the wrong TYPE (a list, a numpy array, a float where a tensor is due, a
  float mask where a bool one is due...), a known mistake matching the value (a sign error, a missing
  mask, an off-by-one...), nan or inf where the answer is finite, or else expected vs got;
- with `grad_args`, a right value is not enough: the gradients must match the reference's too (see
  `run_check`), so a loss that feeds an optimiser cannot pass with a detached or half-lost gradient.

Types (what `fn` may return, by what the reference returns):
- a torch.Tensor: a torch.Tensor of the same shape and the same kind of dtype (bool, integer or
  floating; any float precision will do, as long as the values are close);
- a Python float: a Python float or int (a numpy.float64 is a float); a 0-d tensor only where the
  check says it is as good downstream (`scalar_tensor_ok`);
- a tuple of Python floats: a tuple or list of as many such numbers;
- a str: a str, equal to it.

Cases come from the check's own torch.Generator, so a check never disturbs the notebook's random state.
`exercise_summary()` lists what passed and what is left.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

STATUS: dict[str, str] = {}


class ExerciseError(AssertionError):
    """A student's function gave a wrong answer; the message says where and why."""


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _clone(args):
    """Fresh copies of a case's arguments: a function that edits its inputs in place must not change the case."""
    return tuple(a.clone() if isinstance(a, torch.Tensor) else list(a) if isinstance(a, list) else a for a in args)


# ---------------------------------------------------------------- types
def _type_name(x) -> str:
    """'list', 'float', 'numpy.ndarray', 'torch.Tensor'."""
    kind = type(x)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__.split('.')[0]}.{kind.__name__}"


def describe(x) -> str:
    """What x is, in a message: 'numpy.ndarray', 'a list of 3 items (float, float, float)',
    'a torch.Tensor of shape (3,) (torch.float32)'."""
    if isinstance(x, torch.Tensor):
        return f"a torch.Tensor of shape {tuple(x.shape)} ({x.dtype})"
    if isinstance(x, (tuple, list)):
        items = ", ".join(_type_name(v) for v in x[:4]) + (", ..." if len(x) > 4 else "")
        return f"a {type(x).__name__} of {len(x)} item{'s' * (len(x) != 1)} ({items})"
    return _type_name(x)


def _is_number(x, scalar_tensor_ok: bool) -> bool:
    """A Python float or int (not a bool), or, if scalar_tensor_ok, a 0-d real tensor."""
    if isinstance(x, torch.Tensor):
        return scalar_tensor_ok and x.dim() == 0 and x.dtype != torch.bool and not x.is_complex()
    return isinstance(x, (float, int)) and not isinstance(x, bool)


def _dtype_kind(t: torch.Tensor) -> str:
    if t.dtype == torch.bool:
        return "bool"
    return "complex" if t.is_complex() else "floating" if t.is_floating_point() else "integer"


def _tensor_advice(got, expected: torch.Tensor) -> str:
    """What to do when a tensor was due and got is not one."""
    if isinstance(got, (tuple, list)):
        return ("Build the answer with torch operations on the input tensors (torch.stack turns a list of tensors "
                "into one tensor): a Python list or tuple has no shape, dtype or gradient.")
    if type(got).__module__ == "numpy":
        return "Stay in torch: a numpy value has no gradient, and the rest of the course expects tensors."
    if isinstance(got, (float, int)) and expected.dim() == 0:
        return ("Return the tensor itself, not .item() or float(...): a Python number has no dtype, device or "
                "gradient.")
    return "Return a torch.Tensor."


def _tensor_problem(got, expected: torch.Tensor) -> str | None:
    if not isinstance(got, torch.Tensor):
        return (f"expected a torch.Tensor of shape {tuple(expected.shape)}, got {describe(got)}. "
                f"{_tensor_advice(got, expected)}")
    if got.shape != expected.shape and expected.dim() == 0:
        return (f"expected a 0-d tensor (a scalar, shape ()), got shape {tuple(got.shape)}: reduce over every "
                f"dimension (e.g. .mean()), or .squeeze() the result.")
    if got.shape != expected.shape:
        return f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}."
    kind = _dtype_kind(expected)
    if _dtype_kind(got) == kind:
        return None
    if kind == "bool":
        return (f"expected a bool mask (dtype torch.bool), got dtype {got.dtype}. Return the comparisons themselves, "
                "without .float() or .long(): a mask must be bool to index with it and to combine it with &, | and ~.")
    if kind == "floating":
        return (f"expected a floating-point tensor, got dtype {got.dtype}. Compute in floating point: do not "
                "round, compare or cast to an integer type on the way.")
    return f"expected a tensor of dtype {expected.dtype}, got dtype {got.dtype}."


def _number_problem(got, scalar_tensor_ok: bool) -> str | None:
    if _is_number(got, scalar_tensor_ok):
        return None
    want = "a Python float" + (" (or a 0-d tensor)" if scalar_tensor_ok else "")
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        fix = "Return the number itself: float(x) or x.item()."
    elif type(got).__module__ == "numpy" and getattr(got, "size", 0) == 1:
        fix = "Convert it with float(...)."
    else:
        fix = "Return one number."
    return f"expected {want}, got {describe(got)}. {fix}"


def _type_problem(got, expected, scalar_tensor_ok: bool) -> str | None:
    """Why got's type cannot stand for expected's (see the module docstring), or None if it can."""
    if isinstance(expected, str):
        return None if isinstance(got, str) else (f"expected text (a str such as {expected!r}), got {describe(got)}. "
                                                  f"Return the text itself, e.g. str(value).")
    if isinstance(expected, torch.Tensor):
        return _tensor_problem(got, expected)
    if isinstance(expected, tuple):
        if not (isinstance(got, (tuple, list)) and len(got) == len(expected)):
            return (f"expected a tuple of {len(expected)} numbers, got {describe(got)}. Return them as a tuple: "
                    f"`return first, second`.")
        for i, x in enumerate(got):
            problem = _number_problem(x, scalar_tensor_ok)
            if problem:
                return f"item {i} of the tuple: {problem}"
        return None
    return _number_problem(got, scalar_tensor_ok)


# ---------------------------------------------------------------- values
def _values(x) -> torch.Tensor | None:
    """x as a float64 tensor for comparison (tensor, number or tuple of them), or None if it is none of these."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64)
    if isinstance(x, (float, int)):
        return torch.tensor(float(x) if abs(x) < 1e308 else math.inf if x > 0 else -math.inf, dtype=torch.float64)
    if isinstance(x, (tuple, list)):
        parts = [_values(v) for v in x]
        if parts and all(p is not None and p.shape == parts[0].shape for p in parts):
            return torch.stack(parts)
    return None


def _close(got, expected, atol: float, rtol: float = 1e-4) -> bool:
    if isinstance(expected, str):
        return got == expected
    g, e = _values(got), _values(expected)
    return (g is not None and e is not None and g.shape == e.shape
            and bool(torch.allclose(g, e, atol=atol, rtol=rtol, equal_nan=False)))


def _show(x) -> str:
    if isinstance(x, torch.Tensor):
        if x.numel() <= 12:
            return str(x.detach().double().numpy().round(4).tolist())
        first = x.detach().flatten()[:6].double().numpy().round(4).tolist()
        return f"tensor of shape {tuple(x.shape)}, first values {first}"
    return repr(x)


def _nonfinite(got, expected) -> bool:
    """got has nan or inf where expected is finite."""
    g, e = _values(got), _values(expected)
    if g is None or e is None or g.shape != e.shape:
        return False
    return bool((~torch.isfinite(g) & torch.isfinite(e)).any())


_NONFINITE_HINT = ("Look for log(0), 0 / 0 or 0 * inf (torch gives nan for 0 * log(0); the limit of d log d at d = 0 "
                  "is 0).")


def _value_problem(got, expected, args, mistakes: dict, atol: float, scalar_tensor_ok: bool,
                   nonfinite_hint: str) -> str | None:
    """What is wrong with got, the answer on args whose right answer is expected, or None if it is right."""
    if got is None:
        return "it returned None. Did you forget the `return`?"
    problem = _type_problem(got, expected, scalar_tensor_ok)
    if problem:
        return problem
    if _close(got, expected, atol):
        return None
    for hint, wrong in mistakes.items():
        try:
            if _close(got, wrong(*_clone(args)), atol):
                return hint
        except Exception:  # a mistake variant that does not apply to this case
            continue
    if _nonfinite(got, expected):
        return (f"it returned nan or inf where the answer is finite: expected {_show(expected)}, got {_show(got)}. "
                f"{nonfinite_hint or _NONFINITE_HINT}")
    return f"expected {_show(expected)}, got {_show(got)}."


# ---------------------------------------------------------------- gradients
def _with_grad(args, grad_args: dict[int, str]) -> tuple[tuple, dict[int, torch.Tensor]]:
    """Fresh copies of args where the floating-point tensors at the positions of grad_args require grad.

    Returns (the arguments to call with, {position: leaf}). Each such argument is a non-leaf copy of its
    leaf, as a model's output would be, so the function may still edit it in place."""
    args = list(_clone(args))
    leaves = {}
    for i in grad_args:
        if isinstance(args[i], torch.Tensor) and args[i].is_floating_point():
            leaves[i] = args[i].requires_grad_(True)
            args[i] = leaves[i].clone()
    return tuple(args), leaves


def _weighting(expected: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The w of the backpropagated sum(w * output): 1 for a scalar (its gradient is shown as it is), fixed
    random weights otherwise, so that no part of the output can hide behind another (as a plain sum would
    let errors cancel)."""
    if expected.dim() == 0:
        return torch.ones(())
    return torch.randn(expected.shape, generator=generator)


def _gradients(out, leaves: dict[int, torch.Tensor], weight: torch.Tensor) -> dict[int, torch.Tensor]:
    """d sum(weight * out) / d leaf for each leaf; zeros where no gradient flows (detached or unused)."""
    if not (isinstance(out, torch.Tensor) and out.requires_grad):
        return {i: torch.zeros_like(x) for i, x in leaves.items()}
    grads = torch.autograd.grad((out * weight.to(out.dtype)).sum(), list(leaves.values()), allow_unused=True)
    return {i: torch.zeros_like(x) if g is None else g for (i, x), g in zip(leaves.items(), grads)}


def _same_gradients(got: dict, expected: dict, atol: float) -> bool:
    return all(_close(got[i], expected[i], atol) for i in expected)


def _gradient_hint(got_grads: dict, args, weight: torch.Tensor, grad_mistakes: dict, grad_args: dict,
                   atol: float) -> str | None:
    """The hint of the first known gradient mistake (right value, wrong gradient) with the student's gradients."""
    for hint, wrong in grad_mistakes.items():
        try:
            wrong_args, leaves = _with_grad(args, grad_args)
            if _same_gradients(got_grads, _gradients(wrong(*wrong_args), leaves, weight), atol):
                return hint
        except Exception:  # a mistake variant that does not apply to this case
            continue
    return None


def _gradient_problem(got_grads: dict, expected_grads: dict, grad_args: dict[int, str], hint: str | None,
                      weighted: bool, atol: float) -> str:
    """What is wrong with the gradients of a right value, argument by argument (grad_args names them)."""
    for i, g in got_grads.items():
        if _nonfinite(g, expected_grads[i]):
            return (f"the value is right, but the gradient with respect to the {grad_args[i]} contains nan or inf: "
                    f"a nan or inf made inside the computation (log(0), 0 * inf...) poisons the backward pass even "
                    f"where torch.where or a mask hides it from the value. Keep every intermediate finite (e.g. "
                    f"F.log_softmax rather than log(softmax(...))).")
    if hint:
        return f"the value is right, but the gradient is not: {hint}"
    i = next(i for i in expected_grads if not _close(got_grads[i], expected_grads[i], atol))
    got, expected, arg = got_grads[i], expected_grads[i], grad_args[i]
    if not expected.any():
        return (f"the value is right, but gradient flows into the {arg}, which must be a constant here (the "
                f"reference gets no gradient there): .detach() it.")
    if not got.any():
        return (f"the value is right, but no gradient reaches the {arg}: the result was cut off from autograd "
                f"(.detach(), .item(), float(), .numpy() or torch.tensor(...) on the way). Compute it with torch "
                f"operations on the inputs.")
    of = " of sum(w * output), w fixed random weights," if weighted else ""
    return (f"the value is right, but the gradient{of} with respect to the {arg} is not: expected {_show(expected)}, "
            f"got {_show(got)}.")


def _backprop(name: str, label: str, got: torch.Tensor, leaves: dict, weight: torch.Tensor) -> dict:
    """The student's gradients; an error in the backward pass is the student's own, reported like a crash."""
    try:
        return _gradients(got, leaves, weight)
    except Exception as e:
        raise ExerciseError(f"backpropagating through {name}'s result raised {type(e).__name__} on case '{label}': "
                            f"{e}. Avoid in-place edits of tensors that autograd still needs.") from e


# ---------------------------------------------------------------- the check
def _call(name: str, fn: Callable, args, label: str, crash_hint: str):
    try:
        return fn(*args)
    except (NotImplementedError, ExerciseError):
        raise
    except Exception as e:
        message = str(e).strip().rstrip(".")
        raise ExerciseError(f"{name} raised {type(e).__name__} on case '{label}': {message}. "
                            f"{crash_hint}".strip()) from e


def run_check(name: str, fn: Callable, reference: Callable, cases: list[tuple[str, tuple]],
              mistakes: dict[str, Callable] | None = None, atol: float = 1e-5, crash_hint: str = "",
              grad_args: dict[int, str] | None = None, grad_mistakes: dict[str, Callable] | None = None,
              scalar_tensor_ok: bool = False, nonfinite_hint: str = "",
              precheck: Callable[[Callable], None] | None = None) -> Callable:
    """Compare fn with reference on each (label, args) case; see the module docstring for what it does.

    mistakes: hint -> a function computing that mistake; its hint is shown when fn's value matches it.
    atol: tolerance of values and gradients. crash_hint: added when fn raises. nonfinite_hint: added when
    fn returns nan or inf where the answer is finite.
    scalar_tensor_ok: where the reference returns a Python float (or a tuple of them), accept 0-d tensors too.
    grad_args {position: name}: compare gradients too (only for references returning a tensor). The
    floating-point tensors at these positions become leaves that require grad; once the values of all
    cases are right, sum(w * output) (w = 1 for a scalar output, else fixed random weights) is
    backpropagated through fn and through the reference, and the gradients with respect to every named
    argument must agree. A reference that detaches an argument (a constant such as an advantage) has zero
    gradient there, so a student's gradient flowing into it is caught as well as a gradient that is lost
    or wrong.
    grad_mistakes: hint -> a function with the right value and a known wrong gradient (a forgotten
    .detach(), a term computed from a detached tensor...); its hint is shown when fn's gradients match it.
    Without a match, the message names the first argument whose gradient differs.
    precheck(fn): a check's own tests run first (they raise ExerciseError with their message, and a stub's
    NotImplementedError falls back on the reference as usual).
    """
    if not callable(fn):
        raise TypeError(f"check_{name} takes your function itself, e.g. check_{name}({name}), not its result")
    mistakes, grad_args, grad_mistakes = mistakes or {}, grad_args or {}, grad_mistakes or {}
    weights = seeded(0)
    try:
        if precheck is not None:
            precheck(fn)
        runs = []
        for label, args in cases:
            fn_args, fn_leaves = _with_grad(args, grad_args)
            got = _call(name, fn, fn_args, label, crash_hint)
            ref_args, ref_leaves = _with_grad(args, grad_args)
            expected = reference(*ref_args)
            value = expected.detach() if isinstance(expected, torch.Tensor) else expected
            problem = _value_problem(got, value, args, mistakes, atol, scalar_tensor_ok, nonfinite_hint)
            if problem:
                raise ExerciseError(f"{name} is wrong on case '{label}': {problem}")
            runs.append((label, args, got, fn_leaves, expected, ref_leaves))
        # every value is right: now the gradients (a wrong value on a later case says more than a gradient)
        for label, args, got, fn_leaves, expected, ref_leaves in runs if grad_args else ():
            weight = _weighting(expected, weights)
            got_grads = _backprop(name, label, got, fn_leaves, weight)
            expected_grads = _gradients(expected, ref_leaves, weight)
            if not _same_gradients(got_grads, expected_grads, atol):
                hint = _gradient_hint(got_grads, args, weight, grad_mistakes, grad_args, atol)
                problem = _gradient_problem(got_grads, expected_grads, grad_args, hint, expected.dim() > 0, atol)
                raise ExerciseError(f"{name} is wrong on case '{label}': {problem}")
    except NotImplementedError:
        STATUS[name] = "not implemented"
        print(f"[ ] {name}: not implemented yet; the notebook goes on with the package's reference.")
        return reference
    except ExerciseError:
        STATUS[name] = "wrong"
        raise
    STATUS[name] = "passed"
    print(f"[x] {name}: correct on all {len(cases)} test cases." if len(cases) > 1 else
          f"[x] {name}: correct on the test case.")
    return fn


def exercise_summary(names: list[str]) -> None:
    """Print which of this notebook's exercises pass and which remain."""
    done = [n for n in names if STATUS.get(n) == "passed"]
    left = [n for n in names if n not in done]
    if not left:
        print("The exercise of this notebook passes." if len(names) == 1 else
              f"All {len(names)} exercises of this notebook pass.")
    else:
        print(f"{len(done)} of {len(names)} exercises pass. Still to do: {', '.join(left)} "
              f"(the notebook used the package's reference for them).")


def mistaken_step(parameters, optimizer, loss, grad_clip: float, *, zero_grad: bool = True, clip: bool = True) -> None:
    """The end of a training step as the checks' mistake variants write it: zero_grad, backward, clip the gradient
    norm to grad_clip, step; zero_grad=False or clip=False leave out the step a student most often forgets."""
    if zero_grad:
        optimizer.zero_grad()
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    optimizer.step()
