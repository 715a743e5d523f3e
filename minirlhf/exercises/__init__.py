"""The checks behind every exercise, one module per part of the course, on one checking engine.

    from minirlhf.exercises import check_gae, exercise_summary     # what a notebook writes

- engine: run_check (cases, types, known mistakes, gradients), ExerciseError, exercise_summary;
- part1: notebooks 01-05; part2: 06-08; part3: 09-12; part4_dpo: 13; part4_rlaif: 14; part4_grpo: 15; part4_tools: 16; part4_thinking: 19; part4_capstone: 17; part4_scaling: 18.
"""
from .engine import ExerciseError, exercise_summary, run_check
from .part1 import (check_bayes_optimal_accuracy, check_block_forward, check_causal_attention,
                    check_discounted_returns, check_next_token_loss, check_reinforce_loss, check_sft_loss_mask,
                    check_sft_step)
from .part2 import (check_best_of_n_weights, check_bradley_terry_loss, check_cohens_kappa, check_gather_last,
                    check_kl_best_of_n_exact, check_ranking_loss, check_reward_step)
from .part3 import (check_fit_gao, check_gae, check_gold_order_agreement, check_kl_penalty_rewards,
                    check_leave_one_out_baseline, check_ppo_clip_loss, check_ppo_update, check_sequence_logprobs)
from .part4_dpo import check_dpo_loss, check_ipo_loss
from .part4_rlaif import check_judge_gold_agreement, check_swap_averaged
from .part4_grpo import check_group_advantages, check_loss_aggregation
from .part4_tools import check_calculate, check_tool_loss_mask
from .part4_thinking import check_rft_loss, check_verifier_loss
from .part4_capstone import check_normalize_per_user, check_rating_pairs_loss
from .part4_scaling import check_zero_memory

__all__ = ["ExerciseError", "exercise_summary", "run_check",
           "check_discounted_returns", "check_reinforce_loss", "check_bayes_optimal_accuracy", "check_causal_attention",
           "check_block_forward", "check_next_token_loss", "check_sft_loss_mask", "check_sft_step",
           "check_cohens_kappa", "check_bradley_terry_loss", "check_gather_last", "check_ranking_loss",
           "check_reward_step", "check_best_of_n_weights", "check_kl_best_of_n_exact",
           "check_sequence_logprobs", "check_leave_one_out_baseline", "check_ppo_clip_loss", "check_gae",
           "check_kl_penalty_rewards", "check_ppo_update", "check_fit_gao", "check_gold_order_agreement",
           "check_group_advantages", "check_loss_aggregation", "check_tool_loss_mask", "check_calculate", "check_zero_memory",
           "check_rft_loss", "check_verifier_loss",
           "check_normalize_per_user", "check_rating_pairs_loss",
           "check_dpo_loss", "check_ipo_loss",
           "check_swap_averaged", "check_judge_gold_agreement"]
