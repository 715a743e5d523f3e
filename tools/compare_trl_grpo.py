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

import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from trl_common import StepTimer, char_tokenizer, llama_like
from minirlhf.course.recipes import ARITHMETIC_CONFIG
from minirlhf.tasks import arithmetic

torch.set_num_threads(2)
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 24


def reward(prompts, completions, **kwargs):
    return [arithmetic.reward(p, c) for p, c in zip(prompts, completions)]


timer = StepTimer()
args = GRPOConfig(output_dir="/tmp/compare_trl_grpo", per_device_train_batch_size=128, num_generations=8,
                  max_completion_length=4, max_steps=steps, learning_rate=5e-5, beta=0.0, temperature=1.0, report_to=[],
                  logging_steps=1000, save_strategy="no", use_cpu=True, bf16=False)
GRPOTrainer(model=llama_like(ARITHMETIC_CONFIG), reward_funcs=reward, args=args, processing_class=char_tokenizer("left"),
            train_dataset=Dataset.from_dict({"prompt": arithmetic.prompts(2000, seed=0)}), callbacks=[timer]).train()
print(json.dumps({"trl_grpo_step_s": timer.median_step(warmup=2), "steps": steps}))
