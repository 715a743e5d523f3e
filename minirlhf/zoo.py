"""The checkpoint zoo: small models made by the package's own recipes, shipped in data/zoo.

A later notebook can start from, say, the SFT model without re-training it. Every checkpoint is
- written atomically (a temporary file, fsync, then a rename: a crash never leaves half a file),
- listed in data/zoo/MANIFEST.json with its sha256 and the recipe that made it,
- verified on load (sha256, format, config) and loaded with torch.load(weights_only=True).

Rebuild from the command line (deterministic on the same machine and thread count):

    python -m minirlhf.zoo list
    python -m minirlhf.zoo build [NAME ...]      # rebuild and overwrite (all by default)
    python -m minirlhf.zoo build --check [NAME ...]  # rebuild in a temp dir, compare with the shipped files
    python -m minirlhf.zoo verify                # check every shipped file against the manifest
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .model import GPT, GPTConfig
from .ppo import PPOConfig, rl_history_for_meta, train_ppo
from .preferences import DEFAULT_TEMPERATURE, sample_preference_pairs
from .reward import RewardModel, encode_responses, evaluate_reward_model, normalize_, train_reward_model
from .tasks import arithmetic, reviews
from .tokenizer import TOKENIZER
from .train import pretrain, sft
from .utils import DATA_DIR, seed_everything

ZOO_DIR = DATA_DIR / "zoo"
MANIFEST = "MANIFEST.json"
FORMAT = "minirlhf-checkpoint/1"
PAIRS_FORMAT = "minirlhf-pairs/1"
MODEL_KINDS: dict[str, Callable[[GPTConfig], torch.nn.Module]] = {"gpt": GPT, "reward": RewardModel}


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or does not match what was asked for."""


# ---------------------------------------------------------------- files
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write data to path so that readers see the old file or the whole new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a shipped file should be readable like any other
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: Path, model: torch.nn.Module, *, name: str, kind: str = "gpt", meta: dict | None = None) -> str:
    """Save model weights + config atomically; returns the file's sha256."""
    payload = {"format": FORMAT, "name": name, "kind": kind, "config": model.config.to_dict(),
               "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
               "meta": meta or {}}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return sha256_file(Path(path))


def load_checkpoint(path: Path, expected_sha256: str | None = None) -> tuple[torch.nn.Module, dict]:
    """Load (model in eval mode, meta) from a file written by save_checkpoint, verifying it first."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}. Build it with: python -m minirlhf.zoo build {path.stem}")
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise CheckpointError(
            f"{path} does not match its sha256 in the manifest: the file is corrupt or was changed by hand. "
            f"Restore it with `git checkout -- {path.name}` (from data/zoo) or rebuild it with "
            f"`python -m minirlhf.zoo build {path.stem}`.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable checkpoint ({e.__class__.__name__}: {e}). "
                              f"Rebuild it with `python -m minirlhf.zoo build {path.stem}`.") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a minirlhf checkpoint of format {FORMAT!r}.")
    kind = payload.get("kind")
    if kind not in MODEL_KINDS:
        raise CheckpointError(f"{path} holds a model of kind {kind!r}; this version knows {sorted(MODEL_KINDS)}.")
    model = MODEL_KINDS[kind](GPTConfig.from_dict(payload["config"]))
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit its own config: missing {missing[:4]}, unexpected "
                              f"{unexpected[:4]}. It was made by another version; rebuild it.")
    model.eval()
    return model, payload.get("meta", {})


def save_pairs(path: Path, splits: dict[str, list[dict]], *, name: str) -> str:
    """Save labelled preference pairs {split: [pair dicts]} as gzipped JSON, atomically; returns the sha256.
    gzip's timestamp is fixed so the same pairs always give the same bytes."""
    data = json.dumps({"format": PAIRS_FORMAT, "name": name, "splits": splits}, sort_keys=True).encode()
    atomic_write_bytes(Path(path), gzip.compress(data, mtime=0))
    return sha256_file(Path(path))


def load_pairs_file(path: Path, expected_sha256: str | None = None) -> dict[str, list[dict]]:
    """{split: [pair dicts]} from a file written by save_pairs, verified against its sha256."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no preference data at {path}. Build it with: python -m minirlhf.zoo build {path.name.split('.')[0]}")
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise CheckpointError(f"{path} does not match its sha256 in the manifest: restore it with git or rebuild it.")
    try:
        payload = json.loads(gzip.decompress(path.read_bytes()))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not readable gzipped JSON ({e}); restore it with git or rebuild it.") from e
    if payload.get("format") != PAIRS_FORMAT:
        raise CheckpointError(f"{path} is not a minirlhf preference file of format {PAIRS_FORMAT!r}.")
    return payload["splits"]


def read_manifest(zoo_dir: Path = ZOO_DIR) -> dict:
    path = Path(zoo_dir) / MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON (line {e.lineno}): restore it with git or rebuild the zoo.") from e


def write_manifest(manifest: dict, zoo_dir: Path = ZOO_DIR) -> None:
    atomic_write_bytes(Path(zoo_dir) / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())


# ---------------------------------------------------------------- recipes
@dataclass(frozen=True)
class Recipe:
    """How a zoo model is made: a config, a parent to start from, and a training function."""
    name: str
    description: str
    config: dict
    train: Callable[[torch.nn.Module], dict]
    params: dict = field(default_factory=dict)
    parent: str | None = None
    seed: int = 0
    # "gpt"; "reward": a RewardModel whose trunk starts from the parent GPT, trained on the `pairs`
    # recipe's train split; "pairs": labelled preference pairs sampled from the parent policy
    kind: str = "gpt"
    pairs: str | None = None


def _pretrain_reviews(model, steps=1500, lr=3e-3, n_texts=20000):
    return pretrain(model, reviews.pretraining_corpus(n_texts, seed=0), steps=steps, lr=lr, seed=0)


def _sft_reviews(model, steps=300, lr=1e-3, n_pairs=4000):
    return sft(model, reviews.sft_dataset(n_pairs, seed=1), steps=steps, lr=lr, seed=1, warmup=20)


def _pretrain_arithmetic(model, steps=2000, lr=3e-3, n_texts=20000):
    return pretrain(model, arithmetic.pretraining_corpus(n_texts, seed=0), steps=steps, lr=lr, seed=0)


def _sft_arithmetic(model, steps=300, lr=1e-3, n_pairs=4000):
    return sft(model, arithmetic.sft_dataset(n_pairs, seed=1), steps=steps, lr=lr, seed=1, warmup=20)


def _sample_reviews_pairs(policy, n_train=4000, n_test=1000, temperature=DEFAULT_TEMPERATURE):
    """Two SFT samples per prompt, labelled by the simulated human; the test prompts are a separate draw."""
    return {"train": sample_preference_pairs(policy, reviews.prompts(n_train, seed=10), reviews.gold_reward,
                                             temperature, seed=10),
            "test": sample_preference_pairs(policy, reviews.prompts(n_test, seed=11), reviews.gold_reward,
                                            temperature, seed=11)}


def _train_reviews_rm(rm, pairs, steps=250, lr=3e-4, n_pairs=4000, batch_size=32):
    """Bradley-Terry on the first n_pairs training pairs (2 epochs at the defaults), then normalised to
    mean 0 / std 1 on SFT samples (the responses of 1000 training pairs)."""
    history = train_reward_model(rm, pairs["train"][:n_pairs], steps=steps, lr=lr, batch_size=batch_size)
    reference = [(p["prompt"], p[side]) for p in pairs["train"][:1000] for side in ("chosen", "rejected")]
    normalize_(rm, *encode_responses(*map(list, zip(*reference))))
    history["test"] = evaluate_reward_model(rm, pairs["test"], DEFAULT_TEMPERATURE)
    return history


def _ppo_reviews(policy, **overrides):
    """PPO from the SFT policy against reviews-rm (PPOConfig's defaults), gold reward tracked, never trained on."""
    _, history = train_ppo(policy, load("reviews-sft"), load("reviews-rm"), reviews.prompts, PPOConfig(**overrides),
                           gold_fn=reviews.gold_reward)
    return history


REVIEWS_CONFIG = dict(vocab_size=TOKENIZER.vocab_size, context_length=160, d_model=128, n_layers=4, n_heads=4)
ARITHMETIC_CONFIG = dict(vocab_size=TOKENIZER.vocab_size, context_length=32, d_model=96, n_layers=3, n_heads=4)

RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("reviews-base", "tiny GPT pretrained on mixed-sentiment reviews", REVIEWS_CONFIG, _pretrain_reviews),
    Recipe("reviews-sft", "reviews-base fine-tuned to answer 'review: <noun>' prompts", REVIEWS_CONFIG,
           _sft_reviews, parent="reviews-base", seed=1),
    Recipe("reviews-pairs", "4000 train + 1000 test pairs of reviews-sft samples labelled by the noisy gold human",
           REVIEWS_CONFIG, _sample_reviews_pairs, parent="reviews-sft", seed=10, kind="pairs"),
    Recipe("reviews-rm", "Bradley-Terry reward model: reviews-sft trunk, trained on the 4000 reviews-pairs",
           REVIEWS_CONFIG, _train_reviews_rm, parent="reviews-sft", kind="reward", pairs="reviews-pairs"),
    Recipe("reviews-ppo", "reviews-sft fine-tuned with PPO against reviews-rm (ppo.PPOConfig defaults)",
           REVIEWS_CONFIG, _ppo_reviews, parent="reviews-sft"),
    Recipe("arithmetic-base", "tiny GPT pretrained on sums with careless carries", ARITHMETIC_CONFIG, _pretrain_arithmetic),
    Recipe("arithmetic-sft", "arithmetic-base fine-tuned to answer 'q: a+b' prompts", ARITHMETIC_CONFIG,
           _sft_arithmetic, parent="arithmetic-base", seed=1),
]}


def _recipe_or_error(name: str) -> Recipe:
    if name not in RECIPES:
        raise KeyError(f"no zoo model named {name!r}; the zoo has: {', '.join(RECIPES)}")
    return RECIPES[name]


def run_recipe(name: str, parent: torch.nn.Module | None = None, pairs: dict | None = None,
               **overrides) -> tuple[torch.nn.Module | dict, dict]:
    """Make the model of recipe `name` from scratch (or from `parent`); returns (model, history).

    A "pairs" recipe returns ({split: [pair dicts]}, {}) instead. A "reward" recipe trains on `pairs`
    ({split: [pair dicts]}; default: its shipped pairs). overrides change the training function's
    keyword arguments (e.g. steps=100 for a quick demo); the zoo itself is built with the defaults.
    """
    recipe = _recipe_or_error(name)
    if recipe.parent is not None and parent is None:
        parent = load(recipe.parent)
    seed_everything(recipe.seed)   # after loading: building the parent draws random numbers (its init)
    if recipe.kind == "pairs":
        return recipe.train(parent, **overrides), {}
    if recipe.kind == "reward":
        model = RewardModel.from_policy(parent)
        return model, recipe.train(model, pairs if pairs is not None else load_pairs(recipe.pairs), **overrides)
    if parent is not None:
        model = GPT(GPTConfig.from_dict(parent.config.to_dict()))
        model.load_state_dict(parent.state_dict())
    else:
        model = GPT(GPTConfig(**recipe.config))
    history = recipe.train(model, **overrides)
    return model, history


def _manifest_entry(name: str, zoo_dir: Path) -> dict:
    _recipe_or_error(name)
    entry = read_manifest(zoo_dir).get(name)
    if entry is None:
        raise CheckpointError(f"{name} is not in {Path(zoo_dir) / MANIFEST}. Build it with: python -m minirlhf.zoo build {name}")
    return entry


def load(name: str, zoo_dir: Path = ZOO_DIR) -> torch.nn.Module:
    """Load a shipped zoo model by name (eval mode), verified against the manifest."""
    return load_with_meta(name, zoo_dir)[0]


def load_with_meta(name: str, zoo_dir: Path = ZOO_DIR) -> tuple[torch.nn.Module, dict]:
    """(model, meta): meta holds what the recipe recorded (final_loss, loss_curve)."""
    if _recipe_or_error(name).kind == "pairs":
        raise CheckpointError(f"{name} is preference data, not a model: use zoo.load_pairs({name!r})")
    entry = _manifest_entry(name, zoo_dir)
    return load_checkpoint(Path(zoo_dir) / entry["file"], expected_sha256=entry["sha256"])


def load_pairs(name: str = "reviews-pairs", zoo_dir: Path = ZOO_DIR) -> dict[str, list[dict]]:
    """Shipped preference pairs {split: [{prompt, chosen, rejected, gold_chosen, gold_rejected}]}."""
    entry = _manifest_entry(name, zoo_dir)
    return load_pairs_file(Path(zoo_dir) / entry["file"], expected_sha256=entry["sha256"])


def _load_any(name: str, zoo_dir: Path = ZOO_DIR):
    return load_pairs(name, zoo_dir) if RECIPES[name].kind == "pairs" else load(name, zoo_dir)


def build(names: list[str] | None = None, zoo_dir: Path = ZOO_DIR, log=lambda line: print(line, flush=True)) -> dict:
    """Run the recipes (parents first) and write their checkpoints and manifest entries to zoo_dir."""
    names = list(names or RECIPES)
    for n in names:
        _recipe_or_error(n)
    ordered = [n for n in RECIPES if n in names]
    manifest = read_manifest(zoo_dir)
    made: dict[str, torch.nn.Module | dict] = {}
    for name in ordered:
        recipe = RECIPES[name]
        parent, pairs = (made[n] if n in made else _load_any(n, zoo_dir) if n else None
                         for n in (recipe.parent, recipe.pairs))
        start = time.perf_counter()
        model, history = run_recipe(name, parent=parent, pairs=pairs)
        seconds = time.perf_counter() - start
        entry = {"parent": recipe.parent, "description": recipe.description, "build_seconds": round(seconds)}
        if recipe.kind == "pairs":
            entry["file"] = f"{name}.json.gz"
            entry["sha256"] = save_pairs(Path(zoo_dir) / entry["file"], model, name=name)
            entry["sizes"] = {split: len(rows) for split, rows in model.items()}
            summary = ", ".join(f"{len(rows)} {split}" for split, rows in model.items()) + " pairs"
        elif "loss" not in history:   # an RL run: per-iteration metrics instead of a loss curve
            meta = {"history": rl_history_for_meta(history)}
            final = {k: round(sum(v[-5:]) / len(v[-5:]), 4) for k, v in meta["history"].items()
                     if k in ("proxy_reward", "gold", "kl", "response_length")}
            entry.update(file=f"{name}.pt", config=recipe.config, final=final)
            entry["sha256"] = save_checkpoint(Path(zoo_dir) / entry["file"], model, name=name, kind=recipe.kind, meta=meta)
            summary = ", ".join(f"{k} {v:.3f}" for k, v in final.items()) + " (last 5 iterations)"
        else:
            final_loss = round(sum(history["loss"][-20:]) / len(history["loss"][-20:]), 4)
            meta = {"final_loss": final_loss, "loss_curve": [round(x, 4) for x in history["loss"]]}
            entry.update(file=f"{name}.pt", config=recipe.config, final_loss=final_loss)
            if "test" in history:   # a reward model's held-out metrics
                meta["test"] = entry["test"] = {k: round(v, 4) for k, v in history["test"].items()}
            entry["sha256"] = save_checkpoint(Path(zoo_dir) / entry["file"], model, name=name, kind=recipe.kind, meta=meta)
            summary = f"loss {final_loss:.4f}"
        manifest[name] = entry
        write_manifest(manifest, zoo_dir)
        made[name] = model
        log(f"{name}: {summary}, {seconds:.0f} s -> {Path(zoo_dir) / entry['file']}")
    return manifest


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minirlhf.zoo", description="List, build and verify the checkpoint zoo.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="show the recipes and what is shipped")
    b = sub.add_parser("build", help="rebuild checkpoints with their recipes")
    b.add_argument("names", nargs="*", help=f"which (default: all): {', '.join(RECIPES)}")
    b.add_argument("--check", action="store_true", help="build into a temp dir and compare with the shipped files")
    sub.add_parser("verify", help="check every shipped file against the manifest")
    args = parser.parse_args(argv)

    manifest = read_manifest()
    if args.command == "list":
        for name, r in RECIPES.items():
            shipped = "shipped" if name in manifest else "not built"
            print(f"{name:18s} {shipped:9s} {r.description}")
        return 0
    if args.command == "verify":
        bad = 0
        for name in RECIPES:
            try:
                _load_any(name)
                print(f"{name}: ok")
            except (CheckpointError, KeyError) as e:
                bad += 1
                print(f"{name}: {e}")
        return 1 if bad else 0
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            # parents that are not rebuilt come from the shipped files
            write_manifest(manifest, Path(tmp))
            for entry in manifest.values():
                src = ZOO_DIR / entry["file"]
                if src.is_file():
                    atomic_write_bytes(Path(tmp) / entry["file"], src.read_bytes())
            rebuilt = build(args.names, zoo_dir=Path(tmp))
        names = args.names or list(RECIPES)
        same = [n for n in names if manifest.get(n, {}).get("sha256") == rebuilt[n]["sha256"]]
        for n in names:
            print(f"{n}: {'identical to the shipped file' if n in same else 'DIFFERS from the shipped file'}")
        return 0 if len(same) == len(names) else 1
    build(args.names)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
