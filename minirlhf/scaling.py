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

Two memory savings of the production libraries can be switched on: LoRA (the policy's weights frozen, only
low-rank adapters trained, as DeepSpeed-Chat's scripts do) and Adam offload (Adam's 12 bytes per trained
parameter kept in CPU memory, OpenRLHF's --adam_offload, ZeRO-Offload). `published_checks` compares the
estimate with what DeepSpeed-Chat and OpenRLHF report training.
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


def trained_model_bytes(params: float, stage: int = 0, world: int = 1, adam_offload: bool = False) -> float:
    """Bytes per GPU of a model trained with Adam in mixed precision under ZeRO `stage` over `world` GPUs:
    weights 2 P, gradients 2 P, Adam 12 P, the sharded parts divided by world (see the module docstring).
    adam_offload: Adam's state lives in CPU memory (ZeRO-Offload), so the GPU keeps only weights and gradients."""
    _check(params, stage, world)
    weights, grads = WEIGHT_BYTES * params, GRAD_BYTES * params
    adam = 0.0 if adam_offload else ADAM_BYTES * params
    return (weights / (world if stage >= 3 else 1) + grads / (world if stage >= 2 else 1)
            + adam / (world if stage >= 1 else 1))


def frozen_model_bytes(params: float, stage: int = 0, world: int = 1) -> float:
    """Bytes per GPU of a model used without training (bf16 weights), sharded only under stage 3."""
    _check(params, stage, world)
    return WEIGHT_BYTES * params / (world if stage >= 3 else 1)


def kv_cache_bytes(shape: ModelShape, rows: int, tokens: int) -> float:
    """The KV cache of `rows` sequences of `tokens` tokens (prompt and response) on one GPU."""
    return shape.kv_bytes_per_token * rows * tokens


def lora_params(shape: ModelShape, rank: int) -> float:
    """Parameters of rank-`rank` LoRA adapters on every linear layer of every block: an adapter on a (d_in, d_out)
    layer has rank x (d_in + d_out) parameters; a block has four d x d attention projections and a d x 4d MLP (OPT's
    shape), so rank x 18 d per block."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    return rank * shape.layers * (4 * 2 * shape.d_model + 2 * (shape.d_model + 4 * shape.d_model))


def _shape(size) -> ModelShape:
    if isinstance(size, ModelShape):
        return size
    if size not in SHAPES:
        raise ValueError(f"size must be one of {tuple(SHAPES)} or a ModelShape, got {size!r}")
    return SHAPES[size]


def rlhf_memory(algorithm: str, size: str | ModelShape, *, stage: int = 0, world: int = 1, rows_per_gpu: int = 8,
                tokens: int = 1024, critic: str | ModelShape | None = None, lora_rank: int = 0,
                adam_offload: bool = False) -> dict[str, float]:
    """GB per GPU of each part, and their total, for one algorithm with policy size `size` (a key of SHAPES, or a
    ModelShape). Every other model (value, reference, reward) is the policy's size, as in InstructGPT's same-family
    setups, unless `critic` gives PPO's value and reward models another size (DeepSpeed-Chat's OPT-350M); the KV
    cache is the policy's, for rows_per_gpu rollouts of `tokens` tokens. lora_rank > 0: the policy's weights are
    frozen and only LoRA adapters of that rank train (`lora_params`); adam_offload: every trained model keeps
    Adam's state in CPU memory."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    shape = _shape(size)
    if critic is not None and algorithm != "ppo":
        raise ValueError(f"critic (the value and reward models' size) is for ppo only, got algorithm {algorithm!r}")
    small = shape if critic is None else _shape(critic)
    frozen = frozen_model_bytes(shape.params, stage, world)
    if lora_rank:
        parts = {"policy (frozen, LoRA adapters trained)":
                 frozen + trained_model_bytes(lora_params(shape, lora_rank), stage, world, adam_offload)}
    else:
        parts = {"policy (trained)": trained_model_bytes(shape.params, stage, world, adam_offload)}
    if algorithm == "ppo":
        parts.update({"value model (trained)": trained_model_bytes(small.params, stage, world, adam_offload),
                      "reference": frozen, "reward model": frozen_model_bytes(small.params, stage, world)})
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


# ---------------------------------------------------------------- against published figures
# Shapes of the published runs' models: OPT (Zhang et al. 2022, table 1; nominal sizes, DeepSpeed-Chat's blog calls
# OPT-13B "13.2B") and Llama-3-70B (grouped-query attention, 8 KV heads).
PUBLISHED_SHAPES = {
    "OPT-350M": ModelShape(0.35e9, 24, 1024, 16, 16), "OPT-1.3B": ModelShape(1.3e9, 24, 2048, 32, 32),
    "OPT-2.7B": ModelShape(2.7e9, 32, 2560, 32, 32), "OPT-6.7B": ModelShape(6.7e9, 32, 4096, 32, 32),
    "OPT-13B": ModelShape(13e9, 40, 5120, 40, 40), "OPT-30B": ModelShape(30e9, 48, 7168, 56, 56),
    "OPT-66B": ModelShape(66e9, 64, 9216, 72, 72), "Llama-3-70B": ModelShape(70.6e9, 80, 8192, 64, 8)}

_DS_BLOG = "https://github.com/microsoft/DeepSpeed/blob/master/blogs/deepspeed-chat/README.md"
_DS_README = "https://github.com/microsoft/DeepSpeedExamples/blob/master/applications/DeepSpeed-Chat/README.md"
_DS_SCRIPTS = ("https://github.com/microsoft/DeepSpeedExamples/tree/master/applications/DeepSpeed-Chat/training/"
               "step3_rlhf_finetuning/training_scripts/opt")
_OPENRLHF_README = "https://github.com/OpenRLHF/OpenRLHF/blob/main/README.md"
_OPENRLHF_70B = "https://github.com/OpenRLHF/OpenRLHF/blob/main/examples/scripts/train_ppo_llama_ray_70b.sh"

# What each publication reports training (PPO), in our words, with the setting its scripts use. DeepSpeed-Chat's
# step-3 scripts: actor LoRA rank 128 on the decoder layers (their linear weights frozen), an OPT-350M critic and
# reward model, ZeRO stage 0 on one GPU and 3 on several, prompts and answers of 256 tokens each. OpenRLHF's 70B
# script: actor, critic, reference and reward all 70B, ZeRO-3, --adam_offload, 12 GPUs for the four models (actor 4,
# critic 4, reference 2, reward 2: shares proportional to their memory, so like ZeRO-3 over 12) and 4 more for two
# vLLM engines, 1,024 + 1,024 tokens.
_DS = dict(critic="OPT-350M", lora_rank=128, adam_offload=False, tokens=512, setting_url=_DS_SCRIPTS)
PUBLISHED = [
    dict(source="DeepSpeed-Chat blog, table 3", url=_DS_BLOG, claim="the largest actor on one V100 32G is OPT-2.7B",
         policy="OPT-2.7B", next_size="OPT-6.7B", gpus=1, world=1, gpu_gib=32, stage=0, rows=1, **_DS),
    dict(source="DeepSpeed-Chat blog, table 3", url=_DS_BLOG, claim="the largest actor on one A6000 48G is OPT-6.7B",
         policy="OPT-6.7B", next_size="OPT-13B", gpus=1, world=1, gpu_gib=48, stage=0, rows=1, **_DS),
    dict(source="DeepSpeed-Chat blog, table 3", url=_DS_BLOG, claim="the largest actor on one A100 40G is OPT-6.7B",
         policy="OPT-6.7B", next_size="OPT-13B", gpus=1, world=1, gpu_gib=40, stage=0, rows=1, **_DS),
    dict(source="DeepSpeed-Chat blog, table 3", url=_DS_BLOG, claim="the largest actor on one A100 80G is OPT-13B",
         policy="OPT-13B", next_size="OPT-30B", gpus=1, world=1, gpu_gib=80, stage=0, rows=1, **_DS),
    dict(source="DeepSpeed-Chat README, example 1", url=_DS_README,
         claim="OPT-1.3B actor + OPT-350M reward model, all three steps on one A6000 48G in 2.2 h",
         policy="OPT-1.3B", next_size=None, gpus=1, world=1, gpu_gib=48, stage=0, rows=16, **_DS),
    dict(source="DeepSpeed-Chat README, example 2", url=_DS_README,
         claim="OPT-13B actor on one node of 8 A100-40G, 13.6 h", policy="OPT-13B", next_size=None,
         gpus=8, world=8, gpu_gib=40, stage=3, rows=16, **_DS),
    dict(source="DeepSpeed-Chat README, example 3", url=_DS_README,
         claim="OPT-66B actor on 8 nodes x 8 A100-80G, 9 h", policy="OPT-66B", next_size=None,
         gpus=64, world=64, gpu_gib=80, stage=3, rows=4, **_DS),
    dict(source="OpenRLHF README and 70B script", url=_OPENRLHF_README, setting_url=_OPENRLHF_70B,
         claim="full PPO of a 70B model (70B critic and reward model) on A100-80G GPUs with vLLM: 16 in the script",
         policy="Llama-3-70B", next_size=None, gpus=16, world=12, gpu_gib=80, stage=3, rows=2, tokens=2048,
         critic=None, lora_rank=0, adam_offload=True),
]


def published_checks() -> list[dict]:
    """Each row of PUBLISHED with our estimate (PPO, rlhf_memory, activations excluded):
    ours_gb: GB per GPU in the publication's setting (its critic size, LoRA, Adam offload, ZeRO stage, GPUs);
    plain_gb: the same GPUs with rlhf_memory's defaults (full fine-tuning, a policy-sized critic, Adam on the GPU);
    gpu_gb: the card's memory (its nominal GB are GiB, 2**30 bytes: an 80G card holds 85.9 GB);
    fits / plain_fits: estimate <= card; next_gb / next_fits: the next size up, for a "largest model" claim;
    agrees: the publication's claim holds by our estimate (it fits, and the next size up does not);
    savings: what the publication's setting saves against plain (LoRA, a small critic, Adam offload).
    The tolerance is that of the estimate: model states and KV cache only, so a fit with little headroom
    (gpu_gb - ours_gb) leaves little for activations, which checkpointing keeps small."""
    rows = []
    for p in PUBLISHED:
        shape, critic = PUBLISHED_SHAPES[p["policy"]], p["critic"] and PUBLISHED_SHAPES[p["critic"]]
        common = dict(stage=p["stage"], world=p["world"], rows_per_gpu=p["rows"], tokens=p["tokens"])
        ours = rlhf_memory("ppo", shape, critic=critic, lora_rank=p["lora_rank"], adam_offload=p["adam_offload"],
                           **common)["total"]
        plain = rlhf_memory("ppo", shape, **common)["total"]
        gpu_gb = p["gpu_gib"] * 2**30 / GB
        row = {**p, "gpu_gb": gpu_gb, "ours_gb": ours, "fits": ours <= gpu_gb, "plain_gb": plain,
               "plain_fits": plain <= gpu_gb, "next_gb": None, "next_fits": None}
        if p["next_size"]:
            row["next_gb"] = rlhf_memory("ppo", PUBLISHED_SHAPES[p["next_size"]], critic=critic, lora_rank=p["lora_rank"],
                                         adam_offload=p["adam_offload"], **common)["total"]
            row["next_fits"] = row["next_gb"] <= gpu_gb
        row["agrees"] = row["fits"] and not row["next_fits"]
        row["savings"] = ", ".join([f"LoRA rank {p['lora_rank']}"] * bool(p["lora_rank"])
                                   + [f"{p['critic']} critic and reward"] * bool(p["critic"])
                                   + ["Adam in CPU memory"] * p["adam_offload"]) or "none"
        rows.append(row)
    return rows
