"""Checks of notebook 18's exercises (scaling up: memory at real sizes)."""
from __future__ import annotations

from typing import Callable

from ..scaling import trained_model_bytes
from .engine import run_check


def _sharded(weights_by: int, grads_by: int, adam_by: int, adam_bytes: int = 12):
    return lambda p, stage, world: (2 * p / (world if stage >= weights_by else 1)
                                    + 2 * p / (world if stage >= grads_by else 1)
                                    + adam_bytes * p / (world if stage >= adam_by else 1))


def check_zero_memory(fn: Callable) -> Callable:
    """fn(params, stage, world) -> bytes per GPU (a float) of a model trained with Adam in mixed precision:
    bf16 weights 2 bytes/parameter, bf16 gradients 2, Adam's fp32 state 12 (master weights, momentum,
    variance); ZeRO stage 1 shards the Adam state over the `world` GPUs, stage 2 the gradients too, stage 3
    the weights too; stage 0 shards nothing."""
    cases = [(f"{p / 1e9:g}B parameters, stage {s}, {w} GPUs", (p, s, w))
             for p, w in ((7.5e9, 64), (1.3e9, 8), (70e9, 16)) for s in (0, 1, 2, 3)] + [("one GPU, stage 3", (7e9, 3, 1))]
    mistakes = {
        "Adam's state is 12 bytes per parameter, not 8: besides the momentum and the variance (4 bytes each) it "
        "keeps an fp32 master copy of the weights (4), which the update is applied to.": _sharded(3, 2, 1, adam_bytes=8),
        "stage 2 shards the gradients and the optimizer state, not the weights (that is stage 3).": _sharded(2, 2, 1),
        "stage 1 shards only the optimizer state: the gradients (stage 2) and the weights (stage 3) stay whole on "
        "every GPU.": _sharded(1, 1, 1),
        "stage 3 shards the weights too: every part is divided by the number of GPUs.": _sharded(4, 2, 1),
        "the stages are cumulative: stage 2 keeps stage 1's sharding of the optimizer state, and stage 3 both.":
            lambda p, stage, world: trained_model_bytes(p, 0, 1) - (
                {1: 12 * p * (1 - 1 / world), 2: 2 * p * (1 - 1 / world), 3: 2 * p * (1 - 1 / world)}.get(stage, 0)),
    }
    return run_check("zero_memory", fn, trained_model_bytes, cases, mistakes, atol=1.0)
