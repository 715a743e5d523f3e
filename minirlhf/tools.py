"""Sampling with a tool: when a row writes a closing tag, the tool's output is written into that row.

The batch advances one column per step, as in `generation.generate`, and reuses its pieces (left
padding, the KV cache, `next_token_logits`, `pick_next_token`). A row that has just closed a call
(`</calc>`) stops sampling: for the next steps its token is the next one of the tool's output instead of
a sample, fed through the same forward pass, so the cache stays exactly what a model reading that text
would have computed, while the other rows keep sampling. The policy never chose the tool's tokens, so
they get no loss: `tool_loss_mask` marks which tokens the policy sampled.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .calculator import CALL_CLOSE, OUTPUT_END, tool_output
from .generation import Generation, _check_generate_args, left_pad, next_token_logits, pick_next_token
from .model import GPT, KVCache
from .tokenizer import EOS_ID, PAD_ID, TOKENIZER


@dataclass
class ToolGeneration(Generation):
    """A Generation (see there) whose responses may contain tool output. T = P + N.

    loss_mask:  (B, T) bool, True on the tokens the policy sampled: response tokens (EOS included),
                not the prompt, not the tool's output, not PAD. attention_mask stays True on the tool's
                output: the model reads it, it just did not write it.
    tool_calls: (B,) long, the number of calls each row made (closing tags written).
    """

    loss_mask: torch.Tensor
    tool_calls: torch.Tensor

    @property
    def response_loss_mask(self) -> torch.Tensor:
        """(B, N) loss_mask over the response columns, aligned with `logprobs.response_logprobs`'s (B, N)
        outputs: where an RL loss sums in place of response_mask."""
        return self.loss_mask[:, self.prompt_length:]


def tool_loss_mask(tokens: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int | torch.Tensor,
                   tokenizer=TOKENIZER) -> torch.Tensor:
    """(B, T) bool: which tokens of rows "prompt | response" the policy sampled.

        loss_mask[b, t] = attention_mask[b, t] and t >= P_b and not tool[b, t]

    where tool[b, t] is True from the token after each closing tag `</calc>` of the response up to and
    including the next OUTPUT_END (newline), or to the row's end if the output was cut short: the
    tool's output. The closing tag itself was sampled, so it stays in. This mask goes into every sum
    over tokens of an RL loss (the surrogate, the ratio's clipping, the KL) and into its token count.

    tokens (B, T) long, attention_mask (B, T) bool; prompt_length: the column where responses start, an
    int P for left-padded rows (generation) or a (B,) tensor P_b for right-padded ones (SFT batches).
    """
    close = tokenizer.encode(CALL_CLOSE)
    end_id = tokenizer.encode(OUTPUT_END)[0]
    starts = torch.as_tensor(prompt_length).expand(tokens.size(0)).tolist()
    rows = tokens.tolist()
    tool = torch.zeros(tokens.shape, dtype=torch.bool)
    for b, (row, start) in enumerate(zip(rows, starts)):
        inside = False
        for t in range(start, len(row)):
            if inside:
                tool[b, t] = True
                inside = row[t] != end_id
            elif t + 1 - len(close) >= start and row[t + 1 - len(close):t + 1] == close:
                inside = True
    columns = torch.arange(tokens.size(1), device=tokens.device)
    response = columns[None, :] >= torch.as_tensor(prompt_length, device=tokens.device).reshape(-1, 1)
    return attention_mask.bool() & response & ~tool.to(tokens.device)


def generate_with_tools(model: GPT, prompts: list[list[int]], max_new_tokens: int,
                        tool: Callable[[str], str] = tool_output, *, temperature: float = 1.0,
                        top_k: int | None = None, greedy: bool = False, use_cache: bool = True,
                        generator: torch.Generator | None = None, eos_id: int | None = EOS_ID,
                        pad_id: int = PAD_ID, tokenizer=TOKENIZER) -> ToolGeneration:
    """`generate` (same arguments) where a row that writes CALL_CLOSE gets tool(its response so far)
    written after it, token by token, as forced tokens; then it samples on.

    tool(response text ending with CALL_CLOSE) -> the text to append (the calculator's answer and
    OUTPUT_END by default; it must not raise and must be encodable). A tool output cut by max_new_tokens
    stays cut. Returns a ToolGeneration with loss_mask (equal to `tool_loss_mask` of its tokens) and the
    call counts.
    """
    _check_generate_args(model, prompts, max_new_tokens, temperature, top_k)
    P, B = max(len(p) for p in prompts), len(prompts)
    close = tokenizer.encode(CALL_CLOSE)
    param = next(model.parameters())
    pending: list[list[int]] = [[] for _ in range(B)]    # tool tokens still to write, per row
    waiting: list[int] = []                               # the rows with pending tokens
    calls = torch.zeros(B, dtype=torch.long)
    with torch.inference_mode():
        tokens, attention_mask = left_pad(prompts, P + max_new_tokens, pad_id, param.device)
        forced = torch.zeros_like(attention_mask)
        cache = KVCache(model.config, B, P + max_new_tokens, param.dtype, param.device) if use_cache else None
        finished = torch.zeros(B, dtype=torch.bool, device=param.device)
        length = P
        while length < P + max_new_tokens and not finished.all():
            logits = next_token_logits(model, tokens, attention_mask, length, cache)
            token = pick_next_token(logits, temperature=temperature, top_k=top_k, greedy=greedy,
                                    generator=generator, pad_id=pad_id)
            for row in waiting:
                token[row] = pending[row].pop(0)
                forced[row, length] = True
            waiting = [row for row in waiting if pending[row]]
            token = token.masked_fill(finished, pad_id)
            tokens[:, length] = token
            attention_mask[:, length] = ~finished
            if eos_id is not None:
                finished |= (token == eos_id) & ~forced[:, length]
            # only rows that just sampled the tag's last token can have closed a call (a Python check per row is slow)
            maybe = (token == close[-1]) & ~finished & ~forced[:, length]
            for row in maybe.nonzero().flatten().tolist() if length + 1 - len(close) >= P else ():
                if tokens[row, length + 1 - len(close):length + 1].tolist() == close:
                    pending[row] = tokenizer.encode(tool(tokenizer.decode(tokens[row, P:length + 1])))
                    calls[row] += 1
                    if pending[row]:
                        waiting.append(row)
            length += 1
    tokens, attention_mask = tokens[:, :length].clone(), attention_mask[:, :length].clone()
    response = torch.zeros_like(attention_mask)
    response[:, P:] = True
    loss_mask = attention_mask & response & ~forced[:, :length]
    return ToolGeneration(tokens, attention_mask, P, attention_mask[:, P:], finished.clone(), loss_mask,
                          calls.to(param.device))


def sample_text_with_tools(model: GPT, prompt_texts: list[str], max_new_tokens: int,
                           tokenizer=TOKENIZER, **kwargs) -> tuple[list[str], list[int]]:
    """Strings in, (responses with the tool's output in them, calls per response) out; kwargs as in
    generate_with_tools."""
    prompts = [tokenizer.encode(text, bos=True) for text in prompt_texts]
    g = generate_with_tools(model, prompts, max_new_tokens, tokenizer=tokenizer, **kwargs)
    return [tokenizer.decode(r) for r in g.responses], g.tool_calls.tolist()
