"""Experiments too slow for a notebook cell: run them here, ship their results in data/results, plot them there.

    python -m minirlhf.experiments rm-sweep           # accuracy vs number of pairs and vs RM size (~10 min)
    python -m minirlhf.experiments rm-sweep --quick   # a 1-minute smoke run, written to a temp file
    python -m minirlhf.experiments ppo-beta           # PPO with 3 KL coefficients (~10 min)

Each result file records the command, the settings and every measured number, so a notebook can plot it
and a reader can re-run it (same machine and thread count -> the same numbers).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from . import zoo
from .model import GPT, GPTConfig
from .preferences import DEFAULT_TEMPERATURE
from .reward import RewardModel, evaluate_reward_model, train_reward_model
from .utils import DATA_DIR, seed_everything

RESULTS_DIR = DATA_DIR / "results"


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
    return {"command": "python -m minirlhf.experiments rm-sweep" + " --quick" * quick,
            "test_pairs": len(test), "temperature": DEFAULT_TEMPERATURE, **results}


def ppo_beta(betas=(0.03, 0.1, 1.0), quick: bool = False, log=print) -> dict:
    """PPO runs from the SFT policy that differ only in the KL coefficient beta (fixed, not adaptive);
    their per-iteration histories (rl_history_for_meta) for notebook 10's beta slider."""
    from .ppo import PPOConfig, rl_history_for_meta, train_ppo
    from .tasks import reviews

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
    return {"command": "python -m minirlhf.experiments ppo-beta" + " --quick" * quick, "runs": runs}


def load_results(name: str) -> dict:
    """A shipped result file, e.g. load_results("rm_sweep")."""
    path = RESULTS_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results at {path}: run `python -m minirlhf.experiments {name.replace('_', '-')}`")
    return json.loads(path.read_text())


EXPERIMENTS = {"rm-sweep": rm_sweep, "ppo-beta": ppo_beta}


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minirlhf.experiments", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(EXPERIMENTS))
    parser.add_argument("--quick", action="store_true", help="a short smoke run, written to a temp dir")
    args = parser.parse_args(argv)
    results = EXPERIMENTS[args.name](quick=args.quick)
    out_dir = Path(tempfile.mkdtemp()) if args.quick else RESULTS_DIR
    path = out_dir / f"{args.name.replace('-', '_')}.json"
    zoo.atomic_write_bytes(path, (json.dumps(results, indent=1) + "\n").encode())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
