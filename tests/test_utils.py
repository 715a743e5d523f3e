"""utils.py: seeding."""
import random

import torch

from minirlhf.utils import seed_everything


def test_seed_everything_is_deterministic():
    def draw():
        g = seed_everything(123)
        return random.random(), torch.randn(3).tolist(), torch.rand(2, generator=g).tolist()
    assert draw() == draw()
    assert torch.get_num_threads() <= 2
