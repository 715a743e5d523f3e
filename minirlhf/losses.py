"""Every training objective of the course as a pure function of tensors.

Shapes: B = batch, T = sequence length, V = vocabulary size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .logprobs import kl_k3
from .tokenizer import PAD_ID


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor, loss_mask: torch.Tensor | None = None,
                    num_items: torch.Tensor | float | None = None) -> torch.Tensor:
    """Language-modelling loss: mean negative log-likelihood of each next token.

        L = -(1/|M|) * sum_{(b,t) in M} log softmax(logits[b, t])[tokens[b, t+1]]

    logits (B, T, V): position t predicts token t+1, so the last position predicts nothing.
    tokens (B, T) long. loss_mask (B, T) bool, optional: which *target* tokens count (M is the set
    of (b, t) with loss_mask[b, t+1]); None counts every target. num_items: divide by this instead of |M|
    (TRL's num_items_in_batch: on several ranks, the global count / the number of ranks; see distributed.py).
    """
    if logits.shape[:2] != tokens.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and tokens {tuple(tokens.shape)} must agree on (B, T)")
    pred, target = logits[:, :-1], tokens[:, 1:]
    nll = F.cross_entropy(pred.reshape(-1, pred.size(-1)), target.reshape(-1), reduction="none")
    if loss_mask is None:
        return nll.mean()
    mask = loss_mask[:, 1:].reshape(-1).to(nll.dtype)
    return (nll * mask).sum() / (mask.sum().clamp(min=1) if num_items is None else num_items)


def sft_loss_mask(tokens: torch.Tensor, prompt_lengths: torch.Tensor, pad_id: int = PAD_ID) -> torch.Tensor:
    """Which tokens SFT learns to predict: the response (and its EOS), never the prompt or padding.

        mask[b, t] = (t >= prompt_lengths[b]) and tokens[b, t] != PAD

    tokens (B, T) right-padded rows "BOS prompt response EOS PAD..."; prompt_lengths (B,) counts BOS
    and prompt. Returns (B, T) bool, used as `loss_mask` of `next_token_loss`.
    """
    positions = torch.arange(tokens.size(1), device=tokens.device)
    return (positions[None, :] >= prompt_lengths[:, None]) & (tokens != pad_id)


def reinforce_loss(logprobs: torch.Tensor, returns: torch.Tensor, baseline: torch.Tensor | float = 0.0) -> torch.Tensor:
    """REINFORCE (score-function) loss whose gradient is the policy-gradient estimate.

        L = -mean_i [ log pi(a_i) * (G_i - b) ]        grad L = -E[ grad log pi(a) * (G - b) ]

    logprobs (N,) with gradient; returns (N,) and baseline (scalar or (N,)) are treated as constants
    (detached): the baseline lowers the variance without biasing the gradient.
    """
    advantage = (returns - baseline).detach()
    return -(logprobs * advantage).mean()


def ppo_clip_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                  clip_eps: float = 0.2) -> torch.Tensor:
    """PPO's clipped surrogate loss (Schulman et al. 2017), to minimise.

        r_i = pi_new(a_i) / pi_old(a_i) = exp(logprobs_i - old_logprobs_i)
        L   = -mean_i [ min( r_i * A_i, clip(r_i, 1 - eps, 1 + eps) * A_i ) ]

    logprobs (N,) or (B, T): log pi_new of the sampled actions, with gradient. old_logprobs and
    advantages, same shape: from the policy that sampled the batch, treated as constants (detached).
    The min makes the objective pessimistic: once r_i has moved past 1 + eps (A_i > 0) or below
    1 - eps (A_i < 0), that sample's gradient is zero, so reusing a batch cannot push the policy far
    from pi_old. Returns the scalar loss only; at r = 1 its gradient equals REINFORCE's.
    """
    return -clipped_surrogate(logprobs, old_logprobs, advantages, clip_eps).mean()


def bradley_terry_loss(reward_chosen: torch.Tensor, reward_rejected: torch.Tensor) -> torch.Tensor:
    """Reward-model loss: negative log-likelihood of the human's choices under Bradley-Terry.

        P(chosen > rejected) = sigma(r_c - r_r)        L = -mean_b log sigma(r_c[b] - r_r[b])

    reward_chosen, reward_rejected: (B,) rewards of the preferred and the other response of each pair.
    Only the margin r_c - r_r matters, so adding a constant to every reward changes nothing (which is
    why a reward model's scale and offset are free and get normalised afterwards).
    F.logsigmoid is exact at any margin: log(sigmoid(x)) underflows to log(0) = -inf near x = -100
    in float32, and log(1 + exp(-x)) overflows there.
    """
    return -F.logsigmoid(reward_chosen - reward_rejected).mean()


def ranking_loss(rewards: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """InstructGPT's K-wise loss: Bradley-Terry on all C(K, 2) pairs of a ranking, averaged per prompt.

        L = -mean_b [ 1/C(K,2) * sum_{i < j} log sigma(r[b, i] - r[b, j]) ]

    rewards (B, K): the rewards of each prompt's K responses IN RANK ORDER, best first, so response i
    beats response j whenever i < j. All pairs of a prompt go into one batch (one forward pass per
    response instead of one per pair), and the 1/C(K,2) keeps a prompt with many responses from
    outweighing the others (InstructGPT found the RM over-fits when each pair is its own example).
    valid (B, K) bool, optional: False marks empty slots of prompts with fewer than K responses; a pair
    counts only if both responses are valid, and each prompt averages over its own valid pairs.
    The alternative that uses the ranking as one event is `plackett_luce_loss`.
    """
    i, j = torch.triu_indices(rewards.size(1), rewards.size(1), offset=1, device=rewards.device)
    log_p = F.logsigmoid(rewards[:, i] - rewards[:, j])                 # (B, C(K,2)), pair (i, j): i won
    if valid is None:
        return -log_p.mean()
    pairs = (valid[:, i] & valid[:, j]).to(log_p.dtype)
    per_prompt = (log_p * pairs).sum(1) / pairs.sum(1).clamp(min=1)
    return -per_prompt.sum() / (pairs.sum(1) > 0).sum().clamp(min=1)  # prompts with no pair do not count


def plackett_luce_loss(rewards: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of a whole ranking under Plackett-Luce (the K-wise Bradley-Terry).

        P(ranking) = prod_{i=1}^{K} exp(r_i) / sum_{j >= i} exp(r_j)
        L = -mean_b sum_i [ r[b, i] - logsumexp_{j >= i} r[b, j] ]

    rewards (B, K) in rank order, best first (as in `ranking_loss`): the best response is picked from
    all K, the second from the remaining K - 1, and so on. For K = 2 this is `bradley_terry_loss`.
    """
    # logsumexp over each suffix j >= i: a cumulative logsumexp of the reversed ranking, reversed back
    suffix = torch.logcumsumexp(rewards.flip(-1), dim=-1).flip(-1)
    return -(rewards - suffix).sum(-1).mean()


# ---------------------------------------------------------------- the group methods (GRPO, DAPO, Dr. GRPO)
LOSS_TYPES = ("grpo", "dapo", "dr_grpo")


def verifier_loss(logits: torch.Tensor, where: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A verifier's loss (an outcome or a process reward model): binary cross-entropy at the labelled positions.

        L = -(1/|W|) sum_{(b,t) in W} [y_bt log sigma(z_bt) + (1 - y_bt) log sigma(-z_bt)],   W = {where = True}

    logits z (B, T) from the scalar head at every position; where (B, T) bool marks the positions that carry a label
    (the EOS for the outcome; each step's last token too for a process verifier, Lightman et al. 2023); labels y
    (B, T) float in [0, 1]. log sigma is computed stably (F.logsigmoid), so logits of +-100 give a finite loss."""
    return F.binary_cross_entropy_with_logits(logits[where], labels[where])


def clipped_surrogate(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                      epsilon: float = 0.2, epsilon_high: float | None = None) -> torch.Tensor:
    """Per-token clipped surrogate objective (to MAXIMISE), the term inside PPO's and GRPO's mean.

        r = exp(logprobs - old_logprobs)        s = min( r * A, clip(r, 1 - epsilon, 1 + epsilon_high) * A )

    logprobs (with gradient), old_logprobs and advantages (detached): any one shape, or advantages
    (B, 1) against (B, N) tokens. epsilon_high (DAPO's clip-higher, 0.28) lets a rare token that earned
    a positive advantage grow further than a likely one may shrink; None means epsilon (symmetric).
    """
    high = epsilon if epsilon_high is None else epsilon_high
    ratio = torch.exp(logprobs - old_logprobs.detach())
    advantages = advantages.detach()
    return torch.min(ratio * advantages, torch.clamp(ratio, 1.0 - epsilon, 1.0 + high) * advantages)


def aggregate_token_losses(per_token: torch.Tensor, mask: torch.Tensor, loss_type: str,
                           max_completion_length: int | None = None,
                           num_items: torch.Tensor | float | None = None) -> torch.Tensor:
    """One scalar from per-token losses (B, N) on the tokens where mask (B, N) is True.

        grpo:    1/B sum_b [ 1/|y_b| sum_t l_bt ]        each response weighs the same, whatever its length
        dapo:    1/sum_b |y_b| sum_{b,t} l_bt            each token weighs the same (TRL's default)
        dr_grpo: 1/(B * L_max) sum_{b,t} l_bt            a constant: no length enters the weights

    |y_b| = mask[b].sum() (tokens that count: not padding, and later not a tool's output); L_max =
    max_completion_length. With "grpo" a 4-token response gives each token weight 1/4 and a 7-token one
    1/7, so with a negative advantage a long wrong answer is punished less per token: wrong answers
    may grow longer (Liu et al. 2025). A row with no counted token contributes 0. num_items: the "dapo"
    denominator in place of sum_b |y_b| (on several ranks: the global token count / the number of ranks, so that
    DDP's average of the ranks' losses is the global token mean; distributed.py).
    """
    if per_token.shape != mask.shape:
        raise ValueError(f"per_token {tuple(per_token.shape)} and mask {tuple(mask.shape)} must both be (B, N)")
    m = mask.to(per_token.dtype)
    summed = per_token * m
    if loss_type == "grpo":
        return (summed.sum(1) / m.sum(1).clamp(min=1)).mean()
    if loss_type == "dapo":
        return summed.sum() / (m.sum().clamp(min=1) if num_items is None else num_items)
    if loss_type == "dr_grpo":
        if max_completion_length is None or max_completion_length < 1:
            raise ValueError("loss_type 'dr_grpo' divides by B * max_completion_length: pass max_completion_length >= 1")
        return summed.sum() / (per_token.size(0) * max_completion_length)
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


def grpo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              loss_type: str = "dapo", epsilon: float = 0.2, epsilon_high: float | None = None,
              max_completion_length: int | None = None, ref_logprobs: torch.Tensor | None = None,
              beta: float = 0.0, num_items: torch.Tensor | float | None = None) -> torch.Tensor:
    """The GRPO family's loss, to minimise: the clipped surrogate with one advantage per response,
    plus (if beta > 0) the k3 KL to the reference in the loss (not in the reward), aggregated by loss_type.

        l_bt = -clipped_surrogate(logp_bt, old_bt, A_b) + beta * k3(logp_bt, ref_bt)      L = aggregate(l, mask)

    logprobs (B, N) with gradient; old_logprobs, ref_logprobs (B, N) and advantages (B,) constants;
    mask (B, N) bool: the tokens the policy sampled and that count (see aggregate_token_losses, and num_items there).
    """
    per_token = -clipped_surrogate(logprobs, old_logprobs, advantages.detach()[:, None], epsilon, epsilon_high)
    if beta:
        if ref_logprobs is None:
            raise ValueError("beta > 0 needs ref_logprobs (the reference model's log-probs of the same tokens)")
        per_token = per_token + beta * kl_k3(logprobs, ref_logprobs.detach())
    return aggregate_token_losses(per_token, mask, loss_type, max_completion_length, num_items)


# ---------------------------------------------------------------- DPO and friends (notebook 13)
def dpo_logits(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
               ref_rejected: torch.Tensor) -> torch.Tensor:
    """h = [log pi(y_w) - log pi_ref(y_w)] - [log pi(y_l) - log pi_ref(y_l)], per pair.

    All four (B,): log-probs of whole responses, SUMMED over their tokens (EOS included, prompt and
    padding not), y_w the chosen and y_l the rejected response. The reference's are constants
    (detached here: they were computed once, before training, or under no_grad).
    beta * h is the difference of DPO's implicit rewards r(x, y) = beta log pi(y|x) / pi_ref(y|x).
    """
    return (policy_chosen - ref_chosen.detach()) - (policy_rejected - ref_rejected.detach())


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1, label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO (Rafailov et al. 2023), TRL loss_type "sigmoid"; with label_smoothing > 0, conservative DPO (cDPO).

        L = -mean_b [ (1 - eps) log sigma(beta h_b) + eps log sigma(-beta h_b) ],   h = dpo_logits(...)

    Bradley-Terry's negative log-likelihood of the labels with the implicit reward beta log pi/pi_ref
    in place of a reward model. eps = label_smoothing is the assumed probability that a label is flipped
    (Mitchell's cDPO note): the loss is then minimised at a finite margin, sigma(beta h) = 1 - eps, instead
    of pushing h to infinity. At the start (pi = pi_ref) h = 0 and L = log 2.
    Inputs (B,) summed response log-probs (see dpo_logits); returns a scalar. F.logsigmoid stays exact
    at margins of +-100 where log(sigmoid(x)) would give log(0) = -inf.
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing is the label-flip rate, in [0, 0.5); got {label_smoothing}")
    z = beta * dpo_logits(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return -((1 - label_smoothing) * F.logsigmoid(z) + label_smoothing * F.logsigmoid(-z)).mean()


def ipo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """IPO (Azar et al. 2023), TRL loss_type "ipo": a squared loss that pulls the margin to 1/(2 beta).

        L = mean_b ( h_b - 1 / (2 beta) )^2,   h = dpo_logits(...) (log-probs summed, as in the paper;
                                                 TRL divides each side by its length first)

    Where DPO's loss keeps falling as h grows (so deterministic preferences drive pi(y_l) to 0 whatever
    beta is), IPO's minimum is at a finite margin, and beta sets how far the policy may move.
    Inputs (B,) summed response log-probs; returns a scalar.
    """
    h = dpo_logits(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return ((h - 1 / (2 * beta)) ** 2).mean()


def kto_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, desirable: torch.Tensor, kl: torch.Tensor | float,
             beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> torch.Tensor:
    """KTO (Ethayarajh et al. 2024), TRL's KTOTrainer: one response at a time, a thumb up or down, no pairs.

        r   = log pi(y|x) - log pi_ref(y|x)
        L_y = lambda_D (1 - sigma(beta (r - z0)))   if y is desirable (thumb up)
              lambda_U (1 - sigma(beta (z0 - r)))   if y is undesirable (thumb down)
        L   = mean_y L_y

    policy_logps, ref_logps (B,) summed response log-probs; desirable (B,) bool; kl = z0, the reference
    point: an estimate of KL(pi || pi_ref) (TRL: the mean r of mismatched prompt/response pairs), treated
    as a constant and clamped at >= 0. Returns a scalar. Each term is bounded (in [0, lambda]), so no
    single response can dominate, and a desirable response gains only by beating the policy's average drift.
    """
    if desirable.dtype != torch.bool:
        raise TypeError(f"desirable must be a bool tensor (True = thumb up), got {desirable.dtype}")
    z0 = torch.as_tensor(kl, dtype=policy_logps.dtype, device=policy_logps.device).detach().clamp(min=0)
    r = policy_logps - ref_logps.detach()
    up = desirable_weight * (1 - torch.sigmoid(beta * (r - z0)))
    down = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - r)))
    return torch.where(desirable, up, down).mean()
