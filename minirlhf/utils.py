"""Seeding, threads and paths: the few things every notebook and trainer needs first; and the checks of the
trainers' settings, so a config that cannot be meant fails when it is made, naming the field."""
from __future__ import annotations

import math
import numbers
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

# Large reductions depend on the thread count, so results are only reproducible with a fixed one.
# Two threads is what the course is timed and validated on; tiny models gain little from more.
DEFAULT_THREADS = 2

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"


def seed_everything(seed: int = 0, threads: int | None = DEFAULT_THREADS) -> torch.Generator:
    """Seed Python, NumPy and torch and fix torch's thread count; return a torch.Generator seeded too.

    The same seed and thread count on the same machine give bit-identical numbers.
    Returns a generator so callers can draw from their own stream without touching the global one.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(max(1, min(threads, os.cpu_count() or 1)))
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- settings checked before a step is taken
@dataclass(frozen=True)
class Rule:
    """What a setting may be: `accepts(value)`, and the words an error uses to say so."""
    accepts: Callable[[object], bool]
    text: str


def _is_whole(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)   # True would pass as 1


def _is_real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


POSITIVE_INT = Rule(lambda x: _is_whole(x) and x >= 1, "a whole number >= 1")
NON_NEGATIVE_INT = Rule(lambda x: _is_whole(x) and x >= 0, "a whole number >= 0")
POSITIVE = Rule(lambda x: _is_real(x) and x > 0, "a finite number > 0")
NON_NEGATIVE = Rule(lambda x: _is_real(x) and x >= 0, "a finite number >= 0")
FINITE = Rule(_is_real, "a finite number")
FRACTION = Rule(lambda x: _is_real(x) and 0 <= x <= 1, "a finite number in [0, 1]")


def optional(rule: Rule) -> Rule:
    """The rule, or None (a setting switched off)."""
    return Rule(lambda x: x is None or rule.accepts(x), f"None or {rule.text}")


# What a wrong value of a setting does, for the settings whose name alone does not say it. Field names are shared
# across the configs (TRL's names), so one entry serves every trainer.
WHY = {
    "beta": "it weighs the KL to the reference: a negative one would pay the policy to move away from it",
    "gamma": "it is a discount: 1 counts every future reward, 0 only the next one",
    "lam": "GAE's lambda: 1 is the Monte-Carlo return, 0 the one-step estimate",
    "label_smoothing": "cDPO's label-flip rate; at 0.5 or more the labels mean nothing or the opposite",
    "temperature": "logits are divided by it; for deterministic decoding use greedy=True",
}


def check_settings(owner: str, values, rules: dict[str, Rule]) -> None:
    """Raise ValueError for the first setting that breaks its rule, naming owner.field, the value and what is
    allowed. values: a config (its attributes are read) or a dict of keyword arguments."""
    for name, rule in rules.items():
        value = values[name] if isinstance(values, dict) else getattr(values, name)
        if not rule.accepts(value):
            why = f" ({WHY[name]})" if name in WHY else ""
            raise ValueError(f"{owner}.{name} must be {rule.text}, got {value!r}{why}")


# A loss that turns NaN/inf usually has a cause among the settings; these are the values that make one likely.
EXTREME = {
    "temperature": (lambda x: x < 0.1, "the logits are divided by it, a small one overflows them"),
    "beta": (lambda x: x > 10, "it multiplies the log-ratios, a large one overflows the loss"),
    "lr": (lambda x: x > 1e-2, "steps this large blow the weights up"),
    "learning_rate": (lambda x: x > 1e-2, "steps this large blow the weights up"),
    "entropy_coef": (lambda x: abs(x) > 10, "a large entropy term swamps the policy loss"),
    "vf_coef": (lambda x: x > 10, "a large value loss swamps the policy loss"),
    "rpo_alpha": (lambda x: x > 10, "a large SFT term swamps the preference loss"),
    "grad_clip": (lambda x: x > 100, "it barely clips, so one bad gradient can blow the weights up"),
}


def nonfinite_hint(values) -> str:
    """What to change after a loss became NaN/inf under these settings (a config or a dict): the settings whose
    values are extreme, each with why, or, if none is, the learning rate to lower."""
    get = values.get if isinstance(values, dict) else lambda name: getattr(values, name, None)
    causes = [f"{name} = {get(name)!r} ({why})" for name, (extreme, why) in EXTREME.items()
              if _is_real(get(name)) and extreme(get(name))]
    if causes:
        return "the likely cause is " + "; ".join(causes) + ": change it and run again"
    lr = next((f" (now {get(n)!r})" for n in ("lr", "learning_rate") if get(n) is not None), "")
    return f"no setting looks extreme: lower the learning rate{lr}, or look for NaN/inf in the inputs"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write data to path so that readers see the old file or the whole new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a data file should be readable like any other
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def round_floats(value, significant: int = 4):
    """Floats to `significant` digits, in nested dicts, lists and tuples (a results file stays small and readable)."""
    if isinstance(value, float):
        return float(f"{value:.{significant}g}")
    if isinstance(value, dict):
        return {k: round_floats(v, significant) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [round_floats(v, significant) for v in value]
    return value
