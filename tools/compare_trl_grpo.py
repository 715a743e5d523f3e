"""TRL's GRPOTrainer on a model the size of arithmetic-sft (a Llama of width 96, 3 layers, 4 heads, context 32),
the course's arithmetic prompts and verifier, 16 prompts x 8 answers of at most 4 tokens per step: the median
seconds per step after warm-up, to compare with `python -m minirlhf bench --only grpo`. TRL is not a course
dependency: run it in a scratch venv,

    python3 -m venv /tmp/trlenv && /tmp/trlenv/bin/pip install torch==2.13.0 trl
    OMP_NUM_THREADS=2 /tmp/trlenv/bin/python tools/compare_trl_grpo.py 24      # 24 steps

Measured once on the quiet 2-core CI machine (TRL 1.16.0): 0.141 s per TRL step against 0.066 s for the course's
GRPO step (2.1x the steps per second). Not quite like for like: TRL's model here is untrained, so its answers
are all 4 tokens long and every group is all wrong (zero advantages), while the course's bench starts from
arithmetic-sft."""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch
torch.set_num_threads(2)
from tokenizers import Tokenizer, models, pre_tokenizers, decoders
from transformers import PreTrainedTokenizerFast, LlamaConfig, LlamaForCausalLM, TrainerCallback
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer
from minirlhf.tasks import arithmetic
from minirlhf.tokenizer import TOKENIZER

vocab = {ch: i for i, ch in enumerate(TOKENIZER.itos)}
tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=TOKENIZER.itos[0]))
tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
tok.decoder = decoders.Fuse()
hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=TOKENIZER.itos[TOKENIZER.pad_id],
                                 bos_token=TOKENIZER.itos[TOKENIZER.bos_id], eos_token=TOKENIZER.itos[TOKENIZER.eos_id])
hf_tok.padding_side = "left"
cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=96, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=4, max_position_embeddings=32, tie_word_embeddings=False,
                  pad_token_id=TOKENIZER.pad_id, bos_token_id=TOKENIZER.bos_id, eos_token_id=TOKENIZER.eos_id)
torch.manual_seed(0)
model = LlamaForCausalLM(cfg)
ds = Dataset.from_dict({"prompt": arithmetic.prompts(2000, seed=0)})

def reward(prompts, completions, **kw):
    return [arithmetic.reward(p, c) for p, c in zip(prompts, completions)]

class Timer(TrainerCallback):
    def __init__(self): self.t = []
    def on_step_end(self, args, state, control, **kw): self.t.append(time.perf_counter())

timer = Timer()
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 12
args = GRPOConfig(output_dir="/tmp/compare_trl_grpo", per_device_train_batch_size=128, num_generations=8, max_completion_length=4,
                  max_steps=steps, learning_rate=5e-5, beta=0.0, report_to=[], logging_steps=1000, save_strategy="no",
                  use_cpu=True, bf16=False, temperature=1.0)
trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=ds, processing_class=hf_tok, callbacks=[timer])
trainer.train()
per = sorted(b - a for a, b in zip(timer.t[2:], timer.t[3:]))
print(json.dumps({"trl_grpo_step_s": per[len(per) // 2], "steps_timed": len(per)}))
