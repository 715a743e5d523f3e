"""Experiments too slow for a notebook cell: run them here, ship their results in data/results, plot them there.

    python -m minirlhf experiments rm-sweep           # accuracy vs number of pairs and vs RM size (~10 min)
    python -m minirlhf experiments rm-sweep --quick   # a 1-minute smoke run, written to a temp file
    python -m minirlhf experiments ppo-beta           # PPO with 3 KL coefficients (~10 min)
    python -m minirlhf experiments reward-hacking     # best-of-N and PPO against RMs of 3 data sizes (~20 min)
    python -m minirlhf experiments online-rlhf        # iterated online RLHF vs one round, same label budget (~25 min)
    python -m minirlhf experiments dpo-frontier       # DPO's gold-vs-KL frontier over beta, its failure modes,
                                                      # online vs offline DPO (~10 min)
    python -m minirlhf experiments rlaif              # reward models on AI vs human labels; PPO against them,
                                                      # with and without one principle (~20 min)
    python -m minirlhf experiments tool-rl            # GRPO with a calculator at two call costs, and without
                                                      # the tool-output mask, 3 seeds (~25 min)
    python -m minirlhf experiments rlvr               # GRPO, Dr. GRPO, RLOO, DAPO and rejection sampling from an
                                                      # under-trained SFT model: pass@1 at T = 1, 3 seeds (~30 min)
    python -m minirlhf experiments grpo-hack          # GRPO on a lenient (hackable) verifier vs the exact one
                                                      # (6 min measured with the 2 cores shared)
    python -m minirlhf experiments grpo-length        # GRPO vs Dr. GRPO on a step-by-step format: length bias
                                                      # (20 min measured with the 2 cores shared, ~5 alone)
    python -m minirlhf experiments thinking           # learning to think: GRPO, RFT and distillation on long
                                                      # sums, 3 seeds, one process (see course/thinking.py)
    python -m minirlhf experiments thinking-rm        # process vs outcome verifiers as best-of-N rerankers

Each result file records the command, the settings and every measured number, so a notebook can plot it
and a reader can re-run it (same machine and thread count -> the same numbers).
"""
from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch

from .. import capstone, judge as judges, ratings as user_ratings
from .. import zoo
from ..best_of_n import expected_best_of_n, kl_best_of_n_analytic, kl_best_of_n_exact, sample_pool
from ..calculator import CALL_CLOSE, CALL_OPEN, tool_output
from ..evaluate import TOOL_MAX_NEW_TOKENS, tool_use_accuracy
from ..grpo import GRPOConfig, train_grpo
from ..dpo import DPOConfig, label_noise_rate, online_dpo, train_dpo, with_reference_logprobs
from ..model import GPT, GPTConfig, extend_context
from ..online import iterated_rlhf
from ..ppo import PPOConfig, train_ppo
from ..preferences import DEFAULT_TEMPERATURE
from ..logprobs import sequence_logprobs
from ..reward import RewardModel, encode_responses, evaluate_reward_model, score, train_reward_model
from ..rl import rl_history_for_meta
from ..sampling import sample
from ..tasks import arithmetic, reviews, support, tool_arithmetic
from ..tokenizer import TOKENIZER
from ..tools import sample_text_with_tools, tool_loss_mask
from ..train import sft
from ..utils import seed_everything
from ..zoo import RESULTS_DIR, atomic_write_bytes
from .rlvr import rlvr
from .thinking import thinking, thinking_rm
from .recipes import SUPPORT_LEARNER, SUPPORT_PENALTY, SUPPORT_PPO, TOOL_GRPO, run_recipe, tool_grpo


def truncated_policy(gpt: GPT, n_layers: int) -> GPT:
    """The first n_layers blocks of gpt (embeddings, those blocks, the final LayerNorm): a smaller
    trunk with the same pretraining, so that RM size can be varied without pretraining new models."""
    if not 1 <= n_layers <= gpt.config.n_layers:
        raise ValueError(f"n_layers must be between 1 and {gpt.config.n_layers}, got {n_layers}")
    small = GPT(GPTConfig.from_dict({**gpt.config.to_dict(), "n_layers": n_layers}))
    kept = {k: v for k, v in gpt.state_dict().items()
            if not k.startswith("blocks.") or int(k.split(".")[1]) < n_layers}
    small.load_state_dict(kept)
    return small


def rm_steps(n_pairs: int, epochs: int = 2, batch_size: int = 32, min_steps: int = 100) -> int:
    """Training steps for n_pairs: `epochs` passes, but at least min_steps (tiny sets need more passes)."""
    return max(min_steps, epochs * n_pairs // batch_size)


def train_and_evaluate(trunk: GPT, train_pairs: list[dict], test_pairs: list[dict], *, steps: int,
                       lr: float = 3e-4, seed: int = 0) -> dict:
    """Train a reward model on trunk's weights and measure it on the test pairs (see evaluate_reward_model)."""
    seed_everything(seed)
    rm = RewardModel.from_policy(trunk)
    start = time.perf_counter()
    history = train_reward_model(rm, train_pairs, steps=steps, lr=lr, seed=seed)
    seconds = time.perf_counter() - start
    result = {k: round(v, 4) for k, v in evaluate_reward_model(rm, test_pairs, DEFAULT_TEMPERATURE).items()}
    return {**result, "steps": steps, "final_train_loss": round(sum(history["loss"][-20:]) / 20, 4),
            "seconds": round(seconds, 1)}


def rm_sweep(n_pairs=(250, 500, 1000, 2000, 4000), layers=(1, 2, 4), quick: bool = False, log=print) -> dict:
    """Accuracy/ceiling of reward models vs training pairs (4-layer SFT trunk) and vs trunk size
    (first k layers of the SFT model, and a 4-layer trunk from random weights) at 4000 pairs."""
    pairs = zoo.load_pairs("reviews-pairs")
    sft = zoo.load("reviews-sft")
    test = pairs["test"][:200] if quick else pairs["test"]
    steps = (lambda n: 10) if quick else rm_steps
    results = {"by_pairs": [], "by_size": []}
    for n in n_pairs:
        row = {"n_pairs": n, **train_and_evaluate(sft, pairs["train"][:n], test, steps=steps(n))}
        results["by_pairs"].append(row)
        log(f"pairs {n}: {row}")
    n = max(n_pairs)
    for k in layers:
        trunk = truncated_policy(sft, k)
        # the full trunk at the most pairs is the run just made above: reuse it
        trained = (results["by_pairs"][-1] if k == sft.config.n_layers and n == n_pairs[-1] else
                   train_and_evaluate(trunk, pairs["train"][:n], test, steps=steps(n)))
        row = {"trunk": f"SFT, {k} layer{'s' * (k > 1)}", "n_layers": k, "pretrained": True,
               "params": sum(p.numel() for p in trunk.parameters()),
               **{key: v for key, v in trained.items() if key != "n_pairs"}}
        results["by_size"].append(row)
        log(f"size {k}: {row}")
    seed_everything(0)
    scratch = GPT(sft.config)
    row = {"trunk": f"random init, {sft.config.n_layers} layers", "n_layers": sft.config.n_layers,
           "pretrained": False, "params": sum(p.numel() for p in scratch.parameters()),
           **train_and_evaluate(scratch, pairs["train"][:n], test, steps=steps(n))}
    results["by_size"].append(row)
    log(f"scratch: {row}")
    return {"command": "python -m minirlhf experiments rm-sweep" + " --quick" * quick,
            "test_pairs": len(test), "temperature": DEFAULT_TEMPERATURE, **results}


def ppo_beta(betas=(0.03, 0.1, 1.0), quick: bool = False, log=print) -> dict:
    """PPO runs from the SFT policy that differ only in the KL coefficient beta (fixed, not adaptive);
    their per-iteration histories (rl_history_for_meta) for notebook 10's beta slider."""
    reference, rm = zoo.load("reviews-sft"), zoo.load("reviews-rm")
    runs = {}
    for beta in betas:
        seed_everything(0)
        config = PPOConfig(beta=beta, target_kl=None, **({"iterations": 2, "batch_size": 8, "minibatches": 2}
                                                          if quick else {}))
        start = time.perf_counter()
        _, history = train_ppo(zoo.load("reviews-sft"), reference, rm, reviews.prompts, config, gold_fn=reviews.gold_reward)
        runs[str(beta)] = rl_history_for_meta(history)
        last = {k: round(sum(v[-5:]) / len(v[-5:]), 3) for k, v in runs[str(beta)].items()
                if k in ("proxy_reward", "gold", "kl")}
        log(f"beta {beta}: last 5 iterations {last}, {time.perf_counter() - start:.0f} s")
    return {"command": "python -m minirlhf experiments ppo-beta" + " --quick" * quick, "runs": runs}


def train_rm(n_pairs: int, pairs: dict | None = None, sft: GPT | None = None, steps: int | None = None):
    """The zoo's reward-model recipe (reviews-rm: Bradley-Terry, then normalised on SFT samples) on the first
    n_pairs training pairs, for rm_steps(n_pairs) steps. Returns (rm, held-out metrics on the test pairs)."""
    pairs = pairs or zoo.load_pairs("reviews-pairs")
    rm, history = run_recipe("reviews-rm", {"reviews-sft": sft or zoo.load("reviews-sft"), "reviews-pairs": pairs},
                             n_pairs=n_pairs, steps=steps or rm_steps(n_pairs))
    return rm, history["test"]


def best_of_n_curve(proxy: torch.Tensor, gold: torch.Tensor, ns) -> dict:
    """Best-of-n for each n in ns, from pools (P, M) of proxy and gold rewards (M >= max(ns) samples of each
    of P prompts): the unbiased expected proxy and gold of the best-by-proxy of n, minus their n = 1 values;
    the expected gold itself as a mean over prompts, with its standard error over prompts; and the KL of
    best-of-n to the sampling policy, exact over each pool (ties merged) and by log n - (n-1)/n."""
    base_proxy, base_gold = proxy.double().mean(), gold.double().mean()
    curve = {"n": list(ns), "kl_exact": [], "kl_formula": [], "proxy_gain": [], "gold_gain": [], "gold": [], "gold_se": []}
    for n in ns:
        gold_per_prompt = expected_best_of_n(proxy, gold, n).double()                      # (P,)
        curve["kl_exact"].append(float(torch.stack([kl_best_of_n_exact(row, n) for row in proxy]).mean()))
        curve["kl_formula"].append(kl_best_of_n_analytic(n))
        curve["proxy_gain"].append(float(expected_best_of_n(proxy, proxy, n).mean() - base_proxy))
        curve["gold_gain"].append(float(gold_per_prompt.mean() - base_gold))
        curve["gold"].append(float(gold_per_prompt.mean()))
        curve["gold_se"].append(float(gold_per_prompt.std() / len(gold_per_prompt) ** 0.5))
    return {k: [round(x, 4) for x in v] for k, v in curve.items()}


def _every(history: dict, k: int) -> dict:
    """rl_history_for_meta without most of its samples (every k-th iteration's are kept)."""
    out = rl_history_for_meta(history)
    out["samples"] = {str(i): s for i, s in enumerate(out["samples"]) if i % k == 0 or i == len(out["samples"]) - 1}
    return out


def reward_hacking(n_pairs=(250, 1000, 4000), ns=(1, 2, 4, 8, 16, 32, 64, 128, 256), beta: float = 0.03,
                   iterations: int = 60, seeds=(0, 1), quick: bool = False, log=print) -> dict:
    """Over-optimization against reward models trained on different numbers of pairs (notebook 11).

    For each RM: best-of-n from one pool of SFT samples (ns), and PPO runs from the SFT policy with a small
    KL coefficient (beta) so that the policy drifts far; proxy and gold are recorded against the KL.
    The 4000-pair RM is the zoo's reviews-rm (the same recipe)."""
    pairs, sft = zoo.load_pairs("reviews-pairs"), zoo.load("reviews-sft")
    if quick:
        n_pairs, ns, iterations, seeds = (64, 4000), (1, 2, 4), 2, (0,)
    prompts = reviews.prompts(8 if quick else 64, seed=30)
    start = time.perf_counter()
    responses, _ = sample_pool(sft, prompts, max(ns), seed=30)
    flat_prompts = [p for p in prompts for _ in range(max(ns))]
    flat = [r for row in responses for r in row]
    gold = torch.tensor([reviews.gold_reward(p, r) for p, r in zip(flat_prompts, flat)]).view(len(prompts), -1)
    log(f"best-of-n pool: {len(flat)} SFT samples, {time.perf_counter() - start:.0f} s")
    out = {"command": "python -m minirlhf experiments reward-hacking" + " --quick" * quick, "beta": beta,
           "pool": {"prompts": len(prompts), "samples_per_prompt": max(ns), "gold_mean": round(float(gold.mean()), 4)},
           "rms": {}}
    for n in n_pairs:
        start = time.perf_counter()
        if n == 4000 and not quick:
            rm = zoo.load("reviews-rm")
            test = evaluate_reward_model(rm, pairs["test"], DEFAULT_TEMPERATURE)
        else:
            rm, test = train_rm(n, pairs, sft, steps=10 if quick else None)
        row = {"test": {k: round(v, 4) for k, v in test.items()}}
        proxy = score(rm, flat_prompts, flat).view(len(prompts), -1)
        row["best_of_n"] = best_of_n_curve(proxy, gold, ns)
        row["ppo"] = {}
        for seed in seeds:
            seed_everything(seed)
            config = PPOConfig(beta=beta, iterations=iterations, seed=seed,
                               **({"batch_size": 8, "minibatches": 2} if quick else {}))
            _, history = train_ppo(zoo.load("reviews-sft"), sft, rm, reviews.prompts, config, gold_fn=reviews.gold_reward)
            row["ppo"][str(seed)] = _every(history, 5)
        out["rms"][str(n)] = row
        last = {s: (h["proxy_reward"][-1], h["gold"][-1], h["kl"][-1]) for s, h in row["ppo"].items()}
        log(f"{n} pairs: ratio {row['test']['ratio']:.3f}; best-of-{ns[-1]} gold gain {row['best_of_n']['gold_gain'][-1]:+.2f}; "
            f"PPO last (proxy, gold, KL) {last}; {time.perf_counter() - start:.0f} s")
    return out


def online_rlhf(label_budget: int = 500, rounds=(1, 3), iterations: int = 90, beta: float = 0.05,
                seeds=(0, 1), quick: bool = False, log=print) -> dict:
    """Iterated online RLHF (online.iterated_rlhf) against a single round with the same label budget and the
    same number of PPO iterations, for each seed (notebook 12). Every RM is normalised on the same SFT samples."""
    pairs, sft = zoo.load_pairs("reviews-pairs"), zoo.load("reviews-sft")
    normalize_on = [(p["prompt"], p[side]) for p in pairs["train"][:500] for side in ("chosen", "rejected")]
    if quick:
        label_budget, rounds, iterations, seeds = 16, (1, 2), 2, (0,)
    eval_prompts = reviews.prompts(16 if quick else 256, seed=40)
    config = PPOConfig(beta=beta, iterations=iterations, **({"batch_size": 8, "minibatches": 2} if quick else {}))
    steps = (lambda n: 4) if quick else rm_steps
    out = {"command": "python -m minirlhf experiments online-rlhf" + " --quick" * quick, "label_budget": label_budget,
           "iterations": iterations, "beta": beta, "opponent": "sft", "runs": {}}
    for seed in seeds:
        for k in rounds:
            start = time.perf_counter()
            seed_everything(seed)
            _, history = iterated_rlhf(sft, reviews.prompts, reviews.gold_reward, rounds=k, label_budget=label_budget,
                                       ppo=config, normalize_on=normalize_on, eval_prompts=eval_prompts,
                                       rm_steps=steps, seed=seed, log=lambda line: log(f"  {k} rounds, seed {seed}: {line}"))
            history["ppo"] = {key: [round(float(x), 4) for x in v] for key, v in history["ppo"].items()}
            history["rounds"] = [{key: round(v, 4) if isinstance(v, float) else v for key, v in r.items()}
                                 for r in history["rounds"]]
            out["runs"][f"{k} rounds, seed {seed}"] = {"n_rounds": k, "seed": seed, **history}
            log(f"{k} rounds, seed {seed}: final gold {history['rounds'][-1]['gold']:+.2f}, "
                f"{time.perf_counter() - start:.0f} s")
    return out


def _dpo_run(history: dict) -> dict:
    """A DPO history as plain rounded data: per-step TRL metrics and the evaluations along the run."""
    return {k: [round(float(x), 4) for x in v] for k, v in history.items() if k != "config"}


def dpo_frontier(betas=(0.05, 0.1, 1.0), seeds=(0, 1, 2), steps: int = 125, batch_size: int = 32,
                 learning_rate: float = 5e-5, eval_every: int = 25, n_eval: int = 128, online_rounds: int = 5,
                 bon_samples: int = 64, quick: bool = False, log=print) -> dict:
    """DPO from reviews-sft on the 4000 reviews-pairs (notebook 13), every run evaluated along the way
    (gold reward and KL(pi || pi_ref) on n_eval held-out prompts, dpo.gold_and_kl), and best-of-n on the
    same prompts for comparison:

    - "frontier": plain DPO for each beta and seed, at DPOConfig's defaults otherwise (one epoch of the pairs,
      as the zoo's reviews-dpo, which is the beta 0.1 seed 0 run);
    - "rpo": beta 0.1 with an SFT term (rpo_alpha 1): does the chosen log-prob still fall?
    - "cdpo": beta 0.1 with label_smoothing at the labels' known flip rate (dpo.label_noise_rate);
    - "online": online_rounds rounds of pairs sampled from the current policy and labelled by the noisy gold
      human, one epoch of steps // online_rounds steps per round: as many labels (steps * batch_size) and steps
      as the offline beta 0.1 run, which sees each of its steps * batch_size shipped pairs once;
    - "best_of_n": bon_samples reviews-sft samples per eval prompt, picked by reviews-rm (trained on the same
      pairs): expected gold of best-of-n with its standard error over prompts, and its exact pool KL.
    The reference's log-probs of the shipped pairs are computed once for all runs."""
    sft, pairs = zoo.load("reviews-sft"), zoo.load_pairs("reviews-pairs")["train"]
    if quick:
        betas, seeds, steps, batch_size, eval_every, n_eval, online_rounds, bon_samples = (0.1,), (0,), 2, 4, 1, 4, 1, 4
        pairs = pairs[:16]
    eval_prompts = reviews.prompts(n_eval, seed=50)
    start = time.perf_counter()
    pairs = with_reference_logprobs(sft, pairs)
    log(f"reference log-probs of {len(pairs)} pairs: {time.perf_counter() - start:.0f} s")
    base = dict(steps=steps, batch_size=batch_size, learning_rate=learning_rate, eval_every=eval_every)
    noise = label_noise_rate(pairs, DEFAULT_TEMPERATURE)
    out = {"command": "python -m minirlhf experiments dpo-frontier" + " --quick" * quick, "settings": base,
           "betas": list(betas), "seeds": list(seeds), "eval_prompts": n_eval, "label_noise_rate": round(noise, 4),
           "kl_estimator": "mean over held-out prompts of the summed log pi(y|x) - log pi_ref(y|x), y ~ pi at "
           "temperature 1, 64 new tokens (PPO's logged kl)", "runs": {}}

    def run(name: str, config: DPOConfig, run_pairs: list[dict]) -> None:
        t = time.perf_counter()
        seed_everything(config.seed)
        history = train_dpo(zoo.load("reviews-sft"), run_pairs, config, reference=sft, gold_fn=reviews.gold_reward,
                            eval_prompts=eval_prompts)
        out["runs"][name] = {"config": history["config"], **_dpo_run(history)}
        best = max(range(len(history["eval/gold"])), key=history["eval/gold"].__getitem__)
        log(f"{name}: gold {history['eval/gold'][0]:+.2f} -> best {history['eval/gold'][best]:+.2f} at KL "
            f"{history['eval/kl'][best]:.1f} -> last {history['eval/gold'][-1]:+.2f} at KL {history['eval/kl'][-1]:.1f}; "
            f"{time.perf_counter() - t:.0f} s")

    for beta in betas:
        for seed in seeds:
            run(f"dpo beta={beta} seed={seed}", DPOConfig(beta=beta, seed=seed, **base), pairs)
    run("rpo beta=0.1 seed=0", DPOConfig(beta=0.1, rpo_alpha=1.0, **base), pairs)
    run("cdpo beta=0.1 seed=0", DPOConfig(beta=0.1, label_smoothing=round(noise, 4), **base), pairs)
    per_round = steps * batch_size // online_rounds             # one epoch over each round's pairs
    t = time.perf_counter()
    seed_everything(0)
    online = online_dpo(zoo.load("reviews-sft"), reviews.prompts, reviews.gold_reward,
                        DPOConfig(beta=0.1, **{**base, "steps": steps // online_rounds, "eval_every": 0}),
                        rounds=online_rounds, pairs_per_round=per_round, reference=sft, eval_prompts=eval_prompts,
                        seed=0)
    out["runs"]["online beta=0.1 seed=0"] = {
        "rounds": [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in online["rounds"]],
        **_dpo_run(online["steps"])}
    log(f"online: {len(online['rounds'])} rounds of {per_round} labels, final gold "
        f"{online['rounds'][-1]['gold']:+.2f} at KL {online['rounds'][-1]['kl']:.1f}; {time.perf_counter() - t:.0f} s")

    t = time.perf_counter()
    # the pool is sampled on the DPO runs' own eval prompts, with their token budget, so that the methods differ
    # only in how they pick a response
    responses, _ = sample_pool(sft, eval_prompts, bon_samples, seed=60, max_new_tokens=64)
    flat_prompts = [p for p in eval_prompts for _ in range(bon_samples)]
    flat = [r for row in responses for r in row]
    gold = torch.tensor([reviews.gold_reward(p, r) for p, r in zip(flat_prompts, flat)]).view(n_eval, -1)
    proxy = score(zoo.load("reviews-rm"), flat_prompts, flat).view(n_eval, -1)
    ns = [2 ** k for k in range(bon_samples.bit_length()) if 2 ** k <= bon_samples]
    out["best_of_n"] = {"prompts": n_eval, "samples_per_prompt": bon_samples, "reward_model": "reviews-rm",
                        **{k: v for k, v in best_of_n_curve(proxy, gold, ns).items()
                           if k in ("n", "kl_exact", "kl_formula", "gold", "gold_se")}}
    bon = out["best_of_n"]
    log(f"best-of-n: gold {bon['gold'][0]:+.2f} -> {bon['gold'][-1]:+.2f} +/- {bon['gold_se'][-1]:.2f} at KL "
        f"{bon['kl_exact'][-1]:.2f} (n = {ns[-1]}); {time.perf_counter() - t:.0f} s")
    return out


def policy_aspects(policy: GPT, prompts: list[str], seed: int = 0) -> dict:
    """Mean gold reward and mean of every gold aspect (tasks.reviews.gold_breakdown) of one sample per prompt,
    plus the share of responses that are off topic and three samples."""
    drawn = sample(policy, prompts, seed=seed, max_new_tokens=64)
    parts = [reviews.gold_breakdown(p, s.response) for p, s in zip(prompts, drawn)]
    out = {k: round(sum(getattr(g, k) for g in parts) / len(parts), 4)
           for k in ("total", "sentiment", "grammar", "repetition", "length", "off_topic")}
    return {**out, "samples": [{"prompt": s.prompt, "response": s.response} for s in drawn[:3]]}


def rlaif(n_human: int = 400, factor: int = 10, missing: str = "grammar", ppo_mode: str = "sum", ppo_betas=(0.3, 0.03),
          n_eval: int = 128, quick: bool = False, log=print) -> dict:
    """RLAIF with the zoo's judge and the shipped constitution (notebook 14).

    1. The judge labels the first n_human * factor training pairs of reviews-pairs under every principle, both
       orders (judge.principle_verdicts); the labels of a constitution are those verdicts combined
       (judge.combine_verdicts: one principle drawn per pair, "sample", or all summed, "sum"), and the
       constitution without the principle of aspect `missing` drops that principle's row.
    2. Reward models (the zoo's reviews-rm recipe, experiments.train_rm) on n_human human labels, on
       n_human * factor of them, and on AI labels at both counts; all scored on the 1000 human test pairs.
    3. PPO (PPOConfig defaults) from reviews-sft against the reward model on the full constitution's labels
       and on the labels of the constitution without `missing` (both combined by ppo_mode, at the larger count),
       at each KL coefficient in ppo_betas (PPOConfig's 0.3, and notebook 11's loose 0.03): the gold reward and
       every gold aspect of each final policy on n_eval held-out prompts (policy_aspects), out["ppo"][beta][name]
       (and the SFT policy's, out["sft_policy"]): is the aspect nobody asked about exploited?"""
    pairs, sft, judge = zoo.load_pairs("reviews-pairs"), zoo.load("reviews-sft"), zoo.load("reviews-judge")
    constitution = judges.read_constitution()
    ppo_overrides = {}
    if quick:
        n_human, factor, n_eval = 16, 2, 4
        ppo_overrides = {"iterations": 2, "batch_size": 8, "minibatches": 2}
    test = pairs["test"][:64] if quick else pairs["test"]
    kept = [k for k in constitution if judges.principle_aspect(k) != missing]
    if len(kept) == len(constitution):
        raise ValueError(f"the shipped constitution has no principle about {missing!r}: nothing to leave out")
    out = {"command": "python -m minirlhf experiments rlaif" + " --quick" * quick, "constitution": constitution,
           "n_human": n_human, "factor": factor, "missing": missing, "ppo_mode": ppo_mode, "labels": {}, "reward_models": {}, "ppo": {}}

    start = time.perf_counter()
    train = pairs["train"][:n_human * factor]
    prompts, chosen, rejected = ([p[k] for p in train] for k in ("prompt", "chosen", "rejected"))
    verdicts = judges.principle_verdicts(judge, constitution, prompts, chosen, rejected)
    gold_c, gold_r = ([p[k] for p in train] for k in ("gold_chosen", "gold_rejected"))
    log(f"judge verdicts on {len(train)} pairs x {len(constitution)} principles, both orders: "
        f"{time.perf_counter() - start:.0f} s")
    label_sets = {"human": train[:n_human], f"human x{factor}": train}
    keep_rows = [constitution.index(k) for k in kept]
    for name, rows, mode in (("ai sample", verdicts, "sample"), ("ai sum", verdicts, "sum"),
                             (f"ai {ppo_mode} without {missing}", verdicts[keep_rows], ppo_mode)):
        p_a = judges.combine_verdicts(rows, mode, seed=1)
        out["labels"][name] = {"gold_order_agreement": round(judges.judge_gold_agreement(p_a, gold_c, gold_r), 4),
                               "mean_confidence": round(float((p_a - 0.5).abs().mean()), 4)}
        labelled = judges.ai_label_pairs(prompts, chosen, rejected, p_a)
        if name in ("ai sample", "ai sum"):
            label_sets[name] = labelled[:n_human]
        label_sets[f"{name} x{factor}"] = labelled
    human_p = torch.ones(len(train))           # the human's own labels: chosen is what it preferred
    out["labels"]["human"] = {"gold_order_agreement": round(judges.judge_gold_agreement(human_p, gold_c, gold_r), 4)}

    rms = {}
    for name, rows in label_sets.items():
        start = time.perf_counter()
        seed_everything(0)
        rms[name], result = train_rm(len(rows), {"train": rows, "test": test}, sft, steps=4 if quick else None)
        out["reward_models"][name] = {"pairs": len(rows), **{k: round(v, 4) for k, v in result.items()}}
        log(f"RM on {len(rows)} {name} labels: gold order {result['gold_order_accuracy']:.3f}, "
            f"{time.perf_counter() - start:.0f} s")

    eval_prompts = reviews.prompts(n_eval, seed=50)
    out["sft_policy"] = policy_aspects(sft, eval_prompts)
    for beta in ppo_betas:
        runs = out["ppo"][str(beta)] = {}
        for name in (f"ai {ppo_mode} x{factor}", f"ai {ppo_mode} without {missing} x{factor}"):
            start = time.perf_counter()
            seed_everything(0)
            policy, history = train_ppo(zoo.load("reviews-sft"), sft, rms[name], reviews.prompts,
                                        PPOConfig(beta=beta, **ppo_overrides), gold_fn=reviews.gold_reward)
            runs[name] = {**policy_aspects(policy, eval_prompts), "history": rl_history_for_meta(history)}
            log(f"PPO (beta {beta}) against the RM on {name}: gold {runs[name]['total']:+.2f}, {missing} "
                f"{runs[name][missing]:.2f} (SFT {out['sft_policy'][missing]:.2f}); {time.perf_counter() - start:.0f} s")
    return out


# ---------------------------------------------------------------- tool use (notebook 16)
def tool_buckets(n: int, seed: int = 0) -> dict[str, list[str]]:
    """n tool_arithmetic prompts of each kind: two-digit products, sums with a one-digit operand (where the
    model alone is weakest), sums of two two-digit numbers."""
    sums = tool_arithmetic.prompts(8 * n, seed=seed, product_share=0.0)   # about 1 in 5 has a one-digit operand
    kinds = [bucket_of(p) for p in sums]
    return {"products": tool_arithmetic.prompts(n, seed=seed + 1, product_share=1.0),
            **{kind: [p for p, k in zip(sums, kinds) if k == kind][:n] for kind in ("one-digit sums", "two-digit sums")}}


def bucket_of(prompt: str) -> str:
    problem = tool_arithmetic.parse_prompt(prompt)
    return "products" if problem.op == "*" else "one-digit sums" if min(problem.a, problem.b) < 10 else "two-digit sums"


@torch.no_grad()
def tool_output_logprob(model: GPT, prompts: list[str]) -> float:
    """Mean log pi per token of the calculator's output in the demonstrations that call it (teacher-forced):
    how well the model itself predicts the results it reads. Masked training should leave it alone."""
    responses = [tool_arithmetic.demonstration(tool_arithmetic.parse_prompt(p), call=True) for p in prompts]
    tokens, attention = encode_responses(prompts, responses)
    starts = torch.tensor([len(TOKENIZER.encode(p, bos=True)) for p in prompts])
    sampled = tool_loss_mask(tokens, attention, starts)
    after_prompt = torch.arange(tokens.size(1))[None, :] >= starts[:, None]
    tool = attention & after_prompt & ~sampled
    return float(sequence_logprobs(model, tokens, tool).sum() / tool.sum())


def forced_call_accuracy(model: GPT, prompts: list[str], seed: int = 0) -> float:
    """q_call: the share right at T = 1 when the response is made to start with CALL_OPEN (the model writes the
    expression, the calculator answers): what a call is worth to this model, copying mistakes included."""
    texts, _ = sample_text_with_tools(model, [p + CALL_OPEN for p in prompts], TOOL_MAX_NEW_TOKENS,
                                      tool=lambda text: tool_output(CALL_OPEN + text), temperature=1.0,
                                      generator=torch.Generator().manual_seed(seed))
    return sum(tool_arithmetic.verify(p, CALL_OPEN + t) for p, t in zip(prompts, texts)) / len(prompts)


def tool_report(model: GPT, buckets: dict[str, list[str]], samples: int = 2) -> dict:
    """Per bucket, at T = 1 (samples per prompt): the call rate and accuracy with the tool, p_alone (the model's
    accuracy with no tool: it writes any result itself) and q_call (forced_call_accuracy), so that calling pays
    when q_call - c > p_alone; greedy accuracy and call rate with the tool; the tool-output log-prob."""
    out = {}
    for name, prompts in buckets.items():
        greedy = tool_use_accuracy(model, prompts)["all"]
        sampled = tool_use_accuracy(model, prompts * samples, temperature=1.0)["all"]
        alone = tool_use_accuracy(model, prompts * samples, temperature=1.0, use_tool=False)["all"]
        out[name] = {"greedy_accuracy": greedy["accuracy"], "greedy_call_rate": greedy["call_rate"],
                     "accuracy": sampled["accuracy"], "call_rate": sampled["call_rate"], "p_alone": alone["accuracy"],
                     "q_call": forced_call_accuracy(model, prompts * samples),
                     "tool_output_logprob": tool_output_logprob(model, prompts), "n": len(prompts)}
    return out


def per_bucket_curves(history: dict) -> dict:
    """Call rate and reward per step and bucket, from every training sample kept in history["samples"]."""
    curves = {name: {"call_rate": [], "reward": []} for name in ("products", "one-digit sums", "two-digit sums")}
    for step in history["samples"]:
        for name, curve in curves.items():
            rows = [s for s in step if bucket_of(s["prompt"]) == name]
            curve["call_rate"].append(round(sum(CALL_CLOSE in s["response"] for s in rows) / max(len(rows), 1), 4))
            curve["reward"].append(round(sum(s["reward"] for s in rows) / max(len(rows), 1), 4))
    return curves


def tool_rl(costs=(0.05, 0.5), seeds=(0, 1, 2), quick: bool = False, log=print) -> dict:
    """GRPO with the calculator from arithmetic-tool-sft, reward correct - c * calls (recipes.TOOL_GRPO), for
    each call cost c with the tool's output masked, and for the first c without the mask (the bug): the call
    rate and reward per step on products / one-digit sums / two-digit sums (from the training samples), and
    before/after reports (tool_report) on 200 held-out prompts of each kind. The first seed's runs are kept
    whole in "runs"; every seed's after-reports are in "seeds" {seed: {run name: report}}."""
    buckets = tool_buckets(16 if quick else 200, seed=20)
    overrides = dict(steps=2, prompts_per_step=4) if quick else {}
    seeds = seeds[:2] if quick else seeds
    config = {**TOOL_GRPO, **overrides}
    out = {"command": "python -m minirlhf experiments tool-rl" + " --quick" * quick, "config": config,
           "sft": tool_report(zoo.load("arithmetic-tool-sft"), buckets), "runs": {}, "seeds": {}}
    for seed in seeds:
        for cost, masked in [(c, True) for c in costs] + [(costs[0], False)]:
            name = f"c = {cost}" + ("" if masked else ", tool output not masked")
            seed_everything(seed)
            start = time.perf_counter()
            policy, history = tool_grpo(zoo.load("arithmetic-tool-sft"), cost, mask_tool_output=masked,
                                        **{**overrides, "seed": seed})
            after = tool_report(policy, buckets)
            out["seeds"].setdefault(str(seed), {})[name] = after
            if seed == seeds[0]:
                keep = ("reward", "accuracy", "tool_calls", "frac_reward_zero_std", "completion_length", "entropy")
                out["runs"][name] = {"call_cost": cost, "mask_tool_output": masked, "after": after,
                                     "by_bucket": per_bucket_curves(history),
                                     **{k: [round(x, 4) for x in history[k]] for k in keep}}
            log(f"{name}, seed {seed}: T=1 call rate " + ", ".join(
                f"{b} {out['sft'][b]['call_rate']:.2f} -> {after[b]['call_rate']:.2f}" for b in buckets)
                + f"; {time.perf_counter() - start:.0f} s")
    return out


def response_stats(prompts: list[str], responses: list[str]) -> dict:
    """Exact accuracy (arithmetic.verify), lenient reward (arithmetic.lenient_verify), mean count of numbers
    (runs of digits), share of responses with more than one number, mean length in characters."""
    n = len(responses)
    return {"exact": sum(arithmetic.verify(p, r) for p, r in zip(prompts, responses)) / n,
            "lenient": sum(arithmetic.lenient_verify(p, r) for p, r in zip(prompts, responses)) / n,
            "numbers": sum(map(arithmetic.count_numbers, responses)) / n,
            "multi": sum(arithmetic.count_numbers(r) > 1 for r in responses) / n,
            "chars": sum(map(len, responses)) / n}


def _rounded(d: dict, digits: int = 4) -> dict:
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in d.items()}


def long_samples(model: GPT, prompts: list[str], temperature: float, max_new_tokens: int, seed: int = 0) -> dict:
    """How often `model` samples a long answer (more than 3 characters, or no EOS within max_new_tokens), and
    the lenient reward of long and of short answers: can RL on the lenient verifier find the hack at all?"""
    drawn = sample(model, prompts, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    long = [s for s in drawn if len(s.response) > 3 or not s.finished]
    short = [s for s in drawn if not (len(s.response) > 3 or not s.finished)]
    lenient = lambda xs: sum(arithmetic.lenient_verify(s.prompt, s.response) for s in xs) / max(1, len(xs))
    return _rounded({"temperature": temperature, "samples": len(drawn), "long": len(long), "long_share": len(long) / len(drawn),
                     "lenient_long": lenient(long), "lenient_short": lenient(short),
                     "long_examples": [s.response for s in long[:6]]})


def _hack_run(policy: GPT, reward_name: str, config: GRPOConfig, held_out: list[str], show: list[str],
              eval_every: int, samples_per_show: int = 4) -> dict:
    """GRPO on the lenient or the exact reward, every sampled response scored by both verifiers (per-step means of
    response_stats), greedy response_stats on held_out every eval_every steps, and samples on the `show` prompts
    before and after."""
    reward_fn = {"lenient": arithmetic.lenient_reward, "exact": arithmetic.reward}[reward_name]
    seen: list[tuple[str, str]] = []

    def recording_reward(prompt: str, response: str) -> float:
        seen.append((prompt, response))
        return reward_fn(prompt, response)

    greedy: list[dict] = []

    def evaluate(model: GPT) -> float:
        drawn = sample(model, held_out, max_new_tokens=config.max_completion_length, greedy=True)
        greedy.append(_rounded(response_stats(held_out, [s.response for s in drawn])))
        return greedy[-1]["exact"]

    def shown(model: GPT) -> list[dict]:
        rows = [p for p in show for _ in range(samples_per_show)]
        drawn = sample(model, rows, max_new_tokens=config.max_completion_length, temperature=config.temperature, seed=9)
        return [{"prompt": p, "responses": [s.response for s in drawn[i * samples_per_show:(i + 1) * samples_per_show]]}
                for i, p in enumerate(show)]

    before = shown(policy)
    start = time.perf_counter()
    _, history = train_grpo(policy, arithmetic.prompts, recording_reward, config, eval_fn=evaluate, eval_every=eval_every)
    per_step = config.prompts_per_step * config.num_generations
    if len(seen) != per_step * config.steps:
        raise RuntimeError(f"expected {per_step * config.steps} scored responses, got {len(seen)}")
    curves: dict[str, list[float]] = {}
    for step in range(config.steps):
        chunk = seen[step * per_step:(step + 1) * per_step]
        for k, v in response_stats([p for p, _ in chunk], [r for _, r in chunk]).items():
            curves.setdefault(k, []).append(round(v, 4))
    return {"reward": reward_name, "seconds": round(time.perf_counter() - start, 1), **curves,
            "completion_length": [round(x, 4) for x in history["completion_length"]],
            "greedy": greedy, "greedy_steps": [0] + [s for s in range(1, config.steps + 1)
                                                     if s % eval_every == 0 or s == config.steps],
            "samples_before": before, "samples_after": shown(policy)}


def grpo_hack(steps: int = 100, share: float = 0.1, sft_steps: int = 100, max_completion_length: int = 12,
              lr: float = 1e-4, quick: bool = False, log=print) -> dict:
    """A verifier that can be hacked (notebook 15): GRPO on arithmetic.lenient_reward (the right digits anywhere in
    the response) against GRPO on the exact arithmetic.reward, answers of up to max_completion_length tokens.

    1. "sft_alone": does arithmetic-sft ever sample the hack? Its share of long answers at temperatures 1, 1.5, 2 and
       their lenient reward against that of short answers; then lenient GRPO from arithmetic-sft itself.
    2. "hedged": arithmetic-sft fine-tuned sft_steps more steps (lr 3e-4) on arithmetic.hedged_sft_dataset (a
       `share` of the answers list two numbers), then GRPO on the lenient and on the exact reward from it.
    Every run: per-step exact accuracy, lenient reward, numbers per response, share with several numbers, length
    (all sampled answers scored by both verifiers), greedy response_stats on held-out sums every 20 steps, and
    samples on 4 prompts before and after. GRPO settings: loss_type "grpo", scale_rewards "group", 16 x 8, T 1."""
    if quick:
        steps, sft_steps = 2, 2
    held_out = arithmetic.prompts(40 if quick else 300, seed=4)
    probe = arithmetic.prompts(40 if quick else 1000, seed=6)
    show = arithmetic.prompts(4, seed=8)
    eval_every = 1 if quick else 20
    base = dict(steps=steps, prompts_per_step=4 if quick else 16, num_generations=8,
                max_completion_length=max_completion_length, temperature=1.0, lr=lr, loss_type="grpo",
                scale_rewards="group")
    out = {"command": "python -m minirlhf experiments grpo-hack" + " --quick" * quick, "grpo": base,
           "held_out": len(held_out), "runs": {}}
    sft_model = zoo.load("arithmetic-sft")
    start = time.perf_counter()
    out["sft_alone"] = {"long_samples": [long_samples(sft_model, probe, t, max_completion_length, seed=1)
                                         for t in (1.0, 1.5, 2.0)]}
    log(f"arithmetic-sft long answers: {[(r['temperature'], r['long_share'], r['lenient_long'], r['lenient_short']) for r in out['sft_alone']['long_samples']]}, "
        f"{time.perf_counter() - start:.0f} s")

    seed_everything(0)
    hedged = zoo.load("arithmetic-sft")
    start = time.perf_counter()
    sft(hedged, arithmetic.hedged_sft_dataset(4000, seed=7, share=share), steps=sft_steps, lr=3e-4, seed=0,
        warmup=1 if quick else 10)
    drawn = sample(hedged, held_out, max_new_tokens=max_completion_length, temperature=1.0, seed=3)
    greedy = sample(hedged, held_out, max_new_tokens=max_completion_length, greedy=True)
    out["hedged_sft"] = {"share": share, "steps": sft_steps, "lr": 3e-4, "examples": 4000,
                         "sampled": _rounded(response_stats(held_out, [s.response for s in drawn])),
                         "greedy": _rounded(response_stats(held_out, [s.response for s in greedy]))}
    log(f"hedged SFT: sampled {out['hedged_sft']['sampled']}, {time.perf_counter() - start:.0f} s")

    for name, start_model, reward_name in (("arithmetic-sft, lenient", sft_model, "lenient"),
                                           ("hedged, lenient", hedged, "lenient"), ("hedged, exact", hedged, "exact")):
        seed_everything(0)
        policy = copy.deepcopy(start_model)
        run = _hack_run(policy, reward_name, GRPOConfig(**base), held_out, show, eval_every)
        out["runs"][name] = run
        log(f"{name}: exact {run['exact'][0]:.2f} -> {run['exact'][-1]:.2f}, lenient {run['lenient'][0]:.2f} -> "
            f"{run['lenient'][-1]:.2f}, numbers {run['numbers'][0]:.2f} -> {run['numbers'][-1]:.2f}, "
            f"greedy exact {run['greedy'][0]['exact']:.3f} -> {run['greedy'][-1]['exact']:.3f}, {run['seconds']:.0f} s")
    return out


def steps_sft_model(sft_steps: int = 400, lr: float = 1e-3, context_length: int = 48, seed: int = 0) -> GPT:
    """arithmetic-sft, its context extended to context_length (new position rows "repeat"), fine-tuned sft_steps
    steps on 8000 step-by-step demonstrations (arithmetic.steps_sft_dataset): the start of grpo-length."""
    seed_everything(seed)
    model = extend_context(zoo.load("arithmetic-sft"), context_length, new_rows="repeat")
    sft(model, arithmetic.steps_sft_dataset(8000, seed=13), steps=sft_steps, lr=lr, seed=seed,
        warmup=min(20, max(1, sft_steps // 10)))
    return model


def length_stats(prompts: list[str], responses: list[str]) -> dict:
    """For the step-by-step format: accuracy (arithmetic.steps_verify), the mean length in characters of right and of
    wrong responses, and their mean excess length over the demonstration's (arithmetic.steps_response) for the same
    problem, which takes out how long the problems drawn happen to be. None where there is no such response."""
    ok = [arithmetic.steps_verify(p, r) for p, r in zip(prompts, responses)]
    excess = [len(r) - len(arithmetic.steps_response(arithmetic.parse_prompt(p))) for p, r in zip(prompts, responses)]
    out = {"accuracy": sum(ok) / len(ok)}
    for label, want in (("right", True), ("wrong", False)):
        idx = [i for i, o in enumerate(ok) if o == want]
        out[f"length_{label}"] = sum(len(responses[i]) for i in idx) / len(idx) if idx else None
        out[f"excess_{label}"] = sum(excess[i] for i in idx) / len(idx) if idx else None
    return out


GRPO_LENGTH_METHODS = {"GRPO": dict(loss_type="grpo", scale_rewards="group"),
                       "Dr. GRPO": dict(loss_type="dr_grpo", scale_rewards="none")}


def grpo_length(steps: int = 150, sft_steps: int = 400, lr: float = 1e-4, max_completion_length: int = 24,
                quick: bool = False, log=print) -> dict:
    """Length bias (notebook 15): GRPO (loss_type "grpo": each response's loss averaged over its own tokens, std
    scaling) against Dr. GRPO (loss_type "dr_grpo", scale_rewards "none": a constant normaliser) from the same
    step-by-step model (steps_sft_model), on the step-by-step verifier (arithmetic.steps_reward), same seed, 16 x 8
    answers per step. Per step, every sampled answer is measured (length_stats): do wrong answers grow longer?
    Plus greedy length_stats on 300 held-out sums before and after."""
    if quick:
        steps, sft_steps = 2, 2
    held_out = arithmetic.prompts(40 if quick else 300, seed=4)
    start = time.perf_counter()
    model = steps_sft_model(sft_steps)
    greedy = lambda m: _rounded(length_stats(held_out, [s.response for s in sample(
        m, held_out, max_new_tokens=max_completion_length, greedy=True)]))
    out = {"command": "python -m minirlhf experiments grpo-length" + " --quick" * quick,
           "steps_sft": {"steps": sft_steps, "lr": 1e-3, "examples": 8000, "context_length": model.config.context_length,
                         "greedy": greedy(model)},
           "grpo": dict(steps=steps, prompts_per_step=4 if quick else 16, num_generations=8,
                        max_completion_length=max_completion_length, lr=lr),
           "runs": {}}
    log(f"step-by-step SFT: greedy {out['steps_sft']['greedy']}, {time.perf_counter() - start:.0f} s")
    for name, overrides in GRPO_LENGTH_METHODS.items():
        seen: list[tuple[str, str]] = []

        def recording_reward(prompt: str, response: str) -> float:
            seen.append((prompt, response))
            return arithmetic.steps_reward(prompt, response)

        seed_everything(0)
        policy = copy.deepcopy(model)
        start = time.perf_counter()
        config = GRPOConfig(**out["grpo"], **overrides)
        _, history = train_grpo(policy, arithmetic.prompts, recording_reward, config)
        per_step = config.prompts_per_step * config.num_generations
        curves: dict[str, list] = {}
        for step in range(config.steps):
            chunk = seen[step * per_step:(step + 1) * per_step]
            for k, v in length_stats([p for p, _ in chunk], [r for _, r in chunk]).items():
                curves.setdefault(k, []).append(None if v is None else round(v, 4))
            # a response of max_completion_length characters (one token each) was cut before its EOS
            curves.setdefault("truncated", []).append(
                round(sum(len(r) >= config.max_completion_length for _, r in chunk) / len(chunk), 4))
        run = {**overrides, "seconds": round(time.perf_counter() - start, 1), **curves,
               "greedy_after": greedy(policy),
               "samples": history["samples"][-1]}
        out["runs"][name] = run
        log(f"{name}: accuracy {run['accuracy'][0]:.2f} -> {run['accuracy'][-1]:.2f}, excess length of wrong answers "
            f"{run['excess_wrong'][0]} -> {run['excess_wrong'][-1]}, {run['seconds']:.0f} s")
    return out


def _card(card: dict) -> dict:
    """A report card as plain rounded data."""
    return {k: (_rounded(v) if isinstance(v, dict) else [round(x, 4) for x in v] if isinstance(v, tuple)
                else v if not isinstance(v, float) else round(v, 4)) for k, v in card.items()}


def best_of_n_card(policy: GPT, reward, prompts: list[str], n: int = 16, seed: int = 0, pool=None) -> dict:
    """Best-of-n from `policy` by `reward` (a RewardModel) and by the gold judge itself (the oracle), one pick
    per prompt: gold (mean, se, and per prompt) and violation rate of the reward's picks, the oracle's gold and the
    mean gold of all samples. pool: the n samples of each prompt, prompt by prompt, if already drawn."""
    if pool is None:
        pool = sample(policy, [p for p in prompts for _ in range(n)], max_new_tokens=capstone.MAX_NEW_TOKENS, seed=seed)
    if len(pool) != n * len(prompts):
        raise ValueError(f"pool holds {len(pool)} samples; best-of-{n} on {len(prompts)} prompts needs {n * len(prompts)}")
    proxy = capstone.as_scorer(reward)([s.prompt for s in pool], [s.response for s in pool]).view(len(prompts), n)
    gold = torch.tensor([support.gold_breakdown(s.prompt, s.response, s.finished).total for s in pool]).view(len(prompts), n)
    picked = gold.gather(1, proxy.argmax(1, keepdim=True)).squeeze(1)
    return {"gold": capstone.mean_se(picked.tolist()), "gold_per_prompt": picked.tolist(), "violation_rate": capstone.mean_se((picked == -1).float().tolist()),
            "oracle_gold": capstone.mean_se(gold.max(1).values.tolist()), "sampled_gold": float(gold.mean())}


def _learner_data(quick: bool):
    """support-ratings' training ratings, and the held-out users' tickets as gold pairs of SFT replies."""
    sft = zoo.load("support-sft")
    data = zoo.load_pairs("support-ratings")
    train = data["train"][:200] if quick else data["train"]
    heldout_prompts = sorted({r["prompt"] for r in data["heldout"]})[: 8 if quick else None]
    return sft, data, train, capstone.gold_pairs(sft, heldout_prompts, replies=4, seed=5)


def rm_learners(learner_steps: int = 300, quick: bool = False, log=print) -> dict:
    """The four ways of learning a reward from the users' stars (capstone.LEARNERS), from support-sft on
    support-ratings' training users, each scored on how often it orders two SFT replies to a held-out user's ticket
    as the gold judge does, and as the held-out users' own stars do (their within-user pairs). Notebook 17."""
    if quick:
        learner_steps = 4
    sft, data, train, eval_pairs = _learner_data(quick)
    user_pairs = [{"prompt": p["prompt"], "a": p["chosen"], "b": p["rejected"], "gold_a": 1.0, "gold_b": 0.0}
                  for p in user_ratings.within_user_pairs(data["heldout"])]
    out = {"command": "python -m minirlhf experiments rm-learners" + " --quick" * quick, "learner_steps": learner_steps,
           "n_train_ratings": len(train), "n_train_pairs": len(user_ratings.within_user_pairs(train)),
           "n_train_thumbs": len(user_ratings.thumbs(train)), "n_eval_pairs": len(eval_pairs),
           "n_user_pairs": len(user_pairs), "learners": {}}
    for kind in capstone.LEARNERS:
        start = time.perf_counter()
        reward, _ = capstone.train_learner(kind, sft, train, steps=learner_steps)
        row = {"gold_agreement": round(capstone.gold_agreement(reward, eval_pairs), 4),
               "user_agreement": round(capstone.gold_agreement(reward, user_pairs), 4),
               "seconds": round(time.perf_counter() - start)}
        out["learners"][kind] = row
        log(f"{kind}: agreement with gold {row['gold_agreement']:.3f}, with held-out users {row['user_agreement']:.3f}, "
            f"{row['seconds']} s")
    return out


def capstone_lab(learner_steps: int = 300, ppo_iterations: int = SUPPORT_PPO["iterations"], iterate_iterations: int = 50,
                 n_eval: int = 400, seeds=(0, 1, 2), quick: bool = False, log=print) -> dict:
    """The capstone's optimisation and report (notebook 17), from the zoo's support-sft, support-ratings,
    support-rm and support-ppo:

    1. best-of-16 from SFT by support-rm (the baseline; and by gold, the oracle); PPO against support-rm WITHOUT
       the policy check (the rating bias exploited: per-iteration violation rate) beside the zoo's support-ppo
       (with it); a report card of each on n_eval held-out prompts; the check's run with other PPO seeds (the zoo's
       is seed 0), and two variants of it (a penalty of 2; beta 0.05);
    2. one more round: new ratings from the training users on support-ppo's replies, the reward model retrained
       on old + new, PPO continued from support-ppo for iterate_iterations; its report card.
    """
    if quick:
        learner_steps, ppo_iterations, iterate_iterations, n_eval, seeds = 4, 2, 2, 16, seeds[:2]
    sft, data, train, eval_pairs = _learner_data(quick)
    rm = zoo.load("support-rm")
    out = {"command": "python -m minirlhf experiments capstone" + " --quick" * quick}
    prompts = support.prompts(n_eval, seed=77)
    out["best_of_16"] = _card(best_of_n_card(sft, rm, prompts, 16))
    log(f"best-of-16 by support-rm: gold {out['best_of_16']['gold'][0]:.3f}, oracle {out['best_of_16']['oracle_gold'][0]:.3f}")
    experts = support.sft_dataset(400, seed=99)
    tuned = zoo.load("support-ppo")
    out["ppo_with_check"] = _card(capstone.report_card(tuned, sft, prompts, expert_pairs=experts))
    diff = torch.tensor(out["ppo_with_check"]["gold_per_prompt"]) - torch.tensor(out["best_of_16"]["gold_per_prompt"])
    out["ppo_minus_best_of_16"] = [round(x, 4) for x in capstone.mean_se(diff.tolist())]   # paired, same prompts
    log(f"support-ppo - best-of-16: {out['ppo_minus_best_of_16'][0]:+.3f} +- {out['ppo_minus_best_of_16'][1]:.3f}")
    out["seeds"] = {"0": {"gold": out["ppo_with_check"]["gold"], "violation_rate": out["ppo_with_check"]["violation_rate"],
                          "minus_best_of_16": out["ppo_minus_best_of_16"], "kl_to_sft": out["ppo_with_check"]["kl_to_sft"]}}
    for seed in seeds[1:]:      # the same recipe, other PPO seeds (sampling and minibatch order)
        policy, _ = run_recipe("support-ppo", iterations=ppo_iterations, seed=seed)
        card = capstone.report_card(policy, sft, prompts)
        diff = torch.tensor(card["gold_per_prompt"]) - torch.tensor(out["best_of_16"]["gold_per_prompt"])
        out["seeds"][str(seed)] = {"gold": [round(x, 4) for x in card["gold"]],
                                   "violation_rate": [round(x, 4) for x in card["violation_rate"]],
                                   "minus_best_of_16": [round(x, 4) for x in capstone.mean_se(diff.tolist())],
                                   "kl_to_sft": round(card["kl_to_sft"], 4)}
        log(f"seed {seed}: gold {card['gold'][0]:.3f}, minus best-of-16 {out['seeds'][str(seed)]['minus_best_of_16'][0]:+.3f}"
            f" +- {out['seeds'][str(seed)]['minus_best_of_16'][1]:.3f}, violations {card['violation_rate'][0]:.3f}")
    policy, history = run_recipe("support-ppo", penalty=0.0, iterations=ppo_iterations)   # the same run, no check
    out["ppo_without_check"] = {"proxy_reward": [round(x, 4) for x in history["proxy_reward"]],
                                "gold": [round(x, 4) for x in history["gold"]],
                                "kl": [round(x, 4) for x in history["kl"]], "violations": history["violations"],
                                "card": _card(capstone.report_card(policy, sft, prompts, expert_pairs=experts))}
    log(f"PPO without the check: violations {out['ppo_without_check']['violations'][0]:.2f} -> "
        f"{out['ppo_without_check']['card']['violation_rate'][0]:.2f}, gold {out['ppo_without_check']['card']['gold'][0]:.3f}")
    out["variants"] = {}
    for name, overrides in (("penalty 2", dict(penalty=2.0)), ("penalty 5, beta 0.05", dict(beta=0.05))):
        policy, history = run_recipe("support-ppo", iterations=ppo_iterations, **overrides)
        card = _card(capstone.report_card(policy, sft, prompts, expert_pairs=experts))
        out["variants"][name] = {"overrides": overrides, "violations": history["violations"],
                                 "gold": [round(x, 4) for x in history["gold"]], "card": card}
        log(f"{name}: gold {card['gold'][0]:.3f}, violations {card['violation_rate'][0]:.3f}, "
            f"resolved {card['parts']['resolved']:.3f}, KL {card['kl_to_sft']:.2f}")
    users = user_ratings.make_users(1000, seed=20)[: 50 if quick else None]
    fresh = capstone.collect_ratings(tuned, users, seed=30)
    reward2, _ = capstone.train_learner(SUPPORT_LEARNER, sft, train + fresh, steps=learner_steps)
    seed_everything(0)
    _, history2 = train_ppo(tuned, sft, capstone.ComplianceReward(reward2, SUPPORT_PENALTY), support.prompts,
                            PPOConfig(**{**SUPPORT_PPO, "iterations": iterate_iterations}), gold_fn=support.gold_reward)
    out["iterated"] = {"new_ratings": len(fresh), "mean_stars_sft": round(sum(r["stars"] for r in train) / len(train), 4),
                       "mean_stars_tuned": round(sum(r["stars"] for r in fresh) / len(fresh), 4),
                       "gold_agreement": round(capstone.gold_agreement(reward2, eval_pairs), 4),
                       "gold": [round(x, 4) for x in history2["gold"]],
                       "card": _card(capstone.report_card(tuned, sft, prompts, expert_pairs=experts))}
    log(f"iterated: gold {out['ppo_with_check']['gold'][0]:.3f} -> {out['iterated']['card']['gold'][0]:.3f}")
    return out


EXPERIMENTS = {"rm-sweep": rm_sweep, "ppo-beta": ppo_beta, "reward-hacking": reward_hacking,
               "online-rlhf": online_rlhf, "dpo-frontier": dpo_frontier,
               "rlaif": rlaif}
EXPERIMENTS["tool-rl"] = tool_rl
EXPERIMENTS["grpo-hack"] = grpo_hack
EXPERIMENTS["grpo-length"] = grpo_length
EXPERIMENTS["rm-learners"] = rm_learners
EXPERIMENTS["capstone"] = capstone_lab
EXPERIMENTS["rlvr"] = rlvr
EXPERIMENTS["thinking"] = thinking
EXPERIMENTS["thinking-rm"] = thinking_rm


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minirlhf experiments", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(EXPERIMENTS))
    parser.add_argument("--quick", action="store_true", help="a short smoke run, written to a temp dir")
    args = parser.parse_args(argv)
    results = EXPERIMENTS[args.name](quick=args.quick)
    out_dir = Path(tempfile.mkdtemp()) if args.quick else RESULTS_DIR
    path = out_dir / f"{args.name.replace('-', '_')}.json"
    atomic_write_bytes(path, (json.dumps(results, indent=1) + "\n").encode())
    print(f"wrote {path}")
    return 0

