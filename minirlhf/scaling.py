"""What RLHF costs in GPU memory at real sizes (notebook 18): a back-of-the-envelope model, checked against the
ZeRO paper's figures.

Training one model of P parameters with Adam in mixed precision holds, per parameter (Rajbhandari et al. 2020):

    2 bytes   the bf16 weights the forward and backward use
    2 bytes   their bf16 gradients
    12 bytes  Adam's state in fp32: a master copy of the weights (4), the momentum (4) and the variance (4)

16 bytes in all: a 7.5B model needs 120 GB before a single activation. ZeRO shards over N GPUs, stage 1 the
optimizer state, stage 2 the gradients as well, stage 3 the weights as well (FSDP's full sharding):

    stage 0: 16 P        stage 1: 4 P + 12 P / N        stage 2: 2 P + 14 P / N        stage 3: 16 P / N

A frozen model (the reference, the reward model) holds only its bf16 weights, 2 P (2 P / N under stage 3).
Generation adds a KV cache: 2 (K and V) x layers x KV heads x head size x 2 bytes per token of every row.
Activations are left out: they depend on the batch, the sequence and checkpointing, and are what is left.

PPO trains the policy and a value model and keeps a reference and a reward model; DPO trains the policy and
keeps a reference (or nothing, with its log-probs precomputed); GRPO trains the policy, with a reference
only when beta > 0 (TRL's default beta is 0).
"""
from __future__ import annotations

from dataclasses import dataclass

GB = 1e9                          # the ZeRO paper's GB (and the one on GPU spec sheets)
WEIGHT_BYTES, GRAD_BYTES, ADAM_BYTES = 2, 2, 12


@dataclass(frozen=True)
class ModelShape:
    """A model's size and the shapes its KV cache depends on. kv_heads < heads: grouped-query attention."""
    params: float
    layers: int
    d_model: int
    heads: int
    kv_heads: int

    @property
    def kv_bytes_per_token(self) -> int:
        """2 (K and V) x layers x kv_heads x head size x 2 bytes (bf16)."""
        return 2 * self.layers * self.kv_heads * (self.d_model // self.heads) * 2


# Shapes of public models of about these sizes: GPT-2 small-ish, a 1B Llama-style, Llama-2 7B and 70B (GQA, 8 KV heads).
SHAPES = {"0.1B": ModelShape(0.124e9, 12, 768, 12, 12), "1B": ModelShape(1.1e9, 22, 2048, 32, 4),
          "7B": ModelShape(6.7e9, 32, 4096, 32, 32), "70B": ModelShape(69e9, 80, 8192, 64, 8)}
ALGORITHMS = ("ppo", "dpo", "dpo, precomputed reference", "grpo", "grpo, beta > 0")


def _check(params: float, stage: int, world: int) -> None:
    if params <= 0:
        raise ValueError(f"params must be > 0, got {params}")
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"ZeRO stage must be 0, 1, 2 or 3, got {stage!r}")
    if world < 1 or int(world) != world:
        raise ValueError(f"world (the number of GPUs) must be a positive integer, got {world!r}")


def trained_model_bytes(params: float, stage: int = 0, world: int = 1) -> float:
    """Bytes per GPU of a model trained with Adam in mixed precision under ZeRO `stage` over `world` GPUs:
    weights 2 P, gradients 2 P, Adam 12 P, the sharded parts divided by world (see the module docstring)."""
    _check(params, stage, world)
    weights, grads, adam = WEIGHT_BYTES * params, GRAD_BYTES * params, ADAM_BYTES * params
    return (weights / (world if stage >= 3 else 1) + grads / (world if stage >= 2 else 1)
            + adam / (world if stage >= 1 else 1))


def frozen_model_bytes(params: float, stage: int = 0, world: int = 1) -> float:
    """Bytes per GPU of a model used without training (bf16 weights), sharded only under stage 3."""
    _check(params, stage, world)
    return WEIGHT_BYTES * params / (world if stage >= 3 else 1)


def kv_cache_bytes(shape: ModelShape, rows: int, tokens: int) -> float:
    """The KV cache of `rows` sequences of `tokens` tokens (prompt and response) on one GPU."""
    return shape.kv_bytes_per_token * rows * tokens


def rlhf_memory(algorithm: str, size: str, *, stage: int = 0, world: int = 1, rows_per_gpu: int = 8,
                tokens: int = 1024) -> dict[str, float]:
    """GB per GPU of each part, and their total, for one algorithm with policy size `size` (a key of SHAPES).
    Every other model (value, reference, reward) is the policy's size, as in InstructGPT's and DeepSpeed-Chat's
    same-family setups; the KV cache is the policy's, for rows_per_gpu rollouts of `tokens` tokens."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    if size not in SHAPES:
        raise ValueError(f"size must be one of {tuple(SHAPES)}, got {size!r}")
    shape = SHAPES[size]
    trained, frozen = trained_model_bytes(shape.params, stage, world), frozen_model_bytes(shape.params, stage, world)
    parts = {"policy (trained)": trained}
    if algorithm == "ppo":
        parts.update({"value model (trained)": trained, "reference": frozen, "reward model": frozen})
    elif algorithm in ("dpo", "grpo, beta > 0"):
        parts["reference"] = frozen
    if algorithm in ("ppo", "grpo", "grpo, beta > 0"):
        parts["KV cache (rollouts)"] = kv_cache_bytes(shape, rows_per_gpu, tokens)
    out = {name: value / GB for name, value in parts.items()}
    out["total"] = sum(out.values())
    return out


def memory_table(sizes=tuple(SHAPES), stages=(0, 3), world: int = 8, **kwargs) -> list[dict]:
    """Rows {algorithm, size, stage, world, total GB per GPU} for every combination (rlhf_memory's kwargs)."""
    return [{"algorithm": a, "size": s, "stage": z, "world": world if z else 1,
             "gb_per_gpu": rlhf_memory(a, s, stage=z, world=world if z else 1, **kwargs)["total"]}
            for s in sizes for a in ALGORITHMS for z in stages]
