"""DPO and friends as a plain loop: preference pairs in, a policy out, no reward model and no sampling.

    train_dpo(policy, pairs, DPOConfig(beta=0.1))          # offline DPO on labelled pairs
    online_dpo(policy, prompts, gold_fn, DPOConfig(), rounds=4, pairs_per_round=500)

The losses are in losses.py (dpo_loss, ipo_loss, kto_loss); this file feeds them batches of summed
response log-probs and logs TRL's metrics. The reference's log-probs of every pair are computed once,
before training (TRL's `precompute_ref_log_probs`): the frozen reference then costs one forward pass per
response for the whole run instead of one per response per epoch. `eval_every` samples from the policy
every so often and records the gold reward and KL(pi || pi_ref) on held-out prompts, so that a run
traces a curve in the (KL, gold) plane.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .data import encode_pairs
from .logprobs import response_mask, sequence_logprobs, text_logprobs
from .losses import dpo_loss, ipo_loss, kto_loss
from .sampling import sample, sample_preference_pairs
from .tokenizer import TOKENIZER
from .train import make_optimizer, optimizer_step
from .utils import FRACTION, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, Rule, check_settings, optional

LOSS_TYPES = ("sigmoid", "ipo", "kto_pair")


@dataclass(frozen=True)
class DPOConfig:
    """Hyper-parameters of train_dpo, TRL's DPOConfig names where TRL has one.

    beta: the KL-constraint strength of the implicit reward beta log pi/pi_ref (TRL's default 0.1).
    loss_type: "sigmoid" (DPO; with label_smoothing > 0, cDPO), "ipo", or "kto_pair" (KTO on the pairs'
    two sides: chosen = thumb up, rejected = thumb down; z0 from the batch, see pair_loss). "kto_pair" is this
    package's own: TRL had a loss type of that name and removed it in 2024 (its KTO is KTOTrainer, here train_kto).
    label_smoothing: cDPO's assumed label-flip rate eps (TRL now sends this to its "robust" loss; here it
    is Mitchell's cDPO). precompute_ref_log_probs: the reference's log-probs once, before training.
    rpo_alpha: weight of an SFT term on the chosen responses (RPO, Pang et al. 2024; TRL's rpo_alpha); None for
    none. Here the NLL is averaged over each response's tokens, then over the batch's responses; TRL averages over all
    the batch's tokens together, which weighs long responses more when lengths differ. Defaults: tuned on reviews-pairs from reviews-sft (see the reviews-dpo recipe).
    """
    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    precompute_ref_log_probs: bool = True
    rpo_alpha: float | None = None
    learning_rate: float = 5e-5
    batch_size: int = 32                # pairs per step
    steps: int = 125                    # one epoch of the 4000 reviews-pairs
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 0                 # steps between evaluations (0: none); also at the start and the end
    eval_max_new_tokens: int = 64       # as PPO samples, so KLs are comparable

    RULES = {"beta": POSITIVE, "label_smoothing": Rule(lambda x: FRACTION.accepts(x) and x < 0.5, "a number in [0, 0.5)"),
             "rpo_alpha": optional(NON_NEGATIVE), "learning_rate": POSITIVE, "batch_size": POSITIVE_INT,
             "steps": POSITIVE_INT, "grad_clip": POSITIVE, "eval_every": NON_NEGATIVE_INT,
             "eval_max_new_tokens": POSITIVE_INT}

    def __post_init__(self):
        check_settings(type(self).__name__, self, self.RULES)
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if self.label_smoothing and self.loss_type != "sigmoid":
            raise ValueError("label_smoothing (cDPO) applies to loss_type 'sigmoid' only")


# ---------------------------------------------------------------- data
def encode_preference_pairs(pairs: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs {prompt, chosen, rejected} -> (chosen tokens, chosen mask, rejected tokens, rejected mask),
    each (B, T) right-padded "BOS prompt response EOS PAD...", masks True on the response tokens and EOS."""
    if not pairs or not all({"prompt", "chosen", "rejected"} <= set(p) for p in pairs):
        raise ValueError("pairs must be a non-empty list of dicts with 'prompt', 'chosen' and 'rejected' texts "
                         "(e.g. zoo.load_pairs('reviews-pairs')['train'])")
    out = []
    for side in ("chosen", "rejected"):
        tokens, prompt_lengths = encode_pairs([(p["prompt"], p[side]) for p in pairs])
        out += [tokens, response_mask(tokens, prompt_lengths)]
    return tuple(out)


def reference_logprobs(reference, pairs: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) float32 log pi_ref(chosen | prompt) and log pi_ref(rejected | prompt): computed once, no gradient.
    Pairs that carry them already (TRL's columns "ref_chosen_logps", "ref_rejected_logps", see
    with_reference_logprobs) are not recomputed."""
    if all("ref_chosen_logps" in p and "ref_rejected_logps" in p for p in pairs):
        return tuple(torch.tensor([p[f"ref_{side}_logps"] for p in pairs]) for side in ("chosen", "rejected"))
    prompts = [p["prompt"] for p in pairs]
    return tuple(text_logprobs(reference, prompts, [p[side] for p in pairs]).float() for side in ("chosen", "rejected"))


def with_reference_logprobs(reference, pairs: list[dict]) -> list[dict]:
    """Copies of the pairs with the reference's summed log-probs added as "ref_chosen_logps" and
    "ref_rejected_logps" (TRL's precompute_ref_log_probs columns), for several runs from one reference."""
    chosen, rejected = reference_logprobs(reference, pairs)
    return [{**p, "ref_chosen_logps": float(c), "ref_rejected_logps": float(r)}
            for p, c, r in zip(pairs, chosen.tolist(), rejected.tolist())]


def _batch(tokens: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of a right-padded set, cut to their own longest row (less padding, same log-probs)."""
    width = int((tokens[rows] != TOKENIZER.pad_id).sum(1).max())
    return tokens[rows, :width].to(device), mask[rows, :width].to(device)


def length_grouped_batches(lengths: torch.Tensor, batch_size: int, generator: torch.Generator,
                           megabatch: int = 50) -> list[torch.Tensor]:
    """One epoch of batches of row indices, rows of similar length together (HF's group_by_length).

    Shuffle all rows, cut them into megabatches of megabatch * batch_size rows, sort each megabatch by
    length, cut it into batches and shuffle the order of all the batches. A batch is padded to its longest
    row, so on reviews-pairs (responses of 5 to 130 characters) this halves the tokens a step computes,
    while every batch is still a random draw from a random megabatch."""
    order = torch.randperm(len(lengths), generator=generator)
    batches = []
    for chunk in order.split(megabatch * batch_size):
        chunk = chunk[torch.argsort(lengths[chunk], descending=True, stable=True)]
        batches += list(chunk.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def _stack(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Two right-padded (B, T_a), (B, T_b) -> (2B, max T), so chosen and rejected share one forward pass."""
    width = max(a.size(1), b.size(1))
    fill = TOKENIZER.pad_id if a.dtype == torch.long else False         # tokens get PAD, masks False
    return torch.cat([torch.nn.functional.pad(x, (0, width - x.size(1)), value=fill) for x in (a, b)])


# ---------------------------------------------------------------- the loss of one batch
def pair_loss(config: DPOConfig, policy_chosen, policy_rejected, ref_chosen, ref_rejected) -> torch.Tensor:
    """The loss_type's loss on a batch of (B,) summed log-probs (without the SFT term).

    kto_pair: KTO with each pair's chosen as a thumb up and its rejected as a thumb down; the reference point
    z0 is the batch's mean log-ratio over all its responses (detached, clamped >= 0), a stand-in for the
    mismatched-pair estimate of TRL's KTOTrainer."""
    if config.loss_type == "sigmoid":
        return dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, config.beta, config.label_smoothing)
    if config.loss_type == "ipo":
        return ipo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, config.beta)
    logps, refs = torch.cat([policy_chosen, policy_rejected]), torch.cat([ref_chosen, ref_rejected])
    desirable = torch.arange(len(logps), device=logps.device) < len(policy_chosen)
    return kto_loss(logps, refs, desirable, (logps - refs).mean().detach(), config.beta)


def dpo_metrics(config: DPOConfig, policy_chosen, policy_rejected, ref_chosen, ref_rejected, loss: torch.Tensor) -> dict:
    """TRL's DPO metrics of a batch, as floats: rewards/chosen and rewards/rejected (the mean implicit rewards
    beta (log pi - log pi_ref)), rewards/accuracies (share of pairs with chosen > rejected), rewards/margins,
    logps/chosen, logps/rejected (mean summed log-probs under the policy) and loss."""
    with torch.no_grad():
        chosen = config.beta * (policy_chosen - ref_chosen)
        rejected = config.beta * (policy_rejected - ref_rejected)
        return {"rewards/chosen": float(chosen.mean()), "rewards/rejected": float(rejected.mean()),
                "rewards/accuracies": float((chosen > rejected).float().mean()),
                "rewards/margins": float((chosen - rejected).mean()),
                "logps/chosen": float(policy_chosen.mean()), "logps/rejected": float(policy_rejected.mean()),
                "loss": float(loss)}


# ---------------------------------------------------------------- evaluation along a run
@torch.no_grad()
def gold_and_kl(policy, reference, prompts: list[str], gold_fn, *, max_new_tokens: int = 64, seed: int = 0) -> dict:
    """One sample per prompt at temperature 1: mean gold reward, KL(pi || pi_ref) and response length.

        KL = mean over prompts of sum_t [log pi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t)],   y ~ pi

    the sequence-level k1 estimate PPO logs as `kl` (rl.sequence_metrics), on the same token budget.
    Length: response characters (EOS not counted). gold_se, kl_se: standard errors of the two means over
    prompts. Deterministic in seed."""
    samples = sample(policy, prompts, max_new_tokens=max_new_tokens, seed=seed)
    responses = [s.response for s in samples]
    finished = torch.tensor([s.finished for s in samples])
    kl = text_logprobs(policy, prompts, responses, finished) - text_logprobs(reference, prompts, responses, finished)
    gold = torch.tensor([gold_fn(p, r) for p, r in zip(prompts, responses)], dtype=torch.float64)
    n = len(prompts) ** 0.5
    return {"gold": float(gold.mean()), "gold_se": float(gold.std() / n), "kl": float(kl.mean()),
            "kl_se": float(kl.std() / n), "length": sum(map(len, responses)) / len(responses),
            "finished": float(finished.float().mean())}


# ---------------------------------------------------------------- the trainer
def train_dpo(policy, pairs: list[dict], config: DPOConfig | None = None, *, reference=None, gold_fn=None,
              eval_prompts: list[str] | None = None, log=None) -> dict:
    """Train `policy` in place on preference pairs [{prompt, chosen, rejected}, ...] with config's loss.

    reference: the frozen pi_ref; None = a copy of the policy as it is now (TRL does the same). Each step
    takes a batch of up to config.batch_size pairs (length_grouped_batches, epoch after epoch), computes the
    policy's summed log-probs of chosen and rejected in one forward pass, the loss (pair_loss, plus rpo_alpha
    times the chosen responses' per-token NLL) and one clipped AdamW step.
    Returns a history of per-step lists under TRL's names (see dpo_metrics) plus "nll" (the chosen
    responses' per-token NLL); with eval_every, gold_fn and eval_prompts also "eval/step", "eval/gold",
    "eval/kl", "eval/length", "eval/finished" (see gold_and_kl), and "config".
    """
    config = config or DPOConfig()
    device = next(policy.parameters()).device
    if reference is None:
        reference = copy.deepcopy(policy).eval()
    evaluate = config.eval_every > 0 and gold_fn is not None and eval_prompts
    if config.eval_every > 0 and not evaluate:
        raise ValueError("eval_every needs gold_fn and eval_prompts (held-out prompts to sample from)")
    chosen_tokens, chosen_mask, rejected_tokens, rejected_mask = encode_preference_pairs(pairs)
    if config.precompute_ref_log_probs:
        ref_chosen_all, ref_rejected_all = reference_logprobs(reference, pairs)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = make_optimizer(policy, config.learning_rate)
    history: dict[str, list] = {}

    def run_eval(step: int) -> None:
        policy.eval()
        metrics = gold_and_kl(policy, reference, eval_prompts, gold_fn, max_new_tokens=config.eval_max_new_tokens,
                              seed=config.seed + 1000)
        policy.train()
        history.setdefault("eval/step", []).append(step)
        for k, v in metrics.items():
            history.setdefault(f"eval/{k}", []).append(v)
        if log:
            log(f"step {step}: gold {metrics['gold']:+.3f}, KL {metrics['kl']:.2f}, length {metrics['length']:.1f}")

    lengths = torch.maximum((chosen_tokens != TOKENIZER.pad_id).sum(1), (rejected_tokens != TOKENIZER.pad_id).sum(1))
    batches: list[torch.Tensor] = []
    policy.train()
    for step in range(config.steps):
        if evaluate and step % config.eval_every == 0:
            run_eval(step)
        if not batches:
            batches = length_grouped_batches(lengths, config.batch_size, generator)
        rows = batches.pop()
        c_tok, c_mask = _batch(chosen_tokens, chosen_mask, rows, device)
        r_tok, r_mask = _batch(rejected_tokens, rejected_mask, rows, device)
        logps = sequence_logprobs(policy, _stack(c_tok, r_tok), _stack(c_mask, r_mask))
        policy_chosen, policy_rejected = logps[:len(rows)], logps[len(rows):]
        if config.precompute_ref_log_probs:
            ref_chosen, ref_rejected = ref_chosen_all[rows].to(device), ref_rejected_all[rows].to(device)
        else:
            with torch.no_grad():
                ref = sequence_logprobs(reference, _stack(c_tok, r_tok), _stack(c_mask, r_mask))
            ref_chosen, ref_rejected = ref[:len(rows)], ref[len(rows):]
        loss = pair_loss(config, policy_chosen, policy_rejected, ref_chosen, ref_rejected)
        nll = -(policy_chosen / c_mask.sum(1)).mean()
        total = loss + config.rpo_alpha * nll if config.rpo_alpha else loss
        optimizer_step(policy, optimizer, total, step=step, grad_clip=config.grad_clip, what="DPO loss", settings=config)
        metrics = dpo_metrics(config, policy_chosen, policy_rejected, ref_chosen, ref_rejected, loss)
        metrics["nll"] = float(nll.detach())
        for k, v in metrics.items():
            history.setdefault(k, []).append(v)
    if evaluate:
        run_eval(config.steps)
    policy.eval()
    history["config"] = asdict(config)
    return history


def thumb(value, index: int) -> bool:
    """An example's "desirable" as a bool: True/False, or the text "true"/"false" (a CSV or hand-written JSON).
    bool() would read any other text, "false" and "no" included, as a thumb up."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"examples[{index}]['desirable'] is {value!r}: it must be True or False (or the text 'true' or "
                     "'false'); ratings.thumbs makes such examples from stars")


def train_kto(policy, examples: list[dict], config: DPOConfig | None = None, *, reference=None) -> dict:
    """KTO on unpaired thumbs [{prompt, response, desirable}] (TRL's KTOTrainer on an unpaired dataset).

    Each step takes config.batch_size random examples, their summed log-probs under the policy (one forward
    pass) and the reference's (computed once, before training), and one clipped AdamW step on losses.kto_loss
    with config.beta. The reference point z0 is the batch's mean log-ratio, detached and clamped >= 0 (the
    stand-in for TRL's estimate, which pairs each prompt with another example's response: the batch's own pairs
    here, so z0 moves with what the batch holds). config.loss_type is not read, and desirable and undesirable
    examples weigh the same (TRL's desirable_weight = undesirable_weight = 1). Returns per-step lists: loss, kl (z0), rewards/chosen and rewards/rejected (mean beta * log-ratio of
    the batch's thumbs up and down; NaN when the batch has none), plus "config".
    """
    config = config or DPOConfig()
    if not examples or not all({"prompt", "response", "desirable"} <= set(e) for e in examples):
        raise ValueError("examples must be a non-empty list of dicts with 'prompt', 'response' and 'desirable' "
                         "(see ratings.thumbs)")
    device = next(policy.parameters()).device
    if reference is None:
        reference = copy.deepcopy(policy).eval()
    prompts, responses = [e["prompt"] for e in examples], [e["response"] for e in examples]
    tokens, prompt_lengths = encode_pairs(list(zip(prompts, responses)))
    mask = response_mask(tokens, prompt_lengths)
    desirable_all = torch.tensor([thumb(e["desirable"], i) for i, e in enumerate(examples)])
    ref_all = text_logprobs(reference, prompts, responses).float()
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = make_optimizer(policy, config.learning_rate)
    history: dict[str, list] = {}
    policy.train()
    for step in range(config.steps):
        rows = torch.randperm(len(examples), generator=generator)[:config.batch_size]
        tok, msk = _batch(tokens, mask, rows, device)
        logps = sequence_logprobs(policy, tok, msk)
        ref, desirable = ref_all[rows].to(device), desirable_all[rows].to(device)
        log_ratio = logps - ref
        z0 = log_ratio.mean().detach().clamp(min=0)
        loss = kto_loss(logps, ref, desirable, z0, config.beta)
        optimizer_step(policy, optimizer, loss, step=step, grad_clip=config.grad_clip, what="KTO loss", settings=config)
        rewards = config.beta * log_ratio.detach()
        history.setdefault("loss", []).append(float(loss.detach()))
        history.setdefault("kl", []).append(float(z0))
        for name, rows_of in (("rewards/chosen", desirable), ("rewards/rejected", ~desirable)):
            history.setdefault(name, []).append(float(rewards[rows_of].mean()) if rows_of.any() else float("nan"))
    policy.eval()
    history["config"] = asdict(config)
    return history


def implicit_reward(policy, reference, prompts: list[str], responses: list[str], beta: float) -> torch.Tensor:
    """(N,) the reward a DPO/KTO policy defines: beta * (log pi(y|x) - log pi_ref(y|x)), summed log-probs."""
    return beta * (text_logprobs(policy, prompts, responses) - text_logprobs(reference, prompts, responses))


def label_noise_rate(pairs: list[dict], temperature: float) -> float:
    """The labels' known flip rate: mean over pairs of P(the human prefers the response with the lower gold)
    = sigma(-|g_a - g_b| / T) under Bradley-Terry at temperature T. cDPO's natural label_smoothing."""
    diff = torch.tensor([abs(p["gold_chosen"] - p["gold_rejected"]) for p in pairs], dtype=torch.float64)
    return float(torch.sigmoid(-diff / temperature).mean())


def online_dpo(policy, prompts, gold_fn, config: DPOConfig | None = None, *, rounds: int, pairs_per_round: int,
               reference=None, eval_prompts: list[str] | None = None, seed: int = 0, log=None) -> dict:
    """Online DPO (Guo et al. 2024): each round, sample two responses per prompt from the CURRENT policy, have
    the noisy gold human label them (sampling.sample_preference_pairs), and take config.steps DPO steps on
    them, against the fixed reference (the starting policy unless given). prompts(n, seed) -> n prompt texts.

    Returns {"rounds": [{round, labels (so far), eval metrics (gold_and_kl) after the round}], "steps": the
    concatenated per-step TRL metrics}. Labels used: rounds * pairs_per_round.
    """
    config = config or DPOConfig()
    reference = reference if reference is not None else copy.deepcopy(policy).eval()
    out = {"rounds": [], "steps": {}}
    for k in range(rounds):
        pairs = sample_preference_pairs(policy, prompts(pairs_per_round, seed=seed * 1000 + 100 + k), gold_fn,
                                        seed=seed * 1000 + 200 + k)
        history = train_dpo(policy, pairs, DPOConfig(**{**asdict(config), "seed": config.seed + k}), reference=reference)
        for key, v in history.items():
            if key != "config":
                out["steps"].setdefault(key, []).extend(v)
        row = {"round": k + 1, "labels": (k + 1) * pairs_per_round}
        if eval_prompts:
            row.update(gold_and_kl(policy, reference, eval_prompts, gold_fn, max_new_tokens=config.eval_max_new_tokens,
                                   seed=seed + 1000))
        out["rounds"].append(row)
        if log:
            log(", ".join(f"{k_}: {v:.3f}" if isinstance(v, float) else f"{k_}: {v}" for k_, v in row.items()))
    return out


# ---------------------------------------------------------------- where DPO goes wrong, exactly
def preference_bandit(config: DPOConfig, *, n_responses: int = 3, steps: int = 500, lr: float = 0.1) -> dict:
    """A policy over n_responses answers to one prompt, pi = softmax(theta), pi_ref uniform, and one
    preference that never varies: y_0 beats y_1 (deterministic labels). Trains theta with Adam on config's loss.

    h = log pi(y_0)/pi_ref(y_0) - log pi(y_1)/pi_ref(y_1) = theta_0 - theta_1 (the normaliser cancels), so
    DPO's loss -log sigma(beta h) falls forever as h grows: pi(y_1) -> 0 whatever beta (Azar et al. 2023).
    IPO's (h - 1/(2 beta))^2 stops at h = 1/(2 beta). Returns per-step lists "margin" (h), "kl"
    (KL(pi || pi_ref), exact) and the final "probs"."""
    theta = torch.zeros(n_responses, dtype=torch.float64, requires_grad=True)
    ref = torch.full((n_responses,), -torch.log(torch.tensor(float(n_responses), dtype=torch.float64)))
    optimizer = torch.optim.Adam([theta], lr=lr)
    history = {"margin": [], "kl": []}
    for _ in range(steps):
        logp = torch.log_softmax(theta, 0)
        loss = pair_loss(config, logp[:1], logp[1:2], ref[:1], ref[1:2])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            logp = torch.log_softmax(theta, 0)
            history["margin"].append(float(logp[0] - logp[1]))
            history["kl"].append(float((logp.exp() * (logp - ref)).sum()))
    history["probs"] = torch.softmax(theta.detach(), 0).tolist()
    return history
