"""Tiny models and configs shared by the tests: random, fast, and the same for every file."""

import torch

from minirlhf.model import GPT, GPTConfig
from minirlhf.ppo import PPOConfig
from minirlhf.reinforce import ReinforceConfig
from minirlhf.reward import RewardModel
from minirlhf.tokenizer import TOKENIZER
from minirlhf.utils import seed_everything

TINY = dict(vocab_size=TOKENIZER.vocab_size, context_length=48, d_model=32, n_layers=1, n_heads=2)


def tiny_models(seed=0):
    """(policy, reference = a copy of it, reward model), all tiny and random."""
    torch.manual_seed(seed)
    policy, rm = GPT(GPTConfig(**TINY)), RewardModel(GPTConfig(**TINY))
    reference = GPT(GPTConfig(**TINY))
    reference.load_state_dict(policy.state_dict())
    return policy, reference, rm.eval()


def tiny_config(**overrides):
    return PPOConfig(**{**dict(iterations=3, batch_size=8, minibatches=2, max_new_tokens=12, seed=0), **overrides})


def tiny_reinforce_config(**overrides):
    return ReinforceConfig(**{**dict(iterations=3, batch_size=8, max_new_tokens=12, seed=0), **overrides})


def tiny_model(seed=0, context_length=32):
    """A tiny random GPT (32 tokens of context: pretraining, SFT and checkpoint tests)."""
    seed_everything(seed)
    return GPT(GPTConfig(vocab_size=TOKENIZER.vocab_size, context_length=context_length, d_model=32, n_layers=1,
                         n_heads=2))
