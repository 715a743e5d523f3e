"""TRL's DPOTrainer on a model the size of reviews-sft (a Llama of width 128, 4 layers, 4 heads, context 160), the
course's reviews-pairs, batch 32, reference log-probs precomputed: the median seconds per step after warm-up, to
compare with `python -m minirlhf bench --only dpo`. TRL is not a course dependency: run it in a scratch venv,

    python3 -m venv /tmp/trlenv && /tmp/trlenv/bin/pip install torch==2.13.0 trl
    OMP_NUM_THREADS=2 /tmp/trlenv/bin/python tools/compare_trl_dpo.py 16      # 16 steps

Measured once on the quiet 2-core CI machine (TRL 1.16.0, transformers 5.24.0): 0.715 s per TRL step against
0.275 s for the course's DPO step (2.6x the steps per second)."""
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
from trl import DPOConfig, DPOTrainer
from minirlhf import zoo
from minirlhf.tokenizer import TOKENIZER

vocab = {ch: i for i, ch in enumerate(TOKENIZER.itos)}
tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=TOKENIZER.itos[0]))
tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
tok.decoder = decoders.Fuse()
hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=TOKENIZER.itos[TOKENIZER.pad_id],
                                 bos_token=TOKENIZER.itos[TOKENIZER.bos_id], eos_token=TOKENIZER.itos[TOKENIZER.eos_id])
print("tokenizer check:", hf_tok("review: soup")["input_ids"][:6], TOKENIZER.encode("review: soup")[:6])
cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=4, max_position_embeddings=160, tie_word_embeddings=False,
                  pad_token_id=TOKENIZER.pad_id, bos_token_id=TOKENIZER.bos_id, eos_token_id=TOKENIZER.eos_id)
torch.manual_seed(0)
model = LlamaForCausalLM(cfg)
print("params", sum(p.numel() for p in model.parameters()))
pairs = zoo.load_pairs("reviews-pairs")["train"][:640]
ds = Dataset.from_dict({k: [p[k] for p in pairs] for k in ("prompt", "chosen", "rejected")})
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 20


class Timer(TrainerCallback):
    def __init__(self):
        self.t = []
    def on_step_end(self, args, state, control, **kw):
        self.t.append(time.perf_counter())


timer = Timer()
args = DPOConfig(output_dir="/tmp/compare_trl_dpo", per_device_train_batch_size=32, max_steps=steps, learning_rate=5e-5,
                 beta=0.1, precompute_ref_log_probs=True, report_to=[], logging_steps=1000, save_strategy="no",
                 max_length=160, use_cpu=True, dataloader_num_workers=0, bf16=False)
trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=hf_tok, callbacks=[timer])
start = time.perf_counter()
trainer.train()
per_step = [b - a for a, b in zip(timer.t[4:], timer.t[5:])]
per_step.sort()
median = per_step[len(per_step) // 2]
print(json.dumps({"trl_dpo_step_s": median, "steps_timed": len(per_step), "train_s": time.perf_counter() - start}))
