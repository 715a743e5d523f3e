"""The toy worlds. Every task is a module with the same small interface, `Task`, so trainers never need to
know which task they train on, and a new task (the capstone's) is one new module.

Every function that takes a prompt and a response takes them in that order: (prompt, response).
"""
from __future__ import annotations

from types import ModuleType
from typing import Protocol, runtime_checkable

from . import arithmetic, long_arithmetic, reviews, support, tool_arithmetic


@runtime_checkable
class Task(Protocol):
    """What a task offers (as module-level functions; `isinstance(module, Task)` checks them):

    - prompts(n, seed) -> n prompt texts, for sampling, RL and evaluation;
    - pretraining_corpus(n, seed) -> n texts without prompts, the base model's diet;
    - sft_dataset(n, seed) -> n (prompt, response) demonstrations;
    - reward(prompt, response) -> float: the hidden gold human (reviews) or the verifier (arithmetic).
    """

    def prompts(self, n: int, seed: int = 0) -> list[str]: ...

    def pretraining_corpus(self, n: int, seed: int = 0) -> list[str]: ...

    def sft_dataset(self, n: int, seed: int = 0) -> list[tuple[str, str]]: ...

    def reward(self, prompt: str, response: str) -> float: ...


TASKS: dict[str, ModuleType] = {"reviews": reviews, "arithmetic": arithmetic, "tool_arithmetic": tool_arithmetic,
                               "support": support, "long_arithmetic": long_arithmetic}


def get_task(name: str) -> ModuleType:
    """The task module called `name`."""
    if name not in TASKS:
        raise KeyError(f"no task named {name!r}; the tasks are: {', '.join(TASKS)}")
    return TASKS[name]
