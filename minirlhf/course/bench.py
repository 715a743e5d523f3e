"""How fast is minirlhf on this machine, and how close is it to the machine's limit?

    python -m minirlhf bench               # everything, ~2 minutes
    python -m minirlhf bench --quick       # fewer new tokens, shorter timing, ~10 s (the smoke test)
    python -m minirlhf bench --only train  # one section (see --help for the names)

Every number comes from this run on this machine: a section warms up, then reports the median of a
few timed repeats (time.perf_counter). Sections live in BENCHMARKS; add one by writing a function
`(BenchOptions, results dict) -> list of rows` and registering it there.
"""
from __future__ import annotations

import argparse
import ctypes
import inspect
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .. import zoo
from ..dpo import DPOConfig, train_dpo, with_reference_logprobs
from ..generation import generate
from ..grpo import GRPOConfig, train_grpo
from ..model import GPT, GPTConfig, num_params, training_flops_per_token
from ..ppo import PPOConfig, train_ppo
from ..preferences import DEFAULT_TEMPERATURE
from ..reward import RewardModel, evaluate_reward_model, train_reward_model
from ..tasks import arithmetic, reviews
from ..tokenizer import BOS_ID, TOKENIZER
from .recipes import tool_grpo
from ..utils import DEFAULT_THREADS, seed_everything
from .recipes import RECIPES

Row = tuple[str, str, str]  # (what was measured, the result, a note)

TRAIN_GOAL = 0.60  # of the dense matmul GFLOP/s
CACHE_GOALS = {1: 2.0, 64: 8.0}  # batch size -> speedup of the KV cache over full recompute


@dataclass
class BenchOptions:
    quick: bool = False
    seconds: float = 2.0  # keep timing until both this many seconds and `repeats` calls have passed
    repeats: int = 3
    threads: int = DEFAULT_THREADS
    compile: bool = False


def measure(fn: Callable[[], object], opts: BenchOptions, warmup: int = 2) -> float:
    """Median seconds per call of fn, after `warmup` untimed calls (first calls pay for allocation
    and caches). Timed calls continue until both opts.repeats calls and opts.seconds have passed."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    deadline = time.perf_counter() + opts.seconds
    while len(times) < opts.repeats or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_matmul(opts: BenchOptions, results: dict) -> list[Row]:
    """Dense float32 matmul, n x n by n x n: 2 n^3 FLOPs. The practical peak every other number is
    compared with."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    seconds = measure(lambda: a @ b, opts)
    results["matmul_gflops"] = 2 * n**3 / seconds / 1e9
    return [(f"dense fp32 matmul {n}x{n}", f"{results['matmul_gflops']:.1f} GFLOP/s", "the limit")]


def train_setup(config: GPTConfig, batch_size: int, seed: int = 0, compile: bool = False):
    """A GPT, its AdamW and one training step: forward, cross-entropy, backward, optimizer step."""
    seed_everything(seed, threads=None)
    model = GPT(config)
    # fused=True updates all parameters in one kernel instead of a dozen ops per tensor.
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
    forward = torch.compile(model) if compile else model
    data = torch.randint(3, config.vocab_size, (batch_size, config.context_length + 1))
    inputs, targets = data[:, :-1], data[:, 1:]

    def step():
        logits = forward(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return model, step


def bench_train(opts: BenchOptions, results: dict) -> list[Row]:
    """Training throughput of the course's tiny GPT: tokens/s and achieved GFLOP/s (6N + 12 L d T per
    token, see training_flops_per_token) against the dense matmul limit."""
    config = GPTConfig(vocab_size=TOKENIZER.vocab_size, context_length=64, d_model=128, n_layers=4, n_heads=4)
    batch_size = 32
    tokens = batch_size * config.context_length
    flops = training_flops_per_token(config) * tokens
    variants = [("eager", False)] + ([("torch.compile", True)] if opts.compile else [])
    rows = []
    for name, compile in variants:
        model, step = train_setup(config, batch_size, compile=compile)
        seconds = measure(step, opts, warmup=5 if compile else 2)
        gflops = flops / seconds / 1e9
        label = f"train GPT {num_params(model) / 1e6:.2f}M params, B={batch_size} T={config.context_length}, {name}"
        rows.append((label, f"{tokens / seconds:,.0f} tokens/s", f"{seconds * 1e3:.1f} ms/step"))
        rows.append(("  achieved", f"{gflops:.1f} GFLOP/s", _vs_peak(gflops, results)))
    return rows


def _vs_peak(gflops: float, results: dict) -> str:
    peak = results.get("matmul_gflops")
    if peak is None:
        return "run the matmul section too for the ratio"
    ratio = gflops / peak
    return f"{ratio:.0%} of matmul (goal >= {TRAIN_GOAL:.0%}: {'met' if ratio >= TRAIN_GOAL else 'MISSED'})"


def bench_generate(opts: BenchOptions, results: dict) -> list[Row]:
    """Greedy decoding with and without the KV cache from a random (untrained) GPT, at batch 1 and
    64. eos_id=None so no row stops early: every run generates exactly new_tokens per row."""
    seed_everything(0, threads=None)
    config = GPTConfig(vocab_size=TOKENIZER.vocab_size, context_length=128)
    model = GPT(config)
    prompt_len, new_tokens = 32, (8 if opts.quick else 64)
    rows = []
    for batch_size, goal in CACHE_GOALS.items():
        prompts = [[BOS_ID] + p for p in torch.randint(3, config.vocab_size, (batch_size, prompt_len - 1)).tolist()]
        cached, cached_tokens = time_generate(model, prompts, new_tokens, True, opts)
        full, full_tokens = time_generate(model, prompts, new_tokens, False, opts)
        where = f"generate B={batch_size}, prompt {prompt_len}, {new_tokens} new"
        rows += [
            (f"{where}, KV cache", f"{batch_size * new_tokens / cached:,.0f} tokens/s", f"{cached * 1e3:.0f} ms"),
            (f"{where}, full recompute", f"{batch_size * new_tokens / full:,.0f} tokens/s", f"{full * 1e3:.0f} ms"),
            ("  KV cache speedup", f"{full / cached:.1f}x", _vs_goal(full / cached, goal, opts)),
            ("  greedy outputs match", "yes" if torch.equal(cached_tokens, full_tokens) else "NO",
             "KV cache vs full recompute"),
        ]
    return rows


def _vs_goal(speedup: float, goal: float, opts: BenchOptions) -> str:
    if opts.quick:
        return f"goal >= {goal:g}x is for 64 new tokens, not judged with --quick"
    return f"goal >= {goal:g}x: {'met' if speedup >= goal else 'MISSED'}"


def time_generate(model: GPT, prompts: list[list[int]], new_tokens: int, use_cache: bool,
                  opts: BenchOptions) -> tuple[float, torch.Tensor]:
    """Median seconds of one greedy generate call, and the tokens (B, P + new_tokens) it produced."""
    out = {}

    def run():
        out["tokens"] = generate(model, prompts, new_tokens, greedy=True, use_cache=use_cache, eos_id=None).tokens

    return measure(run, opts, warmup=1), out["tokens"]


def bench_reward(opts: BenchOptions, results: dict) -> list[Row]:
    """Reward-model training speed on the shipped pairs (the zoo recipe's batch and model) and the shipped
    reviews-rm's held-out accuracy as a share of the Bayes ceiling of its noisy labels."""
    pairs = zoo.load_pairs("reviews-pairs")
    rm = RewardModel.from_policy(zoo.load("reviews-sft"))
    steps = 2 if opts.quick else 10
    train_reward_model(rm, pairs["train"][:64], steps=1)                      # warm-up
    start = time.perf_counter()
    train_reward_model(rm, pairs["train"][:steps * 32], steps=steps)
    per_step = (time.perf_counter() - start) / steps
    recipe_steps = inspect.signature(RECIPES["reviews-rm"].train).parameters["steps"].default
    test = pairs["test"][:100] if opts.quick else pairs["test"]
    start = time.perf_counter()
    metrics = evaluate_reward_model(zoo.load("reviews-rm"), test, DEFAULT_TEMPERATURE)
    scoring = time.perf_counter() - start
    return [
        ("train reward model, 32 pairs/step (64 rows)", f"{per_step * 1e3:.0f} ms/step",
         f"the zoo recipe's {recipe_steps} steps: about {per_step * recipe_steps:.0f} s"),
        (f"score {2 * len(test)} responses with reviews-rm", f"{2 * len(test) / scoring:,.0f} responses/s", ""),
        (f"reviews-rm on {len(test)} test pairs", f"{metrics['ratio']:.1%} of the Bayes ceiling",
         f"expected accuracy {metrics['expected_accuracy']:.3f} / ceiling {metrics['bayes_ceiling']:.3f}"
         + ("" if opts.quick else f" (goal >= 97%: {'met' if metrics['ratio'] >= 0.97 else 'MISSED'})")),
    ]


def bench_ppo(opts: BenchOptions, results: dict) -> list[Row]:
    """One PPO iteration of the default configuration (ppo.PPOConfig) from the SFT model, split into
    generation (KV-cached sampling), scoring (reward model + reference and old log-probs) and update
    (GAE + epochs of minibatch steps); and the full default run's time, extrapolated and as recorded
    by the zoo when reviews-ppo was built."""
    full = PPOConfig()
    config = PPOConfig(iterations=1 if opts.quick else 3, **({"batch_size": 8, "minibatches": 2} if opts.quick else {}))
    reference, rm = zoo.load("reviews-sft"), zoo.load("reviews-rm")
    _, history = train_ppo(zoo.load("reviews-sft"), reference, rm, reviews.prompts, config)
    parts = {k: statistics.median(history[f"t_{k}"]) for k in ("generate", "score", "update")}
    total = sum(parts.values())
    rows = [(f"PPO iteration, {config.batch_size} prompts, {config.epochs} epochs x {config.minibatches} minibatches",
             f"{total:.2f} s", ", ".join(f"{k} {v:.2f} s ({v / total:.0%})" for k, v in parts.items()))]
    if not opts.quick:
        rows.append((f"full default run ({full.iterations} iterations)", f"~{total * full.iterations / 60:.1f} min",
                     "extrapolated from this iteration time"))
    built = zoo.read_manifest().get("reviews-ppo", {}).get("build_seconds")
    if built is not None:
        rows.append(("  reviews-ppo as built by the zoo", f"{built / 60:.1f} min", "build_seconds in data/zoo/MANIFEST.json"))
    return rows


def bench_grpo(opts: BenchOptions, results: dict) -> list[Row]:
    """GRPO steps from arithmetic-sft on the exact verifier (16 prompts x 8 answers, as recipes.GRPO_ARITHMETIC),
    split into generation (KV-cached sampling of all P x G answers), scoring (the Python verifier) and update
    (one forward and backward of the policy on the group batch); the zoo's arithmetic-grpo build time; and the
    same step with the calculator from arithmetic-tool-sft (recipes.tool_grpo), as a ratio to the plain one."""
    steps = 1 if opts.quick else 5
    config = GRPOConfig(steps=steps + 1, prompts_per_step=4 if opts.quick else 16, num_generations=8)
    _, history = train_grpo(zoo.load("arithmetic-sft"), arithmetic.prompts, arithmetic.reward, config)
    parts = {k: statistics.median(history[f"t_{k}"][1:]) for k in ("generate", "score", "update")}   # step 0 warms up
    total = sum(parts.values())
    rows = [(f"GRPO step, {config.prompts_per_step} prompts x {config.num_generations} answers", f"{total:.3f} s",
             ", ".join(f"{k} {v:.3f} s ({v / total:.0%})" for k, v in parts.items()))]
    built = zoo.read_manifest().get("arithmetic-grpo", {}).get("build_seconds")
    if built is not None:
        rows.append(("  arithmetic-grpo as built by the zoo", f"{built / 60:.1f} min", "build_seconds in data/zoo/MANIFEST.json"))
    # the same step with the calculator (notebook 16): longer answers, and rows paused while the tool's output is written
    _, history = tool_grpo(zoo.load("arithmetic-tool-sft"), steps=steps + 1, prompts_per_step=config.prompts_per_step)
    tool_parts = {k: statistics.median(history[f"t_{k}"][1:]) for k in ("generate", "score", "update")}
    tool_total = sum(tool_parts.values())
    rows.append((f"  with the calculator (recipes.TOOL_GRPO, {statistics.mean(history['tool_calls']):.2f} calls per answer)",
                 f"{tool_total:.3f} s ({tool_total / total:.1f}x)",
                 ", ".join(f"{k} {v:.3f} s ({v / tool_total:.0%})" for k, v in tool_parts.items())))
    return rows


def bench_dpo(opts: BenchOptions, results: dict) -> list[Row]:
    """DPO steps of the default configuration (dpo.DPOConfig, the reviews-dpo recipe) from the SFT model, with
    the reference's log-probs precomputed (TRL's precompute_ref_log_probs) and without (a reference forward
    pass in every step); the one-off precomputation over the 4000 pairs; and the full run, extrapolated and as
    recorded by the zoo when reviews-dpo was built."""
    full = DPOConfig()
    sft, pairs = zoo.load("reviews-sft"), zoo.load_pairs("reviews-pairs")["train"]
    steps = 2 if opts.quick else 10
    batch = pairs[:steps * full.batch_size]
    start = time.perf_counter()
    carried = with_reference_logprobs(sft, pairs[:256] if opts.quick else pairs)
    precompute = time.perf_counter() - start
    per_step = {}
    for pre in (True, False):
        train_dpo(zoo.load("reviews-sft"), carried[:full.batch_size], DPOConfig(steps=1, precompute_ref_log_probs=pre),
                  reference=sft)                                                    # warm-up
        start = time.perf_counter()
        train_dpo(zoo.load("reviews-sft"), carried[:len(batch)] if pre else batch,
                  DPOConfig(steps=steps, precompute_ref_log_probs=pre), reference=sft)
        per_step[pre] = (time.perf_counter() - start) / steps
    rows = [(f"DPO step, {full.batch_size} pairs (64 responses), reference log-probs precomputed",
             f"{per_step[True] * 1e3:.0f} ms/step", ""),
            ("DPO step, reference run in every step", f"{per_step[False] * 1e3:.0f} ms/step",
             f"precomputing saves {1 - per_step[True] / per_step[False]:.0%} of a step"),
            (f"precompute reference log-probs of {len(carried)} pairs", f"{precompute:.1f} s", "once per data set")]
    if not opts.quick:
        rows.append((f"full default DPO run ({full.steps} steps, 4000 pairs)",
                     f"~{(precompute + per_step[True] * full.steps) / 60:.1f} min",
                     "extrapolated: precompute + steps, without the recipe's evaluations"))
    built = zoo.read_manifest().get("reviews-dpo", {}).get("build_seconds")
    if built is not None:
        rows.append(("  reviews-dpo as built by the zoo", f"{built / 60:.1f} min",
                     "build_seconds in data/zoo/MANIFEST.json (with 6 evaluations on 128 prompts)"))
    return rows


BENCHMARKS: dict[str, Callable[[BenchOptions, dict], list[Row]]] = {
    "matmul": bench_matmul,
    "train": bench_train,
    "generate": bench_generate,
    "reward": bench_reward,
    "ppo": bench_ppo,
    "grpo": bench_grpo,
    "dpo": bench_dpo,
}


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks instead of returning them to the OS.

    By default glibc hands large freed blocks (here: activations of a few MB) back to the OS, so every
    training step page-faults them back in, zero-filled: ~10 ms of a ~100 ms step on this model.
    Intel's PyTorch CPU tuning guide fixes the same problem with jemalloc/tcmalloc. Returns False
    where there is no glibc (macOS, Windows): nothing to do there.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))


def format_table(rows: list[Row]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    return "\n".join(f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c}".rstrip() for a, b, c in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minirlhf bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer new tokens, shorter timing (~10 s)")
    parser.add_argument("--seconds", type=float, help="minimum timed seconds per measurement")
    parser.add_argument("--only", choices=list(BENCHMARKS), action="append", help="run only this section (repeatable)")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch threads (default %(default)s)")
    parser.add_argument("--compile", action="store_true", help="also time training under torch.compile (slow to start)")
    parser.add_argument("--default-malloc", action="store_true", help="skip keep_freed_memory() (to see its effect)")
    args = parser.parse_args(argv)
    opts = BenchOptions(quick=args.quick, threads=args.threads, compile=args.compile,
                        seconds=0.3 if args.quick else 2.0)
    if args.seconds is not None:
        opts.seconds = args.seconds
    seed_everything(0, threads=opts.threads)
    malloc = "default" if args.default_malloc else ("keeps freed memory" if keep_freed_memory() else "default")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, malloc {malloc}, "
          f"median of >= {opts.repeats} runs and >= {opts.seconds:g} s per line", flush=True)
    results: dict = {}
    for name in args.only or BENCHMARKS:
        rows = BENCHMARKS[name](opts, results)
        print(f"\n[{name}]\n{format_table(rows)}", flush=True)
    return 0
