"""Tiny models and configs shared by the tests: random, fast, and the same for every file; and a fixed,
hand-written reward that the RL trainers must learn to raise (see `letter_curve`)."""

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


class NeverEnds(GPT):
    """A GPT that never emits EOS: every sample runs to its token budget."""

    def forward(self, idx, attention_mask=None, kv_cache=None):
        logits = super().forward(idx, attention_mask, kv_cache)
        return logits.index_fill(-1, torch.tensor([TOKENIZER.eos_id], device=logits.device), -1e4)


def never_ending_model(seed=0, context_length=24):
    torch.manual_seed(seed)
    return NeverEnds(GPTConfig(vocab_size=TOKENIZER.vocab_size, context_length=context_length, d_model=16,
                               n_layers=1, n_heads=2))


# ---------------------------------------------------------------- a reward the RL trainers must learn
LEARN_PROMPT = "review: soup\n"
LETTERS = torch.tensor(TOKENIZER.encode("abcdefghijklmnopqrstuvwxyz"))


class LetterShare(torch.nn.Module):
    """A fixed reward model: the share of the response's tokens that are lowercase letters, in [0, 1].

    forward(tokens, attention_mask) -> (B,), like a RewardModel on a Generation: the response is every
    column after the left-padded prompt (tokens[:, prompt_length:]) and its real tokens are where
    attention_mask is True there (EOS counts as a token that is not a letter, the PAD after it not at
    all). A random tiny policy scores about 0.45 (26 of the 56 tokens it can sample). No parameters.
    """

    def __init__(self, prompt_length: int):
        super().__init__()
        self.prompt_length = prompt_length

    def forward(self, tokens, attention_mask):
        response, real = tokens[:, self.prompt_length:], attention_mask[:, self.prompt_length:]
        letters = torch.isin(response, LETTERS) & real
        return letters.sum(1) / real.sum(1).clamp(min=1)


def letter_curve(train, config, seed=0):
    """history["proxy_reward"] of train(policy, reference, LetterShare, [LEARN_PROMPT], config), from tiny
    random models (reference = a copy of the policy) seeded with `seed`.

    Runs on one thread, then restores the thread count: these small sequential loops are as fast on one
    thread, and on a busy 2-core machine two threads waiting for each other can make them 10x slower.
    Deterministic: the same seed and config give the same curve.
    """
    threads = torch.get_num_threads()
    try:
        seed_everything(seed, threads=1)
        policy, reference, _ = tiny_models(seed)
        rm = LetterShare(len(TOKENIZER.encode(LEARN_PROMPT, bos=True))).eval()
        _, history = train(policy, reference, rm, [LEARN_PROMPT], config)
    finally:
        torch.set_num_threads(threads)
    return history["proxy_reward"]


def early_and_late(curve, k=3):
    """(mean of the first k values, mean of the last k): where a learning curve starts and ends."""
    return sum(curve[:k]) / k, sum(curve[-k:]) / k


def train_tiny_policy(train, config, reward_fn, seed=0) -> dict:
    """The history of train(policy, [LEARN_PROMPT], reward_fn, config) (train_grpo, train_rft: a verifier-style
    trainer) from a tiny random policy seeded with `seed`. On one thread, restored afterwards, as letter_curve."""
    threads = torch.get_num_threads()
    try:
        seed_everything(seed, threads=1)
        policy, _, _ = tiny_models(seed)
        _, history = train(policy, [LEARN_PROMPT], reward_fn, config)
    finally:
        torch.set_num_threads(threads)
    return history
