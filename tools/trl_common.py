"""What the two TRL comparisons share (tools/compare_trl_dpo.py, tools/compare_trl_grpo.py): the course's character
tokenizer as a Hugging Face tokenizer, a Llama of the same width, depth, heads and context as a course model, and
a callback that times the steps. Run in a scratch venv with trl installed (never a course dependency)."""
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # the course's package, without installing it

import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, TrainerCallback  # noqa: E402

from minirlhf.tokenizer import TOKENIZER  # noqa: E402


def char_tokenizer(padding_side: str = "right") -> PreTrainedTokenizerFast:
    """The course's tokenizer (one id per character, same ids) for TRL's trainers."""
    vocab = {ch: i for i, ch in enumerate(TOKENIZER.itos)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=TOKENIZER.itos[0]))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.decoder = decoders.Fuse()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=TOKENIZER.itos[TOKENIZER.pad_id],
                                 bos_token=TOKENIZER.itos[TOKENIZER.bos_id], eos_token=TOKENIZER.itos[TOKENIZER.eos_id])
    hf.padding_side = padding_side
    assert hf("review: soup")["input_ids"] == TOKENIZER.encode("review: soup"), "the tokenizers disagree"
    return hf


def llama_like(config: dict, seed: int = 0) -> LlamaForCausalLM:
    """A Llama with a course GPT config's width, depth, heads and context (MLP 4x wide, as the course's)."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(TOKENIZER.itos), hidden_size=config["d_model"], intermediate_size=4 * config["d_model"],
        num_hidden_layers=config["n_layers"], num_attention_heads=config["n_heads"], num_key_value_heads=config["n_heads"],
        max_position_embeddings=config["context_length"], tie_word_embeddings=False, pad_token_id=TOKENIZER.pad_id,
        bos_token_id=TOKENIZER.bos_id, eos_token_id=TOKENIZER.eos_id))


class StepTimer(TrainerCallback):
    """Records when each step ends; median_step() is the median step time after `warmup` steps."""

    def __init__(self):
        self.ends = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())

    def median_step(self, warmup: int) -> float:
        return statistics.median(b - a for a, b in zip(self.ends[warmup:], self.ends[warmup + 1:]))
