"""minirlhf: RLHF from scratch, small enough for a laptop CPU.

The package in layers. Data flows one way: a module imports only from the layers above it in this list,
never from one below (tests/test_layers.py checks it).

1. tasks + tokenizer: tokenizer, utils, data, tasks/ (reviews, arithmetic, long_arithmetic, ...; one interface
   `tasks.Task`), preferences (Bradley-Terry labels from the hidden gold human), calculator (the tool a model can call)
2. model: model (the GPT, its KV cache, a scalar head)
3. building blocks: logprobs (log pi of responses, KL estimators), losses, advantages (GAE, baselines)
4. sampling: generation (token ids), sampling (texts, labelled pairs, scored rollouts), tools (sampling
   with a tool's output written into the responses)
5. trainers, one file per family, plain loops: train (pretraining, SFT), reward, best_of_n, rl (what the
   RL trainers share), reinforce, ppo, online, bandit (notebook 01's toy RL), dpo (DPO and friends), grpo
   (GRPO, Dr. GRPO, RLOO on a verifiable reward), rft (rejection-sampling fine-tuning, GRPO's cheap
   competitor); and the measures and data around them:
   evaluate, overoptimization, feedback (the label store and widget), exercises/ (the checks);
   judge (RLAIF: the AI judge that reads a constitution); distributed (the losses on several processes with
   torch.distributed: DDP, FSDP2, and the pitfalls of token means and groups over ranks); scaling (GPU memory
   of PPO, DPO and GRPO at real sizes, with ZeRO)
6. course tooling: zoo (load the shipped checkpoints, pairs and results), course/ (recipes that build the
   zoo, experiments, bench, student versions, the website; `python -m minirlhf TOOL`)
7. notebooks
"""
from .tokenizer import TOKENIZER, CharTokenizer, PAD_ID, BOS_ID, EOS_ID
from .utils import seed_everything, DATA_DIR, REPO_ROOT

__all__ = ["TOKENIZER", "CharTokenizer", "PAD_ID", "BOS_ID", "EOS_ID", "seed_everything", "DATA_DIR", "REPO_ROOT"]
