"""The package's layers (minirlhf/__init__.py): a module imports only from its own layer or the ones before it."""
import ast
from pathlib import Path

import minirlhf

PACKAGE = Path(minirlhf.__file__).parent
LAYERS = [
    {"tokenizer", "utils", "data", "tasks", "preferences", "calculator", "ratings"},  # 1. tasks + tokenizer
    {"model"},                                                                  # 2. model
    {"logprobs", "losses", "advantages"},                                       # 3. building blocks
    {"generation", "sampling", "tools"},                                        # 4. sampling
    {"train", "reward", "best_of_n", "rl", "reinforce", "ppo", "online", "bandit",   # 5. trainers and measures
     "grpo", "rft", "dpo", "judge", "distributed", "scaling", "capstone",
     "evaluate", "overoptimization", "feedback", "exercises"},
    {"zoo", "course", "__main__"},                                              # 6. course tooling
]
LAYER = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def top_name(path: Path) -> str:
    """minirlhf/ppo.py -> "ppo"; minirlhf/course/bench.py -> "course"."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported(source: str, depth: int) -> set[str]:
    """Top-level minirlhf modules that a module imports, wherever the import statement stands.
    depth: 0 for minirlhf/x.py, 1 for minirlhf/course/x.py (where `from ..x` means the package root)."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] != "minirlhf":
                    continue
                rest = parts[1:]
            elif node.level - 1 == depth:                       # relative to the package root
                rest = (node.module or "").split(".") if node.module else []
            else:                                               # inside the same subpackage
                continue
            names = rest[:1] or [alias.name for alias in node.names]
            out.update(n for n in names if n in LAYER)
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("minirlhf.") and a.name.split(".")[1] in LAYER)
    return out


def test_every_module_has_a_layer_and_imports_only_from_its_layer_or_before():
    modules = [p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE]
    assert {top_name(p) for p in modules} <= set(LAYER), "a new module needs a layer in LAYERS (and in __init__.py)"
    upward = [f"{p.relative_to(PACKAGE)} imports {dep}" for p in modules
              for dep in imported(p.read_text(), len(p.relative_to(PACKAGE).parts) - 1)
              if LAYER[dep] > LAYER[top_name(p)]]
    assert not upward, "imports that run back up the layers: " + "; ".join(upward)


def test_imports_are_found_in_every_form():
    source = """
from .ppo import train_ppo
from . import zoo
import minirlhf.sampling
from minirlhf.logprobs import kl_k1
from ..reward import score
from .engine import run_check

def f():
    from .model import GPT
"""
    assert imported(source, 0) == {"ppo", "zoo", "sampling", "logprobs", "model"}
    assert imported(source, 1) == {"sampling", "logprobs", "reward"}   # ".ppo", ". zoo": siblings in a subpackage
