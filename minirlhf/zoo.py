"""The shipped artefacts: checkpoints, preference pairs and experiment results in data/, loaded and verified.

A later notebook can start from, say, the SFT model without re-training it. Every checkpoint is
- written atomically (a temporary file, fsync, then a rename: a crash never leaves half a file),
- listed in data/zoo/MANIFEST.json with its sha256 and what it was built from,
- saved with its own sha256 next to it (`<file>.sha256`, the format `sha256sum -c` reads), so that a file
  loaded by its path is verified as well as one loaded by name,
- verified on load (sha256, format, config) and loaded with torch.load(weights_only=True).

The recipes that build the zoo, and its command line, are course tooling: `minirlhf.course.recipes`
(`python -m minirlhf zoo list|verify|build`).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import warnings
import zlib
from pathlib import Path
from typing import Callable

import torch

from .model import GPT, GPTConfig
from .reward import RewardModel
from .utils import DATA_DIR, atomic_write_bytes

ZOO_DIR = DATA_DIR / "zoo"
RESULTS_DIR = DATA_DIR / "results"

MANIFEST = "MANIFEST.json"
FORMAT = "minirlhf-checkpoint/1"
PAIRS_FORMAT = "minirlhf-pairs/1"
MODEL_KINDS: dict[str, Callable[[GPTConfig], torch.nn.Module]] = {"gpt": GPT, "reward": RewardModel}


class CheckpointError(ValueError):
    """A shipped file (checkpoint, preference pairs, manifest, results) is missing, corrupt, or does not match
    what was asked for."""


def parse_json(path: Path, data: bytes, fix: str):
    """json.loads(data) read from `path`, or a CheckpointError naming the file (and the line of a syntax error),
    what is wrong and `fix`, what to do. Raw, a damaged file escapes as a JSONDecodeError, UnicodeDecodeError or
    RecursionError (nested too deep) that names no file."""
    try:
        return json.loads(data)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}): {fix}") from None
    except (RecursionError, ValueError) as e:          # UnicodeDecodeError is a ValueError
        raise CheckpointError(f"{path} is not readable JSON ({e.__class__.__name__}: {e}): {fix}") from None


# ---------------------------------------------------------------- files
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_path(path: Path) -> Path:
    """Where save_checkpoint records a checkpoint's sha256: `<file>.sha256` next to it."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def recorded_sha256(path: Path) -> str | None:
    """The sha256 recorded next to a checkpoint when it was saved, or None if there is no record."""
    try:
        text = sha256_path(path).read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return None
    return text.split()[0] if text.split() else ""


def save_checkpoint(path: Path, model: torch.nn.Module, *, name: str, kind: str = "gpt", meta: dict | None = None) -> str:
    """Save model weights + config atomically, and their sha256 next to them (`<file>.sha256`); returns the sha256."""
    payload = {"format": FORMAT, "name": name, "kind": kind, "config": model.config.to_dict(),
               "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
               "meta": meta or {}}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    # The old record goes first: a crash between the two writes then leaves a file with no record (loaded with a
    # warning), never a good file refused for an old sha256.
    sha256_path(path).unlink(missing_ok=True)
    atomic_write_bytes(Path(path), data)
    atomic_write_bytes(sha256_path(path), f"{sha}  {Path(path).name}\n".encode())
    return sha


def _verify(path: Path, expected_sha256: str | None) -> None:
    """Raise CheckpointError if path's bytes are not the ones recorded for it: expected_sha256 (the zoo's
    manifest) if given, else the sha256 saved next to it. A file with neither is loaded with a warning."""
    if expected_sha256 is not None:
        if sha256_file(path) != expected_sha256:
            raise CheckpointError(
                f"{path} does not match its sha256 in the manifest: the file is corrupt or was changed by hand. "
                f"Restore it with `git checkout -- {path.name}` (from data/zoo) or rebuild it with "
                f"`python -m minirlhf zoo build {path.stem}`.")
        return
    recorded = recorded_sha256(path)
    if recorded is None:
        warnings.warn(f"{path} has no {sha256_path(path).name} next to it (saved by an older minirlhf, or copied "
                      "without it), so it cannot be checked for damage: loading it unverified. Load it once and "
                      "save it again with zoo.save_checkpoint to record its sha256.", stacklevel=3)
    elif sha256_file(path) != recorded:
        raise CheckpointError(
            f"{path} does not match the sha256 recorded in {sha256_path(path).name} when it was saved: it was "
            "damaged since (a disk, copy or sync error) or changed by hand, so its weights cannot be trusted and it "
            "was not loaded. Restore it from a copy, or train and save it again; if you changed it on purpose, "
            f"delete {sha256_path(path).name} to load it unverified.")


def load_checkpoint(path: Path, expected_sha256: str | None = None) -> tuple[torch.nn.Module, dict]:
    """Load (model in eval mode, meta) from a file written by save_checkpoint, verifying it first: against
    expected_sha256 (the manifest's, when the zoo loads by name), else against the sha256 saved next to it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}. Build it with: python -m minirlhf zoo build {path.stem}")
    _verify(path, expected_sha256)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable checkpoint ({e.__class__.__name__}: {e}). "
                              f"Rebuild it with `python -m minirlhf zoo build {path.stem}`.") from e
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
        raise CheckpointError(f"no preference data at {path}. Build it with: python -m minirlhf zoo build {path.name.split('.')[0]}")
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise CheckpointError(f"{path} does not match its sha256 in the manifest: restore it with git or rebuild it.")
    fix = "restore it with git or rebuild it."
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as e:       # not gzip, cut short, or damaged inside
        raise CheckpointError(f"{path} is not readable gzip ({e.__class__.__name__}: {e}); {fix}") from None
    payload = parse_json(path, data, fix)
    if not isinstance(payload, dict) or payload.get("format") != PAIRS_FORMAT:
        raise CheckpointError(f"{path} is not a minirlhf preference file of format {PAIRS_FORMAT!r}: {fix}")
    splits = payload.get("splits")
    if not isinstance(splits, dict) or not all(isinstance(pairs, list) for pairs in splits.values()):
        raise CheckpointError(f"{path} has no 'splits' {{split: [pairs]}}: {fix}")
    return splits


def read_manifest(zoo_dir: Path = ZOO_DIR) -> dict:
    path = Path(zoo_dir) / MANIFEST
    if not path.is_file():
        return {}
    fix = "restore it with `git checkout -- data/zoo/MANIFEST.json` or rebuild the zoo."
    manifest = parse_json(path, path.read_bytes(), fix)
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{path} must be a JSON object {{name: entry}}, not a {type(manifest).__name__}: {fix}")
    for name, entry in manifest.items():
        if not (isinstance(entry, dict) and all(isinstance(entry.get(key), str) for key in ("file", "sha256"))):
            raise CheckpointError(f"{path}: the entry {name!r} needs a 'file' and a 'sha256' (strings): {fix}")
    return manifest


def write_manifest(manifest: dict, zoo_dir: Path = ZOO_DIR) -> None:
    atomic_write_bytes(Path(zoo_dir) / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())


# ---------------------------------------------------------------- loading by name
def manifest_entry(name: str, zoo_dir: Path = ZOO_DIR) -> dict:
    """The manifest entry of `name` in zoo_dir, or a CheckpointError that says what there is and how to build it."""
    manifest = read_manifest(zoo_dir)
    if name not in manifest:
        have = ", ".join(sorted(manifest)) or "nothing"
        raise CheckpointError(f"{name!r} is not in {Path(zoo_dir) / MANIFEST} (it has: {have}). "
                              f"Build it with: python -m minirlhf zoo build {name}")
    return manifest[name]


def load(name: str, zoo_dir: Path = ZOO_DIR) -> torch.nn.Module:
    """Load a shipped zoo model by name (eval mode), verified against the manifest."""
    return load_with_meta(name, zoo_dir)[0]


def load_with_meta(name: str, zoo_dir: Path = ZOO_DIR) -> tuple[torch.nn.Module, dict]:
    """(model, meta): meta holds what the recipe recorded (final_loss, loss_curve, an RL history)."""
    entry = manifest_entry(name, zoo_dir)
    if entry.get("kind") == "pairs":
        raise CheckpointError(f"{name} is preference data, not a model: use zoo.load_pairs({name!r})")
    return load_checkpoint(Path(zoo_dir) / entry["file"], expected_sha256=entry["sha256"])


def load_pairs(name: str = "reviews-pairs", zoo_dir: Path = ZOO_DIR) -> dict[str, list[dict]]:
    """Shipped preference pairs {split: [{prompt, chosen, rejected, gold_chosen, gold_rejected}]}."""
    entry = manifest_entry(name, zoo_dir)
    if entry.get("kind") != "pairs":
        raise CheckpointError(f"{name} is a model, not preference data: use zoo.load({name!r})")
    return load_pairs_file(Path(zoo_dir) / entry["file"], expected_sha256=entry["sha256"])


def load_entry(name: str, zoo_dir: Path = ZOO_DIR):
    """Whatever `name` is: a model (load) or preference pairs (load_pairs)."""
    if manifest_entry(name, zoo_dir).get("kind") == "pairs":
        return load_pairs(name, zoo_dir)
    return load(name, zoo_dir)


def load_results(name: str, results_dir: Path = RESULTS_DIR) -> dict:
    """The shipped results of an experiment (data/results/NAME.json), as the notebooks plot them."""
    path = Path(results_dir) / f"{name}.json"
    rerun = f"python -m minirlhf experiments {name.replace('_', '-')}"
    if not path.is_file():
        raise FileNotFoundError(f"no results at {path}: run {rerun}")
    return parse_json(path, path.read_bytes(), f"restore it with `git checkout -- {path.name}` (from data/results) "
                                               f"or rerun {rerun}")
