"""The checking engine behind every exercise: run a student's function on fixed cases against the
package's reference, and explain what is wrong when it differs.

Every `check_<name>(fn)` runs the student's `fn` on fixed cases against the package's reference:
- all cases right: prints one line saying so and returns `fn`;
- `fn` raises NotImplementedError (the stub): says so and returns the reference, so the rest of the
  notebook still runs;
- a case wrong: raises ExerciseError saying which case, expected vs got, and, when the answer matches a
  known mistake (a sign error, a missing mask, an off-by-one...), what that mistake is.

Cases come from the check's own torch.Generator, so a check never disturbs the notebook's random state.
`exercise_summary()` lists what passed and what is left.
"""
from __future__ import annotations

from typing import Callable

import torch

STATUS: dict[str, str] = {}


class ExerciseError(AssertionError):
    """A student's function gave a wrong answer; the message says where and why."""


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _clone(args):
    return tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)


def _close(got, expected, atol: float, rtol: float = 1e-4) -> bool:
    got = torch.as_tensor(got, dtype=torch.float64) if not isinstance(got, torch.Tensor) else got.double()
    expected = torch.as_tensor(expected, dtype=torch.float64) if not isinstance(expected, torch.Tensor) else expected.double()
    return got.shape == expected.shape and bool(torch.allclose(got, expected, atol=atol, rtol=rtol, equal_nan=False))


def _show(x) -> str:
    if isinstance(x, torch.Tensor):
        if x.numel() <= 12:
            return str(x.detach().double().numpy().round(4).tolist())
        return f"tensor of shape {tuple(x.shape)}, first values {x.detach().flatten()[:6].double().numpy().round(4).tolist()}"
    return repr(x)


def _diagnose(name: str, label: str, got, expected, args, mistakes, atol) -> str:
    where = f"{name} is wrong on case '{label}'"
    if got is None:
        return f"{where}: it returned None. Did you forget the `return`?"
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"{where}: expected a torch.Tensor, got {type(got).__name__}."
        if got.shape != expected.shape:
            return f"{where}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}."
        if got.dtype == torch.bool and expected.dtype != torch.bool or got.dtype != torch.bool and expected.dtype == torch.bool:
            return f"{where}: expected dtype {expected.dtype}, got {got.dtype}."
    if isinstance(got, (torch.Tensor, float, tuple)) and torch.isnan(torch.as_tensor(got, dtype=torch.float64)).any():
        return (f"{where}: it returned NaN, expected {_show(expected)}. Look for log(0), 0 / 0 or 0 * inf "
                "(torch gives nan for 0 * log(0); the limit of d log d at d = 0 is 0).")
    for hint, wrong in mistakes.items():
        try:
            if _close(got, wrong(*_clone(args)), atol):
                return f"{where}: {hint}"
        except Exception:  # a mistake variant that does not apply to this case
            continue
    return f"{where}: expected {_show(expected)}, got {_show(got)}."


def run_check(name: str, fn: Callable, reference: Callable, cases: list[tuple[str, tuple]],
              mistakes: dict[str, Callable] | None = None, atol: float = 1e-5, crash_hint: str = "") -> Callable:
    """Compare fn with reference on each (label, args) case; see the module docstring for what it does.
    If fn crashes on a case, the ExerciseError names the case and adds crash_hint."""
    if not callable(fn):
        raise TypeError(f"check_{name} takes your function itself, e.g. check_{name}({name}), not its result")
    try:
        for label, args in cases:
            try:
                got = fn(*_clone(args))
            except (NotImplementedError, ExerciseError):
                raise
            except Exception as e:
                raise ExerciseError(f"{name} raised {type(e).__name__} on case '{label}': {e}. {crash_hint}".strip()) from e
            expected = reference(*_clone(args))
            if not (isinstance(got, (torch.Tensor, float, int, tuple)) and _close(got, expected, atol)):
                raise ExerciseError(_diagnose(name, label, got, expected, args, mistakes or {}, atol))
    except NotImplementedError:
        STATUS[name] = "not implemented"
        print(f"[ ] {name}: not implemented yet; the notebook goes on with the package's reference.")
        return reference
    STATUS[name] = "passed"
    print(f"[x] {name}: correct on all {len(cases)} test cases." if len(cases) > 1 else f"[x] {name}: correct on the test case.")
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
