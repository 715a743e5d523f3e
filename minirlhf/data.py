"""Turning task text into batches of token ids."""
from __future__ import annotations

import torch

from .tokenizer import TOKENIZER, CharTokenizer


def pack_corpus(texts: list[str], tokenizer: CharTokenizer = TOKENIZER) -> torch.Tensor:
    """Concatenate "BOS text EOS" for every text into one long stream of ids, shape (N,)."""
    ids: list[int] = []
    for text in texts:
        ids += tokenizer.encode(text, bos=True, eos=True)
    return torch.tensor(ids, dtype=torch.long)


def random_windows(stream: torch.Tensor, batch_size: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """batch_size random windows of `length` consecutive ids from the stream, shape (B, length)."""
    if stream.numel() <= length:
        raise ValueError(f"the corpus has {stream.numel()} tokens, fewer than one window of {length}: add text")
    starts = torch.randint(0, stream.numel() - length + 1, (batch_size,), generator=generator)
    return stream[starts[:, None] + torch.arange(length)]


def pad_right(seqs: list[list[int]], pad_id: int) -> torch.Tensor:
    """Lists of ids -> (B, max_len) long tensor, padded on the right."""
    width = max(len(s) for s in seqs)
    return torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs], dtype=torch.long)


def encode_pairs(pairs: list[tuple[str, str]], tokenizer: CharTokenizer = TOKENIZER):
    """(prompt, response) texts -> (tokens (B, T) right-padded "BOS prompt response EOS", prompt_lengths (B,))."""
    seqs, prompt_lengths = [], []
    for prompt, response in pairs:
        p = tokenizer.encode(prompt, bos=True)
        seqs.append(p + tokenizer.encode(response, eos=True))
        prompt_lengths.append(len(p))
    return pad_right(seqs, tokenizer.pad_id), torch.tensor(prompt_lengths)
