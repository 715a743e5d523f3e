"""Experiment `rlvr` (notebook 15): RL from a verifier measured by what it optimises, against its cheap competitor.

GRPO maximises the expected reward of answers sampled at temperature 1, so its score is pass@1 at T = 1 (the
share of sampled answers that are right), reported beside greedy accuracy and maj@8 (self-consistency). Every
method starts from `arithmetic-sft-short` and sees the same samples: 16 prompts x 8 answers per step.

- a learning-rate sweep per method (seed 0), chosen on validation problems apart from the held-out ones, extended by
  one rate past the grid where the best rate sat on its edge;
- 3 seeds per method at its chosen rate: GRPO, Dr. GRPO, RLOO, DAPO (clip-higher with 2 gradient steps per
  batch, so the clip binds, and dynamic sampling) and rejection-sampling fine-tuning (RFT) at matched samples;
- the same GRPO from the fully trained `arithmetic-sft`, and why it barely moves: the gradients of independent
  batches point in unrelated directions (their cosine), while sharper sampling would gain (pass@1 at lower T);
- lr 1e-3 with beta 0 and with DeepSeekMath's k3 KL term (beta 0.04);
- pass@k for k = 1..64 (n = 64 samples on 200 problems) for the start and every final model.

Runs are independent processes (2 at a time, one thread each): each run is seeded on its own, so the numbers do
not depend on how the runs are scheduled.
"""
from __future__ import annotations

import multiprocessing
import time

import torch

from .. import zoo
from ..advantages import group_advantages, zero_std_groups
from ..evaluate import arithmetic_accuracy, correct_counts, majority_accuracy, pass_at_k
from ..grpo import GRPOConfig, group_rollout, train_grpo
from ..logprobs import response_logprobs
from ..losses import grpo_loss
from ..rft import RFTConfig, train_rft
from ..tasks import arithmetic
from ..utils import round_floats, seed_everything

START = "arithmetic-sft-short"
METHODS = {
    "GRPO": dict(loss_type="grpo", scale_rewards="group"),
    "Dr. GRPO": dict(loss_type="dr_grpo", scale_rewards="none"),
    "RLOO": dict(baseline="leave_one_out", scale_rewards="none", loss_type="dapo"),
    "DAPO": dict(loss_type="dapo", epsilon_high=0.28, num_iterations=2, dynamic_sampling=True),
    "RFT": {},
}
LEARNING_RATES = {"RFT": (1e-4, 3e-4, 1e-3)}
GROUP_LEARNING_RATES = (5e-5, 1e-4, 2e-4)
PASS_AT_K = (1, 2, 4, 8, 16, 32, 64)


def held_out(quick: bool = False) -> list[str]:
    return arithmetic.prompts(40 if quick else 500, seed=4)


def validation(quick: bool = False) -> list[str]:
    return arithmetic.prompts(40 if quick else 500, seed=6)


def sampled_accuracy(model, prompts: list[str], n: int = 8, seed: int = 7) -> float:
    """pass@1 at T = 1: the share of n sampled answers per problem that are right (what GRPO maximises)."""
    counts = correct_counts(model, prompts, arithmetic.reward, n, max_new_tokens=4, seed=seed)
    return sum(counts) / (n * len(prompts))


def final_measures(model, prompts: list[str], pass_k_prompts: list[str], n: int = 64) -> dict:
    """pass@1 (T = 1, 8 per problem), greedy, maj@8, and the correct counts of n samples for pass@k."""
    return {"pass1": sampled_accuracy(model, prompts), "greedy": arithmetic_accuracy(model, prompts),
            "maj8": majority_accuracy(model, prompts, arithmetic.reward, 8, max_new_tokens=4, seed=8),
            "counts": correct_counts(model, pass_k_prompts, arithmetic.reward, n, max_new_tokens=4, seed=9)}


def run(task: dict) -> dict:
    """One training run (a process of its own): task = {method, lr, seed, steps, prompts_per_step, start,
    quick, beta (optional)}. Returns per-step reward, entropy, clip_ratio, evaluations (pass@1 at T = 1 and
    greedy on the held-out problems), the validation pass@1 and the final measures."""
    seed_everything(task["seed"], threads=1)
    start = time.perf_counter()
    quick, test = task["quick"], held_out(task["quick"])
    policy = zoo.load(task["start"])
    evals = []

    def evaluate(model) -> float:
        evals.append((sampled_accuracy(model, test), arithmetic_accuracy(model, test)))
        return evals[-1][0]

    shared = dict(steps=task["steps"], prompts_per_step=task["prompts_per_step"], num_generations=8,
                  lr=task["lr"], seed=task["seed"])
    eval_every = max(1, task["steps"] // 6)
    if task["method"] == "RFT":
        _, history = train_rft(policy, arithmetic.prompts, arithmetic.reward, RFTConfig(**shared),
                               eval_fn=evaluate, eval_every=eval_every)
    else:
        config = GRPOConfig(**shared, **METHODS[task["method"]], beta=task.get("beta", 0.0))
        _, history = train_grpo(policy, arithmetic.prompts, arithmetic.reward, config, eval_fn=evaluate,
                                eval_every=eval_every)
    out = {**{k: task[k] for k in ("method", "lr", "seed", "start")}, "beta": task.get("beta", 0.0),
           "reward": history["reward"], "samples_seen": history["samples_seen"],
           "eval_samples_seen": history["eval_samples_seen"],
           "eval_pass1": [p for p, _ in evals], "eval_greedy": [g for _, g in evals],
           "validation_pass1": sampled_accuracy(policy, validation(quick))}
    for key in ("entropy", "clip_ratio", "kl", "frac_reward_zero_std", "kept"):
        if key in history:
            out[key] = history[key]
    if task.get("final", False):
        out["final"] = final_measures(policy, test, test[:20 if quick else 200], n=16 if quick else 64)
    out["seconds"] = time.perf_counter() - start
    return round_floats(out)


def batch_gradient_agreement(model, batches: int = 12, prompts_per_step: int = 16, seed: int = 0) -> dict:
    """How much do the GRPO gradients of independent batches agree? The mean cosine between the policy-gradient
    vectors of `batches` batches (16 prompts x 8 answers each; GRPO advantages, token-mean loss), and the share
    of groups with no gradient. A cosine near 0: each batch pushes its own way, and steps add up as a random
    walk; a positive one: the batches share a direction that steps accumulate."""
    gradients, zero = [], []
    for b in range(batches):
        generator = torch.Generator().manual_seed(seed * 1000 + b)
        r, _, _ = group_rollout(model, arithmetic.prompts(prompts_per_step, seed=10_000 + b), arithmetic.reward, 8, 4,
                                1.0, generator)
        gen = r.generation
        advantages = group_advantages(r.rewards, "mean", "group").reshape(-1)
        logp, _ = response_logprobs(model, gen.tokens, gen.attention_mask, gen.prompt_length, 1.0)
        loss = grpo_loss(logp, logp.detach(), advantages, r.loss_mask, "dapo", 0.2, None, 4, None, 0.0)
        model.zero_grad(set_to_none=True)
        loss.backward()
        gradients.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        zero.append(float(zero_std_groups(r.rewards).float().mean()))
    model.zero_grad(set_to_none=True)
    cosines = [float(torch.nn.functional.cosine_similarity(gradients[i], gradients[j], dim=0))
               for i in range(batches) for j in range(i + 1, batches)]
    return {"mean_cosine": sum(cosines) / len(cosines), "frac_reward_zero_std": sum(zero) / len(zero)}


def pass_at_k_curve(counts: list[int], n: int, ks=PASS_AT_K, resamples: int = 1000, seed: int = 0) -> dict:
    """Mean unbiased pass@k over problems, and a 95% bootstrap interval (problems resampled with replacement)."""
    ks = [k for k in ks if k <= n]
    table = torch.tensor([[pass_at_k(n, c, k) for k in ks] for c in counts], dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(counts), (resamples, len(counts)), generator=generator)
    boot = table[idx].mean(1)                                   # (resamples, len(ks))
    return {"ks": ks, "mean": table.mean(0).tolist(), "low": boot.quantile(0.025, 0).tolist(),
            "high": boot.quantile(0.975, 0).tolist()}


def past_the_edge(rates, score: dict) -> float | None:
    """The next rate beyond the grid (twice the largest, a third of the smallest) if the best-scoring rate is at the
    grid's edge, else None: a best rate on the edge says the sweep has not bracketed the optimum."""
    rates = sorted(rates)
    best = max(rates, key=lambda lr: score[lr])
    if len(rates) > 1 and best == rates[-1]:
        return rates[-1] * 2
    if len(rates) > 1 and best == rates[0]:
        return rates[0] / 3
    return None


def _run_all(tasks: list[dict], processes: int, log) -> list[dict]:
    if processes <= 1:
        return [run(t) for t in tasks]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        out = []
        for result in pool.imap(run, tasks):
            log(f"  {result['method']} lr {result['lr']:g} seed {result['seed']} beta {result['beta']}: pass@1 "
                f"{result['eval_pass1'][0]:.3f} -> {result['eval_pass1'][-1]:.3f}, {result['seconds']:.0f} s")
            out.append(result)
        return out


def rlvr(steps: int = 300, seeds=(0, 1, 2), processes: int = 2, quick: bool = False, log=print) -> dict:
    """The experiment (about 70 minutes measured with the 2 cores shared); see the module docstring."""
    steps, seeds = (4, (0, 1)) if quick else (steps, seeds)
    base = dict(steps=steps, prompts_per_step=4 if quick else 16, quick=quick, start=START)
    out = {"command": "python -m minirlhf experiments rlvr" + " --quick" * quick, "start": START,
           "held_out": len(held_out(quick)), "validation": len(validation(quick)),
           **{k: base[k] for k in ("steps", "prompts_per_step")}, "num_generations": 8, "threads_per_run": 1}
    test = held_out(quick)
    for name in (START, "arithmetic-sft"):
        seed_everything(0, threads=1)
        model = zoo.load(name)
        out[name] = final_measures(model, test, test[:20 if quick else 200], n=16 if quick else 64)
        out[name]["sharpened_pass1"] = {str(t): sum(correct_counts(model, test, arithmetic.reward, 8, max_new_tokens=4,
                                                                   seed=7, temperature=t)) / (8 * len(test))
                                        for t in (0.7, 0.5)}
        out[name]["gradient_agreement"] = batch_gradient_agreement(model, batches=3 if quick else 12)
        log(f"{name}: pass@1 {out[name]['pass1']:.3f}, greedy {out[name]['greedy']:.3f}, "
            f"gradient cosine {out[name]['gradient_agreement']['mean_cosine']:.3f}")

    log("sweep (seed 0, chosen on the validation problems)")
    rates = {m: LEARNING_RATES.get(m, GROUP_LEARNING_RATES)[:1 if quick else None] for m in METHODS}
    sweep = _run_all([{**base, "method": m, "lr": lr, "seed": seeds[0], "final": True}
                      for m in METHODS for lr in rates[m]], processes, log)
    beyond = [{**base, "method": m, "lr": lr, "seed": seeds[0], "final": True}
              for m in METHODS for lr in [past_the_edge(rates[m], {r["lr"]: r["validation_pass1"] for r in sweep
                                                                   if r["method"] == m})] if lr and not quick]
    if beyond:
        log("one rate past the grid's edge where the best rate sat on it")
        sweep += _run_all(beyond, processes, log)
    out["sweep"] = {m: {f"{r['lr']:g}": r["validation_pass1"] for r in sorted(sweep, key=lambda r: r["lr"])
                        if r["method"] == m} for m in METHODS}
    out["chosen_lr"] = {m: max((r for r in sweep if r["method"] == m), key=lambda r: r["validation_pass1"])["lr"]
                        for m in METHODS}
    runs = [r for r in sweep if r["lr"] == out["chosen_lr"][r["method"]]]

    log("more seeds at the chosen rates; GRPO from arithmetic-sft; lr 1e-3 with and without the KL term")
    extra = [{**base, "method": m, "lr": out["chosen_lr"][m], "seed": s, "final": True} for m in METHODS
             for s in seeds[1:]]
    extra.append({**base, "method": "GRPO", "lr": out["chosen_lr"]["GRPO"], "seed": seeds[0], "start": "arithmetic-sft",
                  "final": True})
    extra += [{**base, "method": "GRPO", "lr": 1e-3, "seed": seeds[0], "beta": beta} for beta in (0.0, 0.04)]
    done = _run_all(extra, processes, log)
    runs += [r for r in done if r["start"] == START and r["lr"] != 1e-3]
    out["runs"] = {f"{r['method']}, seed {r['seed']}": r for r in runs}
    out["full_sft_grpo"] = next(r for r in done if r["start"] == "arithmetic-sft")
    out["collapse"] = {f"beta {r['beta']:g}": r for r in done if r["lr"] == 1e-3}
    n = 16 if quick else 64
    out["pass_at_k"] = {"n": n, "problems": len(out[START]["counts"]),
                        START: pass_at_k_curve(out[START]["counts"], n),
                        **{f"{m}, seed {seeds[0]}": pass_at_k_curve(out["runs"][f"{m}, seed {seeds[0]}"]["final"]["counts"], n)
                           for m in METHODS}}
    return round_floats(out)
