"""Data parallelism with torch.distributed: the package's losses on several processes (notebook 18).

Launched with torchrun, which ships with torch (never `pip install torchrun`: that is an unrelated package):

    torchrun --standalone --nproc_per_node=2 -m minirlhf.distributed --out results.json

Each process (a rank) holds the whole model wrapped in DistributedDataParallel and takes its shard of the
batch; during backward DDP all-reduces the gradients and divides them by the number of ranks W, so every rank
takes the same step. That step is the single-process step on the whole batch only if each rank's loss is
its share of the global loss in this sense:

    global loss = (1/W) sum_r local_loss_r.

- A mean over examples (DPO, a sequence-level loss) with equal shards: the local mean is right.
- A mean over tokens (SFT, GRPO's "dapo" token mean) with ragged rows: the ranks hold different numbers of
  tokens, and sum_r / own count_r averaged over ranks is not sum / total count. Divide the local sum by the
  global count / W instead: pass `num_items(mask)` (one all-reduce of a count) to the package's losses.
- Group statistics (GRPO's mean and std of a prompt's G rewards): a group split over ranks gets a different
  mean on each half. Keep a prompt's G answers on one rank (`shard_groups`), or all-reduce the statistics.
- Sampling: seed each rank differently (`rank_seed`), else ranks that sample answers to the same prompts (a GRPO
  group spread over ranks, best-of-n or online DPO pairs) sample the same answers: the W shards hold one batch W
  times. `seed_pitfall` measures this without launching processes.

`equivalence_check` measures the first two: parameters after a few DDP steps against one process on the whole batch,
the right way and with each pitfall. gloo on CPU, NCCL on CUDA; the device comes from the rank.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

from .advantages import group_advantages, zero_std_groups
from .logprobs import response_logprobs, sequence_logprobs
from .losses import dpo_loss, grpo_loss, next_token_loss
from .model import GPT, GPTConfig
from .sampling import sample
from .tasks import arithmetic
from .tokenizer import TOKENIZER


def setup() -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this process, starting the process group from torchrun's environment
    (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT): NCCL and cuda:LOCAL_RANK where a GPU is, else gloo and CPU."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise RuntimeError("not started by torchrun: run `torchrun --standalone --nproc_per_node=2 -m minirlhf.distributed`"
                           " (RANK and WORLD_SIZE are unset)")
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def shard(n: int, rank: int, world: int) -> slice:
    """Rank's contiguous slice of n rows; n must split evenly (equal shards keep a per-example mean exact)."""
    if n % world:
        raise ValueError(f"{n} rows do not split evenly over {world} ranks: use a batch size divisible by the world size")
    size = n // world
    return slice(rank * size, (rank + 1) * size)


def shard_groups(num_prompts: int, num_generations: int, rank: int, world: int) -> slice:
    """Rank's rows of a GRPO batch of num_prompts groups of num_generations rows: whole groups only."""
    groups = shard(num_prompts, rank, world)
    return slice(groups.start * num_generations, groups.stop * num_generations)


def rank_seed(seed: int, rank: int) -> int:
    """A different sampling seed per rank (the same model on every rank would otherwise sample the same answers)."""
    return seed + 10_007 * rank


def global_count(mask: torch.Tensor) -> torch.Tensor:
    """The number of True entries of mask summed over all ranks (one all-reduce); mask's own count if not
    distributed."""
    count = mask.sum().to(torch.float64)
    if dist.is_initialized():
        dist.all_reduce(count)
    return count


def num_items(mask: torch.Tensor) -> torch.Tensor:
    """The denominator that makes a token mean right under DDP: the global token count / the number of ranks,

        local = sum_{local tokens} l / (N_global / W),   so   (1/W) sum_r local_r = sum_{all tokens} l / N_global.

    Pass it as `num_items` to losses.next_token_loss or losses.grpo_loss ("dapo"). With one process: the count."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    return (global_count(mask) / world).clamp(min=1)


# ---------------------------------------------------------------- the same seed on every rank
def seed_pitfall(model: GPT | None = None, prompts: list[str] | None = None, reward_fn=None, *, world: int = 2,
                 num_generations: int = 8, max_new_tokens: int = 8, seed: int = 0, temperature: float = 1.0) -> dict:
    """The "same seed on every rank" pitfall, measured in one process: `world` simulated ranks share every GRPO group,
    each sampling num_generations // world answers to every prompt with the package's sampling (sampling.sample,
    one seeded generator per rank), as TRL's GRPOTrainer does when num_generations exceeds the per-device batch
    (why it seeds each process differently); best-of-n and online DPO pairs sampled on several ranks are the same
    case. Run once with `seed` on every rank and once with rank_seed(seed, rank).

    model: default an untrained tiny GPT (its samples almost never repeat by chance); prompts: default 16
    arithmetic prompts; reward_fn(prompt, response) -> float: optional, adds the group statistics GRPO uses.
    Returns {"world", "num_generations", "prompts", "same seed": {...}, "rank_seed": {...}} where each run has
    samples (prompts x num_generations), distinct (distinct (prompt, answer) pairs), distinct_per_group (their mean
    over groups), duplicated (the share of samples whose answer to the same prompt was also drawn on another rank:
    1 if the ranks drew the same samples, the model's chance of a repeat otherwise) and, with reward_fn,
    frac_reward_zero_std (groups whose rewards are all equal: no GRPO gradient) and reward_std (mean within-group
    std, as grpo.train_grpo logs them). Nothing is assumed: every number is counted from the samples."""
    if world < 2 or num_generations % world:
        raise ValueError(f"need world >= 2 ranks that split num_generations evenly, got world={world}, "
                         f"num_generations={num_generations}")
    model = _tiny_gpt() if model is None else model
    prompts = list(arithmetic.prompts(16, seed=0) if prompts is None else prompts)
    per_rank = num_generations // world
    out = {"world": world, "num_generations": num_generations, "prompts": len(prompts)}
    for run, seed_of in (("same seed", lambda r: seed), ("rank_seed", lambda r: rank_seed(seed, r))):
        answers = []    # answers[r][i]: rank r's per_rank answers to prompt i
        for r in range(world):
            drawn = sample(model, [p for p in prompts for _ in range(per_rank)], max_new_tokens=max_new_tokens,
                           seed=seed_of(r), temperature=temperature)
            answers.append([[s.response for s in drawn[i * per_rank:(i + 1) * per_rank]] for i in range(len(prompts))])
        duplicated, distinct = 0, []
        for i in range(len(prompts)):
            for r in range(world):
                elsewhere = {a for q in range(world) if q != r for a in answers[q][i]}
                duplicated += sum(a in elsewhere for a in answers[r][i])
            distinct.append(len({a for r in range(world) for a in answers[r][i]}))
        stats = {"samples": len(prompts) * num_generations, "distinct": sum(distinct),
                 "distinct_per_group": sum(distinct) / len(distinct),
                 "duplicated": duplicated / (len(prompts) * num_generations)}
        if reward_fn is not None:
            rewards = torch.tensor([[float(reward_fn(p, a)) for r in range(world) for a in answers[r][i]]
                                    for i, p in enumerate(prompts)])
            stats["frac_reward_zero_std"] = float(zero_std_groups(rewards).float().mean())
            stats["reward_std"] = float(rewards.std(-1, correction=0).mean())
        out[run] = stats
    return out


# ---------------------------------------------------------------- the equivalence check
def _tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=TOKENIZER.vocab_size, context_length=32, d_model=32, n_layers=2, n_heads=2))


def _ragged_rows(n: int, generator: torch.Generator, width: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """n right-padded random rows of lengths 4..width (BOS first) and their masks (True on real tokens after BOS)."""
    tokens = torch.full((n, width), TOKENIZER.pad_id, dtype=torch.long)
    lengths = torch.randint(4, width + 1, (n,), generator=generator)
    for b, length in enumerate(lengths.tolist()):
        tokens[b, 0] = TOKENIZER.bos_id
        tokens[b, 1:length] = torch.randint(3, TOKENIZER.vocab_size, (length - 1,), generator=generator)
    mask = tokens != TOKENIZER.pad_id
    mask[:, 0] = False
    return tokens, mask


def _batch(kind: str, n: int = 8, num_generations: int = 4) -> dict:
    """The same fixed batch on every rank (seeded), for one kind of loss."""
    g = torch.Generator().manual_seed(1)
    if kind == "dpo":
        chosen, chosen_mask = _ragged_rows(n, g)
        rejected, rejected_mask = _ragged_rows(n, g)
        return {"chosen": chosen, "chosen_mask": chosen_mask, "rejected": rejected, "rejected_mask": rejected_mask,
                "ref_chosen": -torch.rand(n, generator=g) * 40, "ref_rejected": -torch.rand(n, generator=g) * 40}
    tokens, mask = _ragged_rows(n, g)
    if kind == "sft":
        return {"tokens": tokens, "mask": mask}
    rewards = (torch.rand(n // num_generations, num_generations, generator=g) > 0.5).float()
    return {"tokens": tokens, "mask": mask, "rewards": rewards, "num_generations": num_generations}


def _loss(kind: str, model, batch: dict, rows: slice, *, global_count_: bool, split_groups_over: int = 1) -> torch.Tensor:
    """The package's loss of `kind` on batch rows `rows`: losses.next_token_loss (SFT), losses.dpo_loss on
    logprobs.sequence_logprobs (DPO), losses.grpo_loss with loss_type "dapo" (GRPO, first step: old = current).
    Token means divide by num_items(mask) if global_count_, else by this rank's own count (the pitfall)."""
    if kind == "dpo":
        pc = sequence_logprobs(model, batch["chosen"][rows], batch["chosen_mask"][rows])
        pr = sequence_logprobs(model, batch["rejected"][rows], batch["rejected_mask"][rows])
        return dpo_loss(pc, pr, batch["ref_chosen"][rows], batch["ref_rejected"][rows], beta=0.1)
    tokens, mask = batch["tokens"][rows], batch["mask"][rows]
    count = num_items(mask[:, 1:]) if global_count_ else None
    if kind == "sft":
        return next_token_loss(model(tokens, tokens != TOKENIZER.pad_id), tokens, mask, num_items=count)
    G = batch["num_generations"]   # grpo: advantages from each group's rewards, G rows at a time
    rewards = batch["rewards"].reshape(-1)[rows].view(-1, G // split_groups_over)
    advantages = group_advantages(rewards, "mean", "group").reshape(-1)
    logp, _ = response_logprobs(model, tokens, tokens != TOKENIZER.pad_id, 1)
    return grpo_loss(logp, logp.detach(), advantages, mask[:, 1:], "dapo", num_items=count)


def _train(kind: str, model, batch: dict, rows: slice, steps: int, lr: float, **loss_options) -> list[float]:
    """steps SGD steps on the loss of batch rows `rows`; returns the loss of each step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)   # SGD: Adam's first steps would magnify rounding noise
    losses = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = _loss(kind, model, batch, rows, **loss_options)
        loss.backward()
        optimizer.step()
        losses.append(round(loss.item(), 6))
    return losses


def _what_this_rank_holds(kind: str, batch: dict, rows: slice) -> dict:
    """Rows, and the tokens (or pairs) that count in the loss, on this rank."""
    if kind == "dpo":
        return {"rows": [rows.start, rows.stop], "pairs": rows.stop - rows.start}
    return {"rows": [rows.start, rows.stop], "tokens": int(batch["mask"][rows][:, 1:].sum())}


def equivalence_check(steps: int = 3, lr: float = 0.5) -> dict:
    """On every rank: train a DDP copy of a tiny GPT on this rank's shard for `steps` SGD steps, for SFT
    (token mean), DPO (pair mean) and GRPO (token mean, whole groups), the right way and with each pitfall
    (local token counts; GRPO groups split over ranks, each half its own group). Rank 0 also trains one
    process on the whole batch and returns {run: {max_abs_diff: max |parameter difference|, max_abs_update: the
    largest parameter change of the one-process run, ranks: what each rank held (rows, tokens or pairs) and
    its local loss at each step}} (other ranks return {}). One run uses FSDP2 (fully_shard)
    in place of DDP."""
    rank, world, device = setup()
    runs = {"sft": ("sft", {}), "dpo": ("dpo", {}), "grpo": ("grpo", {}),
            "sft, local token counts (pitfall)": ("sft", {"global_count_": False}),
            "grpo, local token counts (pitfall)": ("grpo", {"global_count_": False}),
            "grpo, groups split over ranks (pitfall)": ("grpo", {"split_groups_over": world}),
            "sft, FSDP2 (fully_shard)": ("sft", {"fsdp": True})}
    out = {}
    for name, (kind, options) in runs.items():
        options = dict(options)
        fsdp = options.pop("fsdp", False)
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in _batch(kind).items()}
        n = len(batch["chosen" if kind == "dpo" else "tokens"])
        split = options.get("split_groups_over", 1) > 1
        rows = (shard(n, rank, world) if kind != "grpo" or split else
                shard_groups(n // batch["num_generations"], batch["num_generations"], rank, world))
        if split:   # every group cut in W pieces: rank r holds piece r of each group
            G = batch["num_generations"]
            order = torch.arange(n).view(-1, world, G // world).transpose(0, 1).reshape(-1)
            batch = {**batch, "tokens": batch["tokens"][order], "mask": batch["mask"][order],
                     "rewards": batch["rewards"].reshape(-1)[order].view(-1, G)}
        options = {"global_count_": True, **options}
        model = _tiny_gpt().to(device).eval()
        if fsdp:
            fully_shard(model)      # FSDP2: each rank keeps a shard of every parameter (a DTensor)
            wrapped = model
        else:
            wrapped = torch.nn.parallel.DistributedDataParallel(model)
        losses = _train(kind, wrapped, batch, rows, steps, lr, **options)
        seen = [None] * world
        dist.all_gather_object(seen, {"rank": rank, **_what_this_rank_holds(kind, batch, rows), "local_losses": losses})
        params = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in model.parameters()]   # all ranks take part
        if rank == 0:
            single = _tiny_gpt().to(device).eval()
            full = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in _batch(kind).items()}
            _train(kind, single, full, slice(0, n), steps, lr, global_count_=False)   # one process: its count is global
            start = _tiny_gpt().to(device)
            with torch.no_grad():
                out[name] = {"ranks": seen, "max_abs_diff": max(float((a - b).abs().max()) for a, b in zip(params, single.parameters())),
                             "max_abs_update": max(float((a - b).abs().max())
                                                   for a, b in zip(single.parameters(), start.parameters()))}
    dist.barrier()
    return out


# ---------------------------------------------------------------- launching it (tests, notebook 18)
TEARDOWN_ABORT = "terminate called without an active exception"


def _torchrun() -> str:
    path = Path(sys.executable).parent / "torchrun"
    if not path.exists():
        raise FileNotFoundError(f"no torchrun next to {sys.executable}: it ships with torch (never pip install torchrun)")
    return str(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(commands: list[list[str]], out: Path, timeout: int) -> dict:
    """Start the launchers together, wait for all, and return rank 0's JSON. A rare abort of a gloo worker thread
    at exit on a loaded machine (seen once in CI, in none of 6 runs under load) is tried once more; any other
    failure, or that one twice, raises with the failing launcher's own error. As soon as one launcher fails, or
    when `timeout` seconds are up, every launcher still running is stopped with its workers (TimeoutError)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for attempt in range(2):
        codes, outputs = _run_together(commands, env, timeout)
        if all(code == 0 for code in codes):
            if not out.exists():
                raise RuntimeError(f"torchrun finished but rank 0 wrote no {out}: was --out passed?")
            return json.loads(out.read_text())
        failed = [k for k, code in enumerate(codes) if code not in (None, 0)]
        if not failed:
            raise TimeoutError(
                f"torchrun did not finish within {timeout} s: a rank is probably hung (waiting at a collective for a "
                "rank that died or never started); every launcher and its workers were stopped. What they wrote:\n"
                + "\n".join(_failure_report(outputs[k]) for k, code in enumerate(codes) if code is None))
        if attempt or TEARDOWN_ABORT not in "".join(outputs):
            k = failed[0]
            raise RuntimeError(f"torchrun failed: launcher {k + 1} of {len(commands)} exited with code {codes[k]}"
                               f"{'; the others were stopped' if len(commands) > 1 else ''}. Its error:\n"
                               + _failure_report(outputs[k]))
    raise AssertionError("unreachable")


STOP_GRACE_S = 40   # torchrun gives its workers 30 s to exit after SIGTERM before it kills them


def _run_together(commands: list[list[str]], env: dict, timeout: float) -> tuple[list[int | None], list[str]]:
    """Run the launchers at once, each in a session of its own, polled together until all have exited, one has
    failed or timeout seconds are up; then every one still running is stopped (_stop). Returns each launcher's
    exit code (None: stopped while running) and output (stdout and stderr interleaved, as written)."""
    logs = [tempfile.TemporaryFile() for _ in commands]        # files, not pipes: a full pipe would block a rank
    procs = []
    try:
        for command, log in zip(commands, logs):
            procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not _settled([p.poll() for p in procs]):
            time.sleep(0.1)
        codes = [p.poll() for p in procs]
    finally:
        for p in procs:
            _stop(p)
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read().decode("utf-8", errors="replace"))
        log.close()
    return codes, outputs


def _settled(codes: list[int | None]) -> bool:
    """All launchers exited, or one failed (the others would wait for its ranks until their own timeout)."""
    return all(code is not None for code in codes) or any(code not in (None, 0) for code in codes)


def _stop(proc: subprocess.Popen) -> None:
    """Stop a launcher that is still running, with its workers. torchrun starts each worker in a session of its own,
    out of reach of a signal to torchrun's group, and a SIGKILL would leave them running: so first SIGTERM, on which
    torchrun stops its workers itself, then SIGKILL to the group if it has not exited within STOP_GRACE_S."""
    if proc.poll() is not None:
        return
    _signal_group(proc, hard=False)
    try:
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        _signal_group(proc, hard=True)
        proc.wait()


def _signal_group(proc: subprocess.Popen, hard: bool) -> None:
    if not hasattr(os, "killpg"):       # Windows has no process groups: the launcher alone, at best effort
        proc.kill() if hard else proc.terminate()
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL if hard else signal.SIGTERM)
    except ProcessLookupError:          # exited meanwhile
        pass


_LAUNCHER_LOG = re.compile(r"^[IWE]\d{4} [\d:.]+ +\d+ \S+:\d+\] ")   # torchrun's own log lines
_REPORT_LINES = 40


def _failure_report(output: str) -> str:
    """What a launcher's output says went wrong: the first traceback of a rank (or of the launcher itself when
    no rank got as far), else the first lines the ranks wrote, then torchrun's "Root Cause" section. Not the last
    N characters: teardown warnings and torchrun's own traceback come after a rank's error and can push it out."""
    lines = output.splitlines()
    cause = _first_traceback(lines) or _rank_lines(lines) or lines[-_REPORT_LINES:]
    return "\n".join(cause[:_REPORT_LINES] + _root_cause(lines)) or "(no output)"


def _is_launchers_traceback(lines: list[str], i: int) -> bool:
    """Is the traceback starting at line i torchrun's own report that a child failed?"""
    return i + 1 < len(lines) and re.search(r"torchrun|torch[/\\]distributed[/\\]run\.py", lines[i + 1]) is not None \
        and any("ChildFailedError" in line for line in lines[i:])


def _first_traceback(lines: list[str]) -> list[str]:
    """The first traceback that is not torchrun's report of a failed child, up to torchrun's next log line or
    report (it may be chained, or its message span several lines)."""
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last):")]
    for i in starts:
        if not _is_launchers_traceback(lines, i):
            end = next((j for j in range(i + 1, len(lines)) if _LAUNCHER_LOG.match(lines[j])
                        or (j in starts and _is_launchers_traceback(lines, j))), len(lines))
            return lines[i:end]
    return []


def _rank_lines(lines: list[str]) -> list[str]:
    """What came before torchrun's own traceback, its log lines left out: the ranks' output."""
    end = next((i for i in range(len(lines)) if lines[i].startswith("Traceback") and _is_launchers_traceback(lines, i)),
               len(lines))
    return [line for line in lines[:end] if line.strip() and not _LAUNCHER_LOG.match(line)]


def _root_cause(lines: list[str]) -> list[str]:
    """torchrun's "Root Cause (first observed failure)" section: the failing rank, its exit code and pid."""
    start = next((i for i, line in enumerate(lines) if line.startswith("Root Cause")), None)
    if start is None:
        return []
    end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("=====")), len(lines))
    return lines[start:end]


def run_standalone(nproc: int = 2, steps: int = 3, timeout: int = 600) -> dict:
    """`torchrun --standalone --nproc_per_node=nproc -m minirlhf.distributed` on this machine; rank 0's results."""
    out = Path(tempfile.mkdtemp()) / "ranks.json"
    return _launch([[_torchrun(), "--standalone", f"--nproc_per_node={nproc}", "-m", "minirlhf.distributed",
                     "--steps", str(steps), "--out", str(out)]], out, timeout)


def run_nodes(nnodes: int = 2, steps: int = 3, timeout: int = 600) -> dict:
    """`torchrun --nnodes=nnodes --node_rank=K --master_addr=127.0.0.1 ...` once per node, all on this machine
    (the loopback interface stands in for the network), one process per node; rank 0's results."""
    folder, port = Path(tempfile.mkdtemp()), _free_port()
    commands = [[_torchrun(), f"--nnodes={nnodes}", "--nproc_per_node=1", f"--node_rank={k}", "--master_addr=127.0.0.1",
                 f"--master_port={port}", "-m", "minirlhf.distributed", "--steps", str(steps),
                 "--out", str(folder / f"node{k}.json")] for k in range(nnodes)]
    result = _launch(commands, folder / "node0.json", timeout)
    result["files_written"] = sorted(p.name for p in folder.glob("node*.json"))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torchrun --standalone --nproc_per_node=2 -m minirlhf.distributed",
                                     description="DDP steps against one process on the whole batch")
    parser.add_argument("--out", type=Path, help="write rank 0's results here as JSON")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    result = equivalence_check(args.steps)
    rank = dist.get_rank()
    if rank == 0:
        for name, row in result.items():
            print(f"{name:42} max |parameters - one process's| = {row['max_abs_diff']:.1e} "
                  f"(largest change of a parameter: {row['max_abs_update']:.1e})")
        if args.out:
            args.out.write_text(json.dumps({"world_size": dist.get_world_size(), "steps": args.steps, "runs": result}))
    # every rank's collectives done before any tears down: a gloo worker still holding work at exit can abort
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
