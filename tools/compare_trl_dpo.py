"""TRL's DPOTrainer on a model the size of reviews-sft (a Llama of width 128, 4 layers, 4 heads, context 160), the
course's reviews-pairs, batch 32, reference log-probs precomputed: the median seconds per step after warm-up, to
compare with `python -m minirlhf bench --only dpo`. TRL is not a course dependency: run it in a scratch venv,

    python3 -m venv /tmp/trlenv && /tmp/trlenv/bin/pip install torch==2.13.0 trl
    OMP_NUM_THREADS=2 /tmp/trlenv/bin/python tools/compare_trl_dpo.py 16      # 16 steps

Measured once on the quiet 2-core CI machine (TRL 1.16.0, transformers 5.24.0): 0.715 s per TRL step against
0.275 s for the course's DPO step (2.6x the steps per second)."""

import json
import sys

import torch
from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from trl_common import StepTimer, char_tokenizer, llama_like
from minirlhf import zoo
from minirlhf.course.recipes import REVIEWS_CONFIG

torch.set_num_threads(2)
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 16
pairs = zoo.load_pairs("reviews-pairs")["train"][:640]     # 20 batches: the steps' time does not depend on the count
dataset = Dataset.from_dict({k: [p[k] for p in pairs] for k in ("prompt", "chosen", "rejected")})
timer = StepTimer()
args = DPOConfig(output_dir="/tmp/compare_trl_dpo", per_device_train_batch_size=32, max_steps=steps, learning_rate=5e-5,
                 beta=0.1, precompute_ref_log_probs=True, report_to=[], logging_steps=1000, save_strategy="no",
                 max_length=REVIEWS_CONFIG["context_length"], use_cpu=True, dataloader_num_workers=0, bf16=False)
DPOTrainer(model=llama_like(REVIEWS_CONFIG), args=args, train_dataset=dataset, processing_class=char_tokenizer(),
           callbacks=[timer]).train()
print(json.dumps({"trl_dpo_step_s": timer.median_step(warmup=4), "steps": steps}))
