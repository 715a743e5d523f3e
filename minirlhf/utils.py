"""Seeding, threads and paths: the few things every notebook and trainer needs first."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

# Large reductions depend on the thread count, so results are only reproducible with a fixed one.
# Two threads is what the course is timed and validated on; tiny models gain little from more.
DEFAULT_THREADS = 2

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"


def seed_everything(seed: int = 0, threads: int | None = DEFAULT_THREADS) -> torch.Generator:
    """Seed Python, NumPy and torch and fix torch's thread count; return a torch.Generator seeded too.

    The same seed and thread count on the same machine give bit-identical numbers.
    Returns a generator so callers can draw from their own stream without touching the global one.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(max(1, min(threads, os.cpu_count() or 1)))
    return torch.Generator().manual_seed(seed)
