"""The zoo's recipes: how every shipped checkpoint and data file is made, and the `zoo` command.

A recipe declares everything it is built from: its `parent` (the model it starts from) and every other
entry it `needs` (a reference model, a reward model, preference pairs). `build` resolves them in order
inside the target folder, so a parent rebuilt there is what its children are built from. Adding a zoo
entry is one Recipe here (and its line in the manifest, which `build` writes).

    python -m minirlhf zoo list
    python -m minirlhf zoo build [NAME ...]          # rebuild and overwrite (all by default)
    python -m minirlhf zoo build --check [NAME ...]  # rebuild in a temp dir, compare with the shipped files
    python -m minirlhf zoo verify                    # check every shipped file against the manifest

Deterministic on the same machine and thread count.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from .. import capstone, judge as judges, ratings as user_ratings
from ..dpo import DPOConfig, train_dpo
from ..evaluate import arithmetic_accuracy
from ..grpo import GRPOConfig, train_grpo
from ..calculator import tool_output
from ..model import GPT, GPTConfig, extend_context
from ..ppo import PPOConfig, train_ppo
from ..preferences import DEFAULT_TEMPERATURE
from ..reward import RewardModel, encode_responses, evaluate_reward_model, normalize_, train_reward_model
from ..rl import rl_history_for_meta
from ..sampling import sample_preference_pairs
from ..tasks import arithmetic, long_arithmetic, reviews, support, tool_arithmetic
from ..tokenizer import TOKENIZER
from ..train import pretrain, sft
from ..utils import DEFAULT_THREADS, seed_everything
from ..zoo import (ZOO_DIR, CheckpointError, atomic_write_bytes, load_entry, read_manifest, save_checkpoint,
                   save_pairs, write_manifest)

KINDS = ("gpt", "reward", "pairs")


@dataclass(frozen=True)
class Recipe:
    """How a zoo entry is made.

    kind "gpt": a GPT with `config`, a copy of `parent` if there is one; "reward": a RewardModel whose
    trunk starts as a copy of `parent`; "pairs": labelled preference pairs sampled from `parent`.
    train(model, inputs, **overrides) trains the model in place and returns its history ("pairs": returns
    the pairs {split: [dicts]}); inputs maps each name in `needs` to that entry (a model or pairs).
    """
    name: str
    description: str
    config: dict
    train: Callable[..., dict]
    kind: str = "gpt"
    parent: str | None = None
    needs: tuple[str, ...] = ()
    seed: int = 0
    threads: int = DEFAULT_THREADS     # torch's thread count while building: a rebuild must use the same

    @property
    def depends_on(self) -> tuple[str, ...]:
        """Every entry this one is built from, the parent first."""
        return tuple(dict.fromkeys(((self.parent,) if self.parent else ()) + self.needs))


def _pretrain_reviews(model, inputs, steps=1500, lr=3e-3, n_texts=20000):
    return pretrain(model, reviews.pretraining_corpus(n_texts, seed=0), steps=steps, lr=lr, seed=0)


def _sft_reviews(model, inputs, steps=300, lr=1e-3, n_pairs=4000):
    return sft(model, reviews.sft_dataset(n_pairs, seed=1), steps=steps, lr=lr, seed=1, warmup=20)


def _pretrain_arithmetic(model, inputs, steps=2000, lr=3e-3, n_texts=20000):
    return pretrain(model, arithmetic.pretraining_corpus(n_texts, seed=0), steps=steps, lr=lr, seed=0)


def _sft_arithmetic(model, inputs, steps=300, lr=1e-3, n_pairs=4000):
    return sft(model, arithmetic.sft_dataset(n_pairs, seed=1), steps=steps, lr=lr, seed=1, warmup=20)


def _sft_arithmetic_short(model, inputs, steps=80):
    """SFT stopped early (80 of arithmetic-sft's 300 steps): the format is learned, the answers are unreliable
    (about 46% right at temperature 1 against 75% after 300 steps). Where RL from the verifier has something to
    gain in notebook 15; arithmetic-sft leaves it almost nothing it can reach (experiments `rlvr`)."""
    return _sft_arithmetic(model, inputs, steps=steps)


def _sft_tool_arithmetic(model, inputs, steps=1500, lr=3e-3, n_pairs=20000):
    """SFT on demonstrations that call the calculator on every product and a tenth of the sums; the tool's
    output is read, not learned. Learning to copy the expression into the call is what takes the 1,500
    steps at lr 3e-3 (after 400 most calls still had a wrong digit)."""
    return sft(model, tool_arithmetic.sft_dataset(n_pairs, seed=2), steps=steps, lr=lr, seed=2, warmup=20,
               tool_output=True)


def _sft_think_base(model, inputs, steps=3000, lr=3e-3, n_pairs=50000):
    """Long sums answered both ways, half of them worked out column by column: the skill of thinking, learned as a
    base model learns it from worked examples in its pretraining text. SFT's loss (the answer only) at batch 64."""
    return sft(model, long_arithmetic.sft_dataset(n_pairs, seed=1, think_share=0.5), steps=steps, lr=lr, seed=1,
               batch_size=64, warmup=50)


def _sft_think(model, inputs, steps=200, lr=1e-3, n_pairs=20000):
    """think-base fine-tuned on demonstrations of which 15% think (long_arithmetic.THINK_SHARE), whatever the size:
    the habit of answering directly, which RL must learn to break where it does not pay."""
    return sft(model, long_arithmetic.sft_dataset(n_pairs, seed=2), steps=steps, lr=lr, seed=2, batch_size=64,
               warmup=20)


# Notebook 19's GRPO: the samples per step shared with its baselines (course.thinking); the token mean ("dapo"):
# every token weighs the same whatever the length of its response, so a rise in length is not an artefact of the
# aggregation (the per-sequence mean "grpo" pushes wrong answers longer, notebook 15).
THINK_SAMPLING = dict(prompts_per_step=16, num_generations=8, max_completion_length=long_arithmetic.MAX_RESPONSE_TOKENS)
# lr 1e-4: the `thinking` experiment's choice of (1e-4, 3e-4) on validation problems.
THINK_GRPO = dict(loss_type="dapo", scale_rewards="group", lr=1e-4, steps=60)


def _grpo_think(policy, inputs, **overrides):
    """GRPO from think-sft on long_arithmetic's exact outcome-only verifier (THINK_GRPO, seed 0)."""
    config = GRPOConfig(**{**THINK_SAMPLING, **THINK_GRPO, "seed": 0, **overrides})
    _, history = train_grpo(policy, long_arithmetic.prompts, long_arithmetic.reward, config)
    return history


def _sample_reviews_pairs(policy, inputs, n_train=4000, n_test=1000, temperature=DEFAULT_TEMPERATURE):
    """Two SFT samples per prompt, labelled by the simulated human; the test prompts are a separate draw."""
    return {"train": sample_preference_pairs(policy, reviews.prompts(n_train, seed=10), reviews.gold_reward,
                                             temperature, seed=10),
            "test": sample_preference_pairs(policy, reviews.prompts(n_test, seed=11), reviews.gold_reward,
                                            temperature, seed=11)}


def _train_reviews_rm(rm, inputs, steps=250, lr=3e-4, n_pairs=4000, batch_size=32):
    """Bradley-Terry on the first n_pairs training pairs (2 epochs at the defaults), then normalised to
    mean 0 / std 1 on SFT samples (the responses of 1000 training pairs)."""
    pairs = inputs["reviews-pairs"]
    history = train_reward_model(rm, pairs["train"][:n_pairs], steps=steps, lr=lr, batch_size=batch_size)
    reference = [(p["prompt"], p[side]) for p in pairs["train"][:1000] for side in ("chosen", "rejected")]
    normalize_(rm, *encode_responses(*map(list, zip(*reference))))
    history["test"] = evaluate_reward_model(rm, pairs["test"], DEFAULT_TEMPERATURE)
    return history


def _ppo_reviews(policy, inputs, **overrides):
    """PPO from the SFT policy against reviews-rm (PPOConfig's defaults), gold reward tracked, never trained on."""
    _, history = train_ppo(policy, inputs["reviews-sft"], inputs["reviews-rm"], reviews.prompts,
                           PPOConfig(**overrides), gold_fn=reviews.gold_reward)
    return history


# GRPO on the exact verifier from arithmetic-sft-short (notebook 15): lr 2e-4 is what the rlvr experiment's sweep
# chose for GRPO on validation sums (5e-5, 1e-4, 2e-4, 4e-4 tried); 300 steps as there.
GRPO_ARITHMETIC = dict(steps=300, prompts_per_step=16, num_generations=8, lr=2e-4, loss_type="grpo",
                       scale_rewards="group", seed=0)


# Tool use (notebook 16): every sampled answer is kept in history["samples"] (n_samples = 16 * 8) so that the
# call rate can be split by kind of problem. lr 3e-4 with the token-mean loss: with the per-sequence mean
# ("grpo") a call's ~19 own tokens share one answer's weight, and at lr 1e-4 the call rate on sums barely moved.
TOOL_GRPO = dict(steps=80, prompts_per_step=16, num_generations=8, max_completion_length=26, lr=3e-4,
                 loss_type="dapo", scale_rewards="group", seed=0, n_samples=128)
TOOL_CALL_COST = 0.05


def tool_grpo(policy, call_cost: float = TOOL_CALL_COST, mask_tool_output: bool = True, **overrides):
    """GRPO with the calculator on tool_arithmetic prompts, reward correct - call_cost * calls; a right answer
    with one call counts as a success. Returns (policy, history)."""
    config = GRPOConfig(**{**TOOL_GRPO, "success_reward": 1.0 - call_cost, **overrides})
    return train_grpo(policy, tool_arithmetic.prompts, tool_arithmetic.make_reward(call_cost), config,
                      tool=tool_output, mask_tool_output=mask_tool_output)


def _tool_grpo_arithmetic(policy, inputs, **overrides):
    """tool_grpo at c = TOOL_CALL_COST; the history without its per-sample records."""
    _, history = tool_grpo(policy, **overrides)
    return {k: v for k, v in history.items() if k != "samples"}


def _grpo_arithmetic(policy, inputs, **overrides):
    """GRPO from arithmetic-sft-short on the exact verifier (arithmetic.reward), greedy accuracy on 500 held-out
    problems (arithmetic.prompts(500, seed=4)) every 50 steps."""
    held_out = arithmetic.prompts(500, seed=4)
    _, history = train_grpo(policy, arithmetic.prompts, arithmetic.reward, GRPOConfig(**{**GRPO_ARITHMETIC, **overrides}),
                            eval_fn=lambda m: arithmetic_accuracy(m, held_out), eval_every=50)
    return history


def _dpo_reviews(policy, inputs, eval_prompts=128, **overrides):
    """DPO from the SFT policy on the 4000 reviews-pairs (DPOConfig's defaults: one epoch, beta 0.1), its
    gold reward and KL measured every 25 steps on held-out prompts (gold never trained on)."""
    config = DPOConfig(**{"eval_every": 25, **overrides})
    return train_dpo(policy, inputs["reviews-pairs"]["train"], config, gold_fn=reviews.gold_reward,
                     eval_prompts=reviews.prompts(eval_prompts, seed=50) if config.eval_every else None)


def _train_reviews_judge(judge, inputs, steps=1200, lr=3e-4, n_pool=6000, n_test=400, max_new_tokens=80,
                         informative=True, balanced=True, eval_every=200):
    """The AI judge: reviews-base with its position table stretched (judge.init_judge), fine-tuned on human
    comparisons of pairs of reviews-sft samples (some hot, see judge.sample_comparison_pool), each under one
    principle of the shipped constitution on which the pair differs, the rarer differences asked about more
    often (balanced). The last n_test comparisons are held out: judge.judge_report on them every eval_every
    steps (history "eval") and at the end (history "test")."""
    judge.load_state_dict(judges.init_judge(inputs["reviews-base"], judge.config.context_length).state_dict())
    pool = judges.sample_comparison_pool(inputs["reviews-sft"], reviews.prompts(n_pool, seed=20), seed=20,
                                         max_new_tokens=max_new_tokens)
    comparisons = judges.human_comparisons(pool, judges.read_constitution(), seed=21, informative=informative,
                                           balanced=balanced)
    train, test = comparisons[:-n_test], comparisons[-n_test:]
    history = judges.train_judge(judge, train, steps=steps, lr=lr, seed=22, warmup=30, eval_every=eval_every,
                                 eval_fn=lambda model: judges.judge_report(model, test))
    history["test"] = {**history["eval"][-1][1], "train_comparisons": len(train)}
    return history


def _sft_support(model, inputs, steps=600, lr=1e-3, n_pairs=2000):
    """SFT on a small set of expert demonstrations (2,000; about ten epochs)."""
    return sft(model, support.sft_dataset(n_pairs, seed=1), steps=steps, lr=lr, seed=1, warmup=20)


def _support_ratings(policy, inputs, n_train=1000, n_heldout=250, tickets_per_user=6, replies_per_ticket=3):
    """Stars from simulated users (ratings.make_users) on support-sft's replies: each user brings
    tickets_per_user tickets and rates replies_per_ticket replies to each. The held-out users are other people
    with other tickets (ids from 100,000)."""
    train = user_ratings.make_users(n_train, seed=20)
    heldout = user_ratings.make_users(n_heldout, seed=21, first_id=100_000)
    kw = dict(tickets_per_user=tickets_per_user, replies_per_ticket=replies_per_ticket)
    return {"train": capstone.collect_ratings(policy, train, seed=20, **kw),
            "heldout": capstone.collect_ratings(policy, heldout, seed=21, **kw)}


SUPPORT_LEARNER = "within-user pairs (BT)"


def _train_support_rm(rm, inputs, steps=300, lr=3e-4):
    """The capstone's reward model: the SUPPORT_LEARNER way of learning from the users' stars (the winner of the
    `capstone` experiment's comparison), normalised on the rated replies."""
    learned, history = capstone.train_learner(SUPPORT_LEARNER, inputs["support-sft"], inputs["support-ratings"]["train"],
                                              steps=steps, lr=lr)
    rm.load_state_dict(learned.state_dict())
    return history


SUPPORT_PPO = dict(iterations=120, batch_size=32, max_new_tokens=capstone.MAX_NEW_TOKENS, beta=0.1)
# Far above the reward model's liking for a forbidden promise (1.6 on refunds above the limit); the `capstone`
# experiment also runs a penalty of 2 and beta 0.05.
SUPPORT_PENALTY = 5.0


def _ppo_support(policy, inputs, penalty=SUPPORT_PENALTY, **overrides):
    """PPO from support-sft against support-rm minus `penalty` where the policy check fires (capstone.ComplianceReward),
    the gold judge tracked, never trained on."""
    reward = capstone.ComplianceReward(inputs["support-rm"], penalty) if penalty else inputs["support-rm"]
    config = PPOConfig(**{**SUPPORT_PPO, **overrides})
    _, history = train_ppo(policy, inputs["support-sft"], reward, support.prompts,
                           PPOConfig(**{**asdict(config), "n_samples": config.batch_size}), gold_fn=support.gold_reward)
    history["violations"] = capstone.violation_curve(history)     # from every sample; then keep 3 per iteration
    history["samples"] = [batch[:config.n_samples] for batch in history["samples"]]
    return history


REVIEWS_CONFIG = dict(vocab_size=TOKENIZER.vocab_size, context_length=160, d_model=128, n_layers=4, n_heads=4)
ARITHMETIC_CONFIG = dict(vocab_size=TOKENIZER.vocab_size, context_length=32, d_model=96, n_layers=3, n_heads=4)
# A call and its output make responses up to 24 tokens (with EOS) after a 13-token prompt: past 32 positions.
TOOL_CONFIG = {**ARITHMETIC_CONFIG, "context_length": 64}
# Notebook 19's entries are built with one thread (they were made on a shared machine): `--check` uses it too.
# A 4-digit sum's prompt (17 tokens with BOS) and its longest scratchpad (42 with EOS) fit in 64.
THINK_CONFIG = dict(vocab_size=TOKENIZER.vocab_size, context_length=64, d_model=64, n_layers=3, n_heads=4)
# A support prompt and reply reach 163 tokens: reviews-base's 160 positions, stretched.
SUPPORT_CONFIG = {**REVIEWS_CONFIG, "context_length": 192}

RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("reviews-base", "tiny GPT pretrained on mixed-sentiment reviews", REVIEWS_CONFIG, _pretrain_reviews),
    Recipe("reviews-sft", "reviews-base fine-tuned to answer 'review: <noun>' prompts", REVIEWS_CONFIG,
           _sft_reviews, parent="reviews-base", seed=1),
    Recipe("reviews-pairs", "4000 train + 1000 test pairs of reviews-sft samples labelled by the noisy gold human",
           REVIEWS_CONFIG, _sample_reviews_pairs, kind="pairs", parent="reviews-sft", seed=10),
    Recipe("reviews-rm", "Bradley-Terry reward model: reviews-sft trunk, trained on the 4000 reviews-pairs",
           REVIEWS_CONFIG, _train_reviews_rm, kind="reward", parent="reviews-sft", needs=("reviews-pairs",)),
    Recipe("reviews-ppo", "reviews-sft fine-tuned with PPO against reviews-rm (ppo.PPOConfig defaults)",
           REVIEWS_CONFIG, _ppo_reviews, parent="reviews-sft", needs=("reviews-sft", "reviews-rm")),
    Recipe("reviews-dpo", "reviews-sft fine-tuned with DPO on the 4000 reviews-pairs (dpo.DPOConfig defaults)",
           REVIEWS_CONFIG, _dpo_reviews, parent="reviews-sft", needs=("reviews-pairs",)),
    Recipe("reviews-judge", "AI judge: reviews-base (context stretched) fine-tuned on per-principle human comparisons",
           {**REVIEWS_CONFIG, "context_length": judges.JUDGE_CONTEXT}, _train_reviews_judge,
           needs=("reviews-base", "reviews-sft"), seed=22),
    Recipe("arithmetic-base", "tiny GPT pretrained on sums with careless carries", ARITHMETIC_CONFIG, _pretrain_arithmetic),
    Recipe("arithmetic-sft", "arithmetic-base fine-tuned to answer 'q: a+b' prompts", ARITHMETIC_CONFIG,
           _sft_arithmetic, parent="arithmetic-base", seed=1),
    Recipe("arithmetic-sft-short", "arithmetic-base fine-tuned for 80 steps only (arithmetic-sft's recipe stopped "
           "early): the format learned, the answers unreliable", ARITHMETIC_CONFIG, _sft_arithmetic_short,
           parent="arithmetic-base", seed=1),
    Recipe("arithmetic-tool-sft", "arithmetic-sft, its context extended to 64, fine-tuned to call a calculator "
           "on 'q: a*b' (and a tenth of the 'q: a+b') prompts", TOOL_CONFIG, _sft_tool_arithmetic,
           parent="arithmetic-sft", seed=2),
    Recipe("arithmetic-grpo", "arithmetic-sft-short fine-tuned with GRPO on the exact verifier (recipes.GRPO_ARITHMETIC)",
           ARITHMETIC_CONFIG, _grpo_arithmetic, parent="arithmetic-sft-short"),
    Recipe("arithmetic-tool-grpo", "arithmetic-tool-sft fine-tuned with GRPO and the calculator, reward correct - "
           "0.05 * calls, the tool's output masked (recipes.TOOL_GRPO)", TOOL_CONFIG, _tool_grpo_arithmetic,
           parent="arithmetic-tool-sft"),
    Recipe("think-base", "tiny GPT trained on long sums (1-4 digits) answered both ways, half of them worked out "
           "column by column", THINK_CONFIG, _sft_think_base, seed=1, threads=1),
    Recipe("think-sft", "think-base fine-tuned on demonstrations of which 15% think out loud: the starting policy of "
           "notebook 19", THINK_CONFIG, _sft_think, parent="think-base", seed=2, threads=1),
    Recipe("think-grpo", "think-sft fine-tuned with GRPO on the exact outcome-only verifier (course.thinking.GRPO)",
           THINK_CONFIG, _grpo_think, parent="think-sft", threads=1),
    Recipe("support-sft", "reviews-base, its context extended to 192, fine-tuned on 2,000 customer-service expert "
           "demonstrations", SUPPORT_CONFIG, _sft_support, parent="reviews-base", seed=1),
    Recipe("support-ratings", "1-5 stars from simulated users on support-sft's replies (1,000 training users, 250 "
           "held-out users, 6 tickets each, 3 replies per ticket)", SUPPORT_CONFIG, _support_ratings, kind="pairs",
           parent="support-sft", seed=20),
    Recipe("support-rm", "reward model from the support-ratings' training users (recipes.SUPPORT_LEARNER)",
           SUPPORT_CONFIG, _train_support_rm, kind="reward", parent="support-sft",
           needs=("support-sft", "support-ratings")),
    Recipe("support-ppo", "support-sft fine-tuned with PPO against support-rm with the policy check "
           "(capstone.ComplianceReward, recipes.SUPPORT_PPO)", SUPPORT_CONFIG, _ppo_support, parent="support-sft",
           needs=("support-sft", "support-rm")),
]}


def check_recipes(recipes: dict[str, Recipe]) -> None:
    """Every recipe's kind is known and everything it depends on is a recipe listed BEFORE it."""
    seen: set[str] = set()
    for name, r in recipes.items():
        if r.kind not in KINDS:
            raise ValueError(f"recipe {name}: kind must be one of {KINDS}, got {r.kind!r}")
        if r.kind in ("reward", "pairs") and r.parent is None:
            raise ValueError(f"recipe {name}: a {r.kind} recipe needs a parent policy")
        late = [d for d in r.depends_on if d not in seen]
        if late:
            raise ValueError(f"recipe {name} is built from {late}, which must be recipes listed before it")
        seen.add(name)


check_recipes(RECIPES)


def recipe(name: str, recipes: dict[str, Recipe] = RECIPES) -> Recipe:
    if name not in recipes:
        raise KeyError(f"no zoo recipe named {name!r}; the zoo has: {', '.join(recipes)}")
    return recipes[name]


def run_recipe(name: str, inputs: dict | None = None, recipes: dict[str, Recipe] = RECIPES,
               **overrides) -> tuple[torch.nn.Module | dict, dict]:
    """Make the entry of recipe `name` from what it is built from; returns (model, history).

    inputs: {name: model or pairs} for each entry in the recipe's depends_on; any left out are loaded
    from the shipped zoo. A "pairs" recipe returns ({split: [pair dicts]}, {}) instead. overrides change
    the training function's keyword arguments (e.g. steps=100 for a quick demo); the zoo is built with
    the defaults.
    """
    r = recipe(name, recipes)
    inputs = dict(inputs or {})
    for dep in r.depends_on:
        if dep not in inputs:
            inputs[dep] = load_entry(dep)
    parent = inputs.get(r.parent)
    seed_everything(r.seed, threads=r.threads)   # after loading: building a model draws random numbers (its init)
    if r.kind == "pairs":
        return r.train(parent, inputs, **overrides), {}
    if r.kind == "reward":
        model = RewardModel.from_policy(parent)
    elif parent is not None:
        model = GPT(GPTConfig.from_dict(parent.config.to_dict()))
        model.load_state_dict(parent.state_dict())
        if r.config["context_length"] > model.config.context_length:   # new positions, to be trained
            model = extend_context(model, r.config["context_length"])
    else:
        model = GPT(GPTConfig(**r.config))
    return model, r.train(model, inputs, **overrides)


def _rounded(value):
    """Floats rounded to 4 places, in nested dicts and lists too."""
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return round(value, 4) if isinstance(value, float) else value


def _save(name: str, r: Recipe, model, history: dict, zoo_dir: Path, seconds: float) -> tuple[dict, str]:
    """Write one built entry to zoo_dir; returns (its manifest entry, a one-line summary)."""
    entry = {"kind": r.kind, "parent": r.parent, "needs": list(r.depends_on), "description": r.description,
             "build_seconds": round(seconds)}
    if r.kind == "pairs":
        entry["file"] = f"{name}.json.gz"
        entry["sha256"] = save_pairs(Path(zoo_dir) / entry["file"], model, name=name)
        entry["sizes"] = {split: len(rows) for split, rows in model.items()}
        return entry, ", ".join(f"{len(rows)} {split}" for split, rows in model.items()) + " pairs"
    entry.update(file=f"{name}.pt", config=r.config)
    if "loss" not in history or "config" in history:   # an RL run: per-iteration metrics instead of a loss curve
        meta = {"history": rl_history_for_meta(history) | {k: history[k] for k in ("eval", "eval_samples_seen")
                                                            if k in history}}
        final = {k: round(sum(v[-5:]) / len(v[-5:]), 4) for k, v in meta["history"].items()
                 if k in ("proxy_reward", "gold", "kl", "response_length", "reward", "frac_reward_zero_std")}
        if "eval" in history:
            final["eval"] = round(history["eval"][-1], 4)
        entry["final"] = final
        summary = ", ".join(f"{k} {v:.3f}" for k, v in final.items()) + " (last 5 iterations)"
    else:
        final_loss = round(sum(history["loss"][-20:]) / len(history["loss"][-20:]), 4)
        meta = {"final_loss": final_loss, "loss_curve": [round(x, 4) for x in history["loss"]]}
        meta.update({k: [round(float(x), 4) for x in v] for k, v in history.items() if "/" in k})  # DPO's TRL metrics
        entry["final_loss"] = final_loss
        if history.get("eval"):   # held-out metrics along the run (the judge's)
            meta["eval"] = [[step, _rounded(metrics)] for step, metrics in history["eval"]]
        if "test" in history:   # held-out metrics of a reward model or the judge
            meta["test"] = entry["test"] = _rounded(history["test"])
        summary = f"loss {final_loss:.4f}"
    entry["sha256"] = save_checkpoint(Path(zoo_dir) / entry["file"], model, name=name, kind=r.kind, meta=meta)
    return entry, summary


def build(names: list[str] | None = None, zoo_dir: Path = ZOO_DIR, recipes: dict[str, Recipe] = RECIPES,
          log=lambda line: print(line, flush=True)) -> dict:
    """Run the recipes `names` (all by default) in dependency order and write their files and manifest
    entries to zoo_dir. What a recipe is built from comes from this build if it is rebuilt here, else
    from zoo_dir: never from another folder. Returns the manifest."""
    names = list(names or recipes)
    for n in names:
        recipe(n, recipes)
    manifest = read_manifest(zoo_dir)
    made: dict[str, torch.nn.Module | dict] = {}
    for name in [n for n in recipes if n in names]:
        r = recipes[name]
        inputs = {dep: made[dep] if dep in made else load_entry(dep, zoo_dir) for dep in r.depends_on}
        start = time.perf_counter()
        model, history = run_recipe(name, inputs, recipes)
        seconds = time.perf_counter() - start
        manifest[name], summary = _save(name, r, model, history, zoo_dir, seconds)
        write_manifest(manifest, zoo_dir)
        made[name] = model
        log(f"{name}: {summary}, {seconds:.0f} s -> {Path(zoo_dir) / manifest[name]['file']}")
    return manifest


def check_build(names: list[str] | None = None, zoo_dir: Path = ZOO_DIR, recipes: dict[str, Recipe] = RECIPES,
                log=lambda line: print(line, flush=True)) -> dict[str, bool]:
    """Rebuild `names` in a temporary copy of zoo_dir; {name: True if the rebuilt file is byte-identical}."""
    manifest = read_manifest(zoo_dir)
    with tempfile.TemporaryDirectory() as tmp:
        write_manifest(manifest, Path(tmp))
        for entry in manifest.values():      # what is not rebuilt comes from the shipped files
            src = Path(zoo_dir) / entry["file"]
            if src.is_file():
                atomic_write_bytes(Path(tmp) / entry["file"], src.read_bytes())
        rebuilt = build(names, zoo_dir=Path(tmp), recipes=recipes, log=log)
    return {n: manifest.get(n, {}).get("sha256") == rebuilt[n]["sha256"] for n in (names or list(recipes))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minirlhf zoo", description="List, build and verify the checkpoint zoo.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="show the recipes and what is shipped")
    b = sub.add_parser("build", help="rebuild entries with their recipes (and what they are built from, in order)")
    b.add_argument("names", nargs="*", help=f"which (default: all): {', '.join(RECIPES)}")
    b.add_argument("--check", action="store_true", help="build into a temp dir and compare with the shipped files")
    sub.add_parser("verify", help="check every shipped file against the manifest")
    args = parser.parse_args(argv)

    manifest = read_manifest()
    if args.command == "list":
        for name, r in RECIPES.items():
            shipped = "shipped" if name in manifest else "not built"
            built_from = f" (from {', '.join(r.depends_on)})" if r.depends_on else ""
            print(f"{name:18s} {shipped:9s} {r.description}{built_from}")
        return 0
    if args.command == "verify":
        bad = 0
        for name in RECIPES:
            try:
                load_entry(name)
                print(f"{name}: ok")
            except CheckpointError as e:
                bad += 1
                print(f"{name}: {e}")
        return 1 if bad else 0
    if args.check:
        same = check_build(args.names)
        for n, ok in same.items():
            print(f"{n}: {'identical to the shipped file' if ok else 'DIFFERS from the shipped file'}")
        return 0 if all(same.values()) else 1
    build(args.names)
    return 0
