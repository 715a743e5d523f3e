"""Experiment `thinking` (notebook 19): learning to think, R1-Zero in miniature, on long sums.

The starting policy (zoo `think-sft`) answers most sums directly and thinks out loud (a scratchpad, see
tasks.long_arithmetic) on about 15% of them. GRPO with the exact outcome-only verifier (no reward for thinking or
length) then decides where thinking pays. Measured here:

- the gap: greedy accuracy per difficulty bucket when the model is made to answer directly or to think;
- GRPO, 3 seeds: accuracy and mean response length over the steps (R1-Zero's curve), thinking rate and accuracy
  per bucket at the end;
- at matched samples: rejection-sampling fine-tuning (RFT) on the model's own verified outputs, and distillation
  (SFT on the task's scratchpad demonstrations) with as many examples as RFT kept; each method's learning rate
  chosen on validation problems;
- GRPO with a price on length (LENGTH_COST per character), and GRPO with a KL penalty to the start (KL_BETA):
  does either keep easy answers short, which the outcome-only reward does not?
- faithfulness: the step checker on every greedy scratchpad: right answers with a wrong step, final answers that
  differ from what the steps imply.

Experiment `thinking-rm` (`thinking_rm`): process vs outcome verifiers trained on the step checker's labels, as
best-of-N rerankers of hot scratchpads.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from .. import zoo
from ..generation import generate, left_pad
from ..grpo import GRPOConfig, train_grpo
from ..losses import verifier_loss
from ..reward import RewardModel, encode_responses
from ..rft import RFTConfig, train_rft
from ..sampling import sample
from ..tasks import long_arithmetic as task
from ..tokenizer import TOKENIZER
from ..train import make_optimizer, optimizer_step, sft
from ..utils import round_floats, seed_everything
from .recipes import THINK_GRPO, THINK_SAMPLING

START = "think-sft"
MODES = ("free", "think", "direct")
LEARNING_RATES = (1e-4, 3e-4)       # swept per method (GRPO, RFT, distillation) on seed 0, chosen on validation
LENGTH_COST = 0.005                  # per character: a right 4-digit scratchpad still earns about 0.82
KL_BETA = 0.2                        # k3 KL to think-sft in the loss: 5 times DeepSeekMath's 0.04, a strong pull back
DISTILL_BATCH = 32


@torch.no_grad()
def greedy_responses(model, prompts: list[str], mode: str = "free",
                     max_new_tokens: int = task.MAX_RESPONSE_TOKENS) -> list[str]:
    """Greedy responses; mode "think" opens the scratchpad for the model (the prompt ends with "<"), "direct"
    forbids "<" (and an empty answer) as the first token: its first token is the best other one; "free" lets it
    choose. A response cut
    at max_new_tokens has no answer the verifier accepts (a scratchpad without ">", or a run of 40 digits)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    prefixes = [""] * len(prompts)
    if mode == "think":
        prefixes = [task.THINK_OPEN] * len(prompts)
    elif mode == "direct":
        ids = [TOKENIZER.encode(p, bos=True) for p in prompts]
        tokens, mask = left_pad(ids, max(map(len, ids)), TOKENIZER.pad_id, next(model.parameters()).device)
        logits = model(tokens, mask)[:, -1]                                # (B, V)
        logits[:, TOKENIZER.encode(task.THINK_OPEN)[0]] = float("-inf")
        logits[:, TOKENIZER.eos_id] = float("-inf")
        prefixes = [TOKENIZER.decode([t]) for t in logits.argmax(-1).tolist()]
    ids = [TOKENIZER.encode(p + x, bos=True) for p, x in zip(prompts, prefixes)]
    gen = generate(model, ids, max_new_tokens - 1 if mode != "free" else max_new_tokens, greedy=True)
    return [x + TOKENIZER.decode(r) for x, r in zip(prefixes, gen.responses)]


def bucket_report(prompts: list[str], responses: list[str]) -> dict:
    """Per difficulty bucket (and "all"): accuracy, thinking rate, mean length (characters) of the responses."""
    out = {}
    for name in (*task.BUCKETS, "all"):
        rows = [(p, r) for p, r in zip(prompts, responses) if name == "all" or task.difficulty(p) == name]
        if not rows:
            continue
        n = len(rows)
        out[name] = {"n": n, "accuracy": sum(task.verify(p, r) for p, r in rows) / n,
                     "thinks": sum(task.thinks(r) for _, r in rows) / n,
                     "length": sum(len(r) for _, r in rows) / n}
    return out


def faithfulness(prompts: list[str], responses: list[str]) -> dict:
    """Over the thinking responses: how many; the share with every step right; among the right answers, the share
    with a wrong step ("right answer, wrong steps", Uesato et al. 2022); the share whose final answer differs from
    the answer its own steps imply."""
    rows = [(p, r) for p, r in zip(prompts, responses) if task.thinks(r)]
    right = [(p, r) for p, r in rows if task.verify(p, r)]
    n = max(1, len(rows))
    return {"thinking": len(rows),
            "steps_right": sum(task.steps_right(p, r) for p, r in rows) / n,
            "right_answer_wrong_step": sum(not task.steps_right(p, r) for p, r in right) / max(1, len(right)),
            "answer_not_implied": sum(task.faithful(r) is not True for _, r in rows) / n}


def step_curves(samples: list[list[dict]]) -> dict:
    """Per bucket, per training step: the share of the step's samples that think, are right, and their mean length
    (characters). samples: one list of {prompt, response, reward} per step (a trainer's history["samples"])."""
    out = {b: {"thinks": [], "reward": [], "length": []} for b in task.BUCKETS}
    for step in samples:
        for b, curves in out.items():
            rows = [s for s in step if task.difficulty(s["prompt"]) == b]
            n = max(1, len(rows))
            curves["thinks"].append(sum(task.thinks(s["response"]) for s in rows) / n)
            curves["reward"].append(sum(s["reward"] for s in rows) / n)
            curves["length"].append(sum(len(s["response"]) for s in rows) / n)
    return out


def held_out(quick: bool = False, seed: int = 4) -> list[str]:
    """Held-out problems, as many per bucket: 1- and 2-digit sums (easy), 3 (medium), 4 (hard). seed 6: the
    validation problems that choose learning rates."""
    n = 10 if quick else 100
    return (task.prompts(n // 2, seed=seed, digits=1) + task.prompts(n // 2, seed=seed, digits=2)
            + task.prompts(n, seed=seed, digits=3) + task.prompts(n, seed=seed, digits=4))


def gap(model, prompts: list[str]) -> dict:
    """bucket_report of the greedy responses in each mode: the model made to answer directly, to think, or free."""
    return {mode: bucket_report(prompts, greedy_responses(model, prompts, mode)) for mode in MODES}


def final_measures(model, prompts: list[str]) -> dict:
    """Free greedy behaviour per bucket, and faithfulness of the free and of the forced scratchpads."""
    free, forced = greedy_responses(model, prompts, "free"), greedy_responses(model, prompts, "think")
    return {"buckets": bucket_report(prompts, free), "faithfulness": faithfulness(prompts, free),
            "forced_think": {"buckets": bucket_report(prompts, forced), "faithfulness": faithfulness(prompts, forced)},
            "examples": [{"prompt": p, "response": r} for p, r in zip(prompts, free)][::len(prompts) // 8]}


def run(spec: dict) -> dict:
    """One run from START: spec = {method ("GRPO", "GRPO + length cost", "GRPO + KL", "RFT" or "distill"), seed,
    steps, lr, quick, and for distill n_examples}. GRPO and RFT draw the same samples per step (prompts_per_step x
    num_generations); "GRPO + length cost" is GRPO on task.make_reward(LENGTH_COST), "GRPO + KL" GRPO with beta
    KL_BETA (the reference: START); distill is SFT on n_examples
    scratchpad demonstrations of fresh problems. Returns per-step curves, greedy evaluations per bucket along the
    run, the hard validation accuracy, the final measures and the time taken."""
    seed_everything(spec["seed"], threads=1)
    start = time.perf_counter()
    test = held_out(spec["quick"])
    policy = zoo.load(START)
    evals = []

    def evaluate(model) -> float:
        evals.append(bucket_report(test, greedy_responses(model, test)))
        return evals[-1]["hard"]["accuracy"]

    method, out = spec["method"], {k: spec[k] for k in ("method", "seed", "lr")}
    eval_every = max(1, spec["steps"] // 5)
    if method == "distill":
        pairs = task.sft_dataset(spec["n_examples"], seed=100 + spec["seed"], think_share=1.0)
        steps = max(1, -(-len(pairs) // DISTILL_BATCH))
        history = sft(policy, pairs, steps=steps, batch_size=DISTILL_BATCH, lr=spec["lr"], seed=spec["seed"],
                      warmup=min(10, steps), eval_fn=lambda m: {"hard": evaluate(m)}, eval_every=eval_every)
        out.update(n_examples=len(pairs), steps=steps, loss=history["loss"])
    else:
        every = THINK_SAMPLING["prompts_per_step"] * THINK_SAMPLING["num_generations"]   # keep every sample
        shared = dict(steps=spec["steps"], seed=spec["seed"], n_samples=every, **THINK_SAMPLING)
        if method.startswith("GRPO"):
            config = GRPOConfig(**{**THINK_GRPO, **shared, "lr": spec["lr"], "beta": KL_BETA if method == "GRPO + KL" else 0.0})
            reward = task.make_reward(LENGTH_COST) if method == "GRPO + length cost" else task.reward
            _, history = train_grpo(policy, task.prompts, reward, config,
                                    eval_fn=evaluate, eval_every=eval_every)
            out.update(completion_length=history["completion_length"], entropy=history["entropy"],
                       frac_reward_zero_std=history["frac_reward_zero_std"])
        else:
            _, history = train_rft(policy, task.prompts, task.reward, RFTConfig(**shared, lr=spec["lr"]),
                                   eval_fn=evaluate, eval_every=eval_every)
            out.update(kept=history["kept"])
        out.update(reward=history["reward"], by_bucket=step_curves(history["samples"]),
                   samples_seen=history["samples_seen"],
                   eval_samples_seen=history["eval_samples_seen"])
    validation = held_out(spec["quick"], seed=6)
    out["validation_hard"] = bucket_report(validation, greedy_responses(policy, validation))["hard"]["accuracy"]
    out.update(evals=evals, final=final_measures(policy, test), seconds=time.perf_counter() - start)
    return out


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (std with n - 1, over sqrt n; 0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, (var / n) ** 0.5


def summary(runs: list[dict]) -> dict:
    """Per method: the final greedy accuracy, thinking rate and length per bucket, as (mean, standard error) over
    its seeds, and the samples drawn (GRPO, RFT) or demonstrations used (distill)."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        rs = [r for r in runs if r["method"] == method]
        out[method] = {b: {k: mean_se([r["final"]["buckets"][b][k] for r in rs]) for k in ("accuracy", "thinks", "length")}
                       for b in rs[0]["final"]["buckets"]}
        out[method]["seeds"] = len(rs)
        out[method]["samples"] = mean_se([r["samples_seen"][-1] if "samples_seen" in r else r["n_examples"] for r in rs])
    return out


def thinking(steps: int = THINK_GRPO["steps"], seeds=(0, 1, 2), quick: bool = False, log=print) -> dict:
    """The experiment (one process, one thread; about 6 minutes on a shared 2-core machine, 4 alone); see the module
    docstring. Each method's learning rate is chosen from LEARNING_RATES on seed 0 by the greedy accuracy on hard
    validation problems; distillation gets as many demonstrations as RFT (at its chosen rate, same seed) kept."""
    steps, seeds = (2, (0,)) if quick else (steps, seeds)
    test = held_out(quick)
    out = {"command": "python -m minirlhf experiments thinking" + " --quick" * quick, "start": START,
           "held_out_per_bucket": {b: sum(task.difficulty(p) == b for p in test) for b in task.BUCKETS},
           "steps": steps, "seeds": list(seeds), "sampling": THINK_SAMPLING, "grpo": THINK_GRPO,
           "learning_rates": list(LEARNING_RATES), "length_cost": LENGTH_COST, "kl_beta": KL_BETA,
           "distill_batch_size": DISTILL_BATCH,
           "threads": 1}
    for name in ("think-base", START):
        seed_everything(0, threads=1)
        model = zoo.load(name)
        out.setdefault("gap", {})[name] = gap(model, test)
        log(f"{name}: hard accuracy direct {out['gap'][name]['direct']['hard']['accuracy']:.2f}, "
            f"thinking {out['gap'][name]['think']['hard']['accuracy']:.2f}")
    out["start_final"] = final_measures(zoo.load(START), test)

    def go(method: str, seed: int, lr: float, **extra) -> dict:
        result = run({"method": method, "seed": seed, "steps": steps, "lr": lr, "quick": quick, **extra})
        log(f"{method} seed {seed} lr {lr:g}: hard accuracy {result['final']['buckets']['hard']['accuracy']:.2f}, "
            f"thinks {result['final']['buckets']['hard']['thinks']:.2f} (easy {result['final']['buckets']['easy']['thinks']:.2f}), "
            f"validation {result['validation_hard']:.2f}, {result['seconds']:.0f} s")
        return result

    def choose(method: str, sweep: list[dict]) -> dict:
        out.setdefault("sweep", {})[method] = {f"{r['lr']:g}": r["validation_hard"] for r in sweep}
        return max(sweep, key=lambda r: r["validation_hard"])       # the first rate wins a tie

    first = seeds[0]
    grpo = choose("GRPO", [go("GRPO", first, lr) for lr in LEARNING_RATES])
    rft = choose("RFT", [go("RFT", first, lr) for lr in LEARNING_RATES])
    distill = choose("distill", [go("distill", first, lr, n_examples=sum(rft["kept"])) for lr in LEARNING_RATES])
    out["chosen_lr"] = {"GRPO": grpo["lr"], "RFT": rft["lr"], "distill": distill["lr"]}
    runs = [grpo, rft, distill, go("GRPO + length cost", first, grpo["lr"]), go("GRPO + KL", first, grpo["lr"])]
    for seed in seeds[1:]:
        runs += [go("GRPO", seed, grpo["lr"]), go("RFT", seed, rft["lr"])]
        runs += [go("distill", seed, distill["lr"], n_examples=sum(runs[-1]["kept"])),
                 go("GRPO + length cost", seed, grpo["lr"]), go("GRPO + KL", seed, grpo["lr"])]
    out["runs"] = runs
    out["summary"] = summary(runs)
    return round_floats(out)


# ---------------------------------------------------------------- process vs outcome reward models (best-of-N)
def verifier_targets(prompts: list[str], responses: list[str], process: bool):
    """Rows "BOS prompt response EOS" (right-padded) and where a verifier is trained: tokens (B, T), mask (B, T),
    where (B, T) bool and labels (B, T) float. The outcome label (is the final answer right) sits on EOS; a process
    verifier also gets each step's label (task.check_steps) on the step's last character."""
    tokens, mask = encode_responses(prompts, responses)
    where, labels = torch.zeros_like(mask), torch.zeros(tokens.shape)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        start = 1 + len(p)                              # BOS, then the prompt's characters
        points = [(start + len(r), task.verify(p, r))]
        if process:
            points += [(start + end, ok) for end, ok in zip(task.step_ends(r), task.check_steps(p, r))]
        for t, label in points:
            where[b, t], labels[b, t] = True, float(label)
    return tokens, mask, where, labels


def train_verifier(policy, prompts: list[str], responses: list[str], process: bool, steps: int = 300,
                   batch_size: int = 32, lr: float = 1e-4, seed: int = 0) -> RewardModel:
    """A verifier with policy's trunk and a fresh scalar head: losses.verifier_loss (binary cross-entropy of the head's
    logit against each label of verifier_targets: outcome only, or every step and the outcome), on random batches."""
    rm = RewardModel.from_policy(policy)
    tokens, mask, where, labels = verifier_targets(prompts, responses, process)
    optimizer = make_optimizer(rm, lr)
    generator = torch.Generator().manual_seed(seed)
    rm.train()
    for step in range(steps):
        idx = torch.randint(len(prompts), (batch_size,), generator=generator)
        logits = rm.head(rm.gpt.hidden_states(tokens[idx], mask[idx]))             # (B, T)
        loss = verifier_loss(logits, where[idx], labels[idx])
        optimizer_step(rm, optimizer, loss, step=step, grad_clip=1.0, what="verifier loss")
    rm.eval()
    return rm


@torch.no_grad()
def verifier_scores(rm: RewardModel, prompts: list[str], responses: list[str], process: bool) -> torch.Tensor:
    """(N,) the log-probability the verifier gives the response of being right: log sigma at EOS for an outcome
    verifier; for a process one the sum over the steps and EOS (the product of the step probabilities, as in
    Lightman et al. 2023)."""
    tokens, mask, where, _ = verifier_targets(prompts, responses, process)
    logits = rm.head(rm.gpt.hidden_states(tokens, mask))
    return (F.logsigmoid(logits) * where).sum(1)


def auc(scores: torch.Tensor, right: torch.Tensor) -> float:
    """The chance that a right candidate outscores a wrong one (ties count half): 0.5 is a verifier that knows
    nothing, 1.0 a perfect ranking. scores (N,), right (N,) bool."""
    gt = (scores[right][:, None] > scores[~right][None, :]).float()
    eq = (scores[right][:, None] == scores[~right][None, :]).float()
    return float((gt + 0.5 * eq).mean())


def best_of_n(prompts: list[str], candidates: list[list[str]], scores: torch.Tensor, ns) -> dict:
    """Accuracy of the best of the first n candidates by score, for each n; scores (P * K,) in candidates' order."""
    K = len(candidates[0])
    table = scores.view(len(prompts), K)
    return {str(n): sum(task.verify(p, c[int(table[i, :n].argmax())]) for i, (p, c) in enumerate(zip(prompts, candidates)))
            / len(prompts) for n in ns}


def majority_and_oracle(prompts: list[str], candidates: list[list[str]], ns) -> dict:
    """Per n: maj@n (the most frequent final answer among the first n, the first one on a tie) and pass@n (any
    right: what a perfect verifier would pick)."""
    out = {"majority": {}, "oracle": {}}
    for n in ns:
        majority = oracle = 0
        for p, c in zip(prompts, candidates):
            answers = [task.final_answer(r) for r in c[:n]]
            vote = max(dict.fromkeys(answers), key=answers.count)
            majority += task.verify(p, vote)
            oracle += any(task.verify(p, r) for r in c[:n])
        out["majority"][str(n)], out["oracle"][str(n)] = majority / len(prompts), oracle / len(prompts)
    return out


def thinking_rm(quick: bool = False, temperature: float = 1.5, log=print) -> dict:
    """Process vs outcome verifiers as best-of-N rerankers. Candidates: think-sft made to think, sampled at
    `temperature` (hot, so that a quarter of them go wrong) on hard sums; the verifiers (trunk from think-sft) learn
    from 4 candidates on each of 600 training problems, the outcome one from the final answers' labels, the process
    one also from every step's label (task.check_steps); both rerank 16 candidates on 100 held-out hard problems."""
    seed_everything(0, threads=1)
    policy = zoo.load(START)
    n_train, n_test, K = (40, 10, 4) if quick else (600, 100, 16)
    ns = [n for n in (1, 2, 4, 8, 16) if n <= K]

    def candidates(prompts: list[str], k: int, seed: int) -> list[list[str]]:
        rows = sample(policy, [p + task.THINK_OPEN for p in prompts for _ in range(k)],
                      max_new_tokens=task.MAX_RESPONSE_TOKENS - 1, seed=seed, temperature=temperature)
        texts = [task.THINK_OPEN + s.response for s in rows]
        return [texts[i * k:(i + 1) * k] for i in range(len(prompts))]

    train_prompts, test_prompts = task.prompts(n_train, seed=20, digits=4), task.prompts(n_test, seed=4, digits=4)
    train = candidates(train_prompts, 4, seed=20)
    flat_p = [p for p, c in zip(train_prompts, train) for _ in c]
    flat_r = [r for c in train for r in c]
    test = candidates(test_prompts, K, seed=21)
    test_p = [p for p, c in zip(test_prompts, test) for _ in c]
    test_r = [r for c in test for r in c]
    out = {"command": "python -m minirlhf experiments thinking-rm" + " --quick" * quick, "temperature": temperature,
           "train_candidates": len(flat_r), "test_problems": n_test, "candidates_per_problem": K,
           "train_right": sum(task.verify(p, r) for p, r in zip(flat_p, flat_r)) / len(flat_r),
           "train_right_wrong_step": sum(task.verify(p, r) and not task.steps_right(p, r)
                                         for p, r in zip(flat_p, flat_r)) / len(flat_r),
           **majority_and_oracle(test_prompts, test, ns)}
    for name, process in (("outcome", False), ("process", True)):
        rm = train_verifier(policy, flat_p, flat_r, process, steps=20 if quick else 300)
        scores = verifier_scores(rm, test_p, test_r, process)
        out[name] = best_of_n(test_prompts, test, scores, ns)
        out[f"{name}_auc"] = auc(scores, torch.tensor([task.verify(p, r) for p, r in zip(test_p, test_r)]))
        picked = [c[int(s.argmax())] for c, s in zip(test, scores.view(n_test, K))]
        right = [(p, r) for p, r in zip(test_prompts, picked) if task.verify(p, r)]
        out[f"{name}_picked_right_wrong_step"] = sum(not task.steps_right(p, r) for p, r in right) / max(1, len(right))
        log(f"{name} verifier: AUC {out[f'{name}_auc']:.3f}, best-of-{K} accuracy {out[name][str(K)]:.3f}")
    return round_floats(out)
