"""The reward model: a GPT trunk and a scalar head read at the last real token, trained with Bradley-Terry.

    r(x, y) = w . h_last + b        h_last = the trunk's hidden state at the last real token of x + y

The last real token has attended to the whole prompt and response, so its hidden state can summarise
both. Which column that is depends on the padding: left-padded rows (generation) end in the last
column, right-padded rows (training data) end at column (number of real tokens - 1).
`logprobs.last_token_index` finds it from the attention mask either way; reading the wrong column is a classic silent bug.

Shapes: B batch, T sequence length, d = d_model.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .data import encode_pairs
from .logprobs import gather_last
from .losses import bradley_terry_loss
from .model import GPT, GPTConfig, ScalarHead
from .preferences import bt_probability
from .sampling import one_score_per_row
from .tokenizer import TOKENIZER
from .train import check_train_settings, cosine_lr, make_optimizer, optimizer_step


# ---------------------------------------------------------------- the model
class RewardModel(nn.Module):
    """A GPT trunk with a ScalarHead: (tokens (B, T), attention_mask (B, T)) -> rewards (B,).

    The head reads the final hidden state at each row's last real token. The trunk keeps the GPT's
    tied embedding (it is also the input embedding); its LM logits are simply never computed.

    Normalisation (buffers, saved with the weights): r = scale * r_raw + bias. Bradley-Terry only
    fixes reward differences, so the offset and scale are free; `normalize_` sets them so that
    rewards on reference-policy samples have mean 0 and std 1, as in Ziegler et al. (2019). Then a
    KL coefficient or a reward threshold means the same thing for every reward model.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.gpt = GPT(config)
        self.head = ScalarHead(config.d_model)   # w ~ N(0, 1/(d + 1)), b = 0: rewards start at unit scale
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("bias", torch.zeros(()))

    @classmethod
    def from_policy(cls, gpt: GPT) -> "RewardModel":
        """A reward model whose trunk starts as a copy of `gpt` (InstructGPT starts the RM from the SFT
        model: it already reads the task's text, so fewer preference pairs are needed)."""
        rm = cls(GPTConfig.from_dict(gpt.config.to_dict()))
        rm.gpt.load_state_dict(gpt.state_dict())
        return rm

    def raw_reward(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T), (B, T) -> (B,) the head's output at the last real token, before normalisation."""
        return gather_last(self.head(self.gpt.hidden_states(tokens, attention_mask)), attention_mask)

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids, (B, T) mask (True = real token; any padding side) -> (B,) rewards."""
        return self.scale * self.raw_reward(tokens, attention_mask) + self.bias


@torch.no_grad()
def normalize_(rm: RewardModel, reference_tokens: torch.Tensor, reference_mask: torch.Tensor,
               batch_size: int = 256) -> RewardModel:
    """Set rm.scale, rm.bias so that rm's rewards on the reference samples have mean 0 and std 1.

        scale = 1 / std(r_raw)        bias = -mean(r_raw) / std(r_raw)

    reference_tokens, reference_mask (N, T): samples of the reference (SFT) policy, prompt + response.
    Modifies rm in place and returns it. Normalise after training: the bias cancels in the
    Bradley-Terry loss, but the scale multiplies every margin it sees.
    """
    if len(reference_tokens) < 2:
        raise ValueError("normalize_ needs at least 2 reference samples to measure a standard deviation")
    device = next(rm.parameters()).device
    raw = torch.cat([rm.raw_reward(reference_tokens[i:i + batch_size].to(device), reference_mask[i:i + batch_size].to(device))
                     for i in range(0, len(reference_tokens), batch_size)])
    std, mean = torch.std_mean(raw)
    rm.scale.fill_(1 / std)
    rm.bias.fill_(-mean / std)
    return rm


# ---------------------------------------------------------------- text in, rewards out
def encode_responses(prompts: list[str], responses: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts -> tokens (N, T) long, rows "BOS prompt response EOS" RIGHT-padded, and attention_mask (N, T).

    Right padding is fine here although generation pads on the left: the model's positions skip
    padding and the reward is read at the last real token wherever it is. Keeping EOS means the
    reward is read where the response says "I am done", as for finished samples in RL.
    """
    tokens, _ = encode_pairs(list(zip(prompts, responses)), TOKENIZER)
    return tokens, tokens != TOKENIZER.pad_id


@torch.no_grad()
def score(rm: RewardModel, prompts: list[str], responses: list[str], batch_size: int = 256) -> torch.Tensor:
    """Rewards (N,) of N (prompt, response) texts, in their order, batch_size rows at a time, no gradients.

    Rows are batched by length: a batch is padded to its longest row, and sorting first halves the
    padding (and the time) on a pool of samples. The reward of a row does not depend on its batch.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses: pass one prompt per response")
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(responses[i]))
    device = next(rm.parameters()).device
    rewards = torch.empty(len(prompts))
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        tokens, mask = encode_responses([prompts[i] for i in rows], [responses[i] for i in rows])
        rewards[rows] = one_score_per_row(rm(tokens.to(device), mask.to(device)), len(rows)).float().cpu()
    return rewards


# ---------------------------------------------------------------- metrics
def pairwise_accuracy(reward_chosen: torch.Tensor, reward_rejected: torch.Tensor) -> float:
    """Share of pairs (B,) with r_chosen > r_rejected; a tie counts half (a coin flip would pick it)."""
    return float(((reward_chosen > reward_rejected).double() + 0.5 * (reward_chosen == reward_rejected).double()).mean())


def gold_order_agreement(reward_a: torch.Tensor, reward_b: torch.Tensor, gold_a: torch.Tensor,
                         gold_b: torch.Tensor) -> float:
    """Share of pairs the model orders like the noiseless gold reward; all inputs (N,).

        mean over pairs with g_a != g_b of  1{(r_a - r_b)(g_a - g_b) > 0} + 1/2 1{r_a = r_b}

    Pairs with equal gold have no right order and are left out (nan if that is all of them); a reward tie counts
    half. Unlike accuracy on noisy labels, this can reach 1, and it needs no labels: only the (hidden) gold rewards.
    """
    gold_a, gold_b = torch.as_tensor(gold_a, dtype=torch.float64), torch.as_tensor(gold_b, dtype=torch.float64)
    untied = gold_a != gold_b
    if not untied.any():
        return float("nan")           # no pair has a right order
    better_a = gold_a > gold_b
    return pairwise_accuracy(torch.where(better_a, reward_a, reward_b)[untied],
                             torch.where(better_a, reward_b, reward_a)[untied])


def as_triples(pairs) -> list[tuple[str, str, str]]:
    """Labelled pairs as (prompt, chosen, rejected) triples; takes triples or the dicts of
    preferences.label_pairs ({prompt, chosen, rejected, ...})."""
    return [(p["prompt"], p["chosen"], p["rejected"]) if isinstance(p, dict) else tuple(p) for p in pairs]


def score_pairs(rm: RewardModel, pairs, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(reward_chosen (N,), reward_rejected (N,)) of N labelled pairs (triples or dicts)."""
    prompts, chosen, rejected = (list(column) for column in zip(*as_triples(pairs)))
    return score(rm, prompts, chosen, batch_size), score(rm, prompts, rejected, batch_size)


def preference_accuracy(rm: RewardModel, pairs, batch_size: int = 256) -> float:
    """Share of labelled pairs (triples or dicts) that rm ranks like the label (ties count half)."""
    return pairwise_accuracy(*score_pairs(rm, pairs, batch_size))


def expected_accuracy(reward_a: torch.Tensor, reward_b: torch.Tensor, p_a: torch.Tensor) -> float:
    """The accuracy a reward model would get on average over every possible draw of the noisy labels.

        E[acc] = mean_i [ 1{r_a > r_b} p_a + 1{r_a < r_b} (1 - p_a) + 1{r_a = r_b} / 2 ]

    reward_a, reward_b (N,): the model's rewards of the two responses of each pair; p_a (N,): the
    probability that the human prefers a (preferences.bt_probability of the gold rewards). On one draw
    of labels the accuracy scatters around this by about sqrt(acc (1 - acc) / N); the expectation
    removes that noise, so it can be compared with the Bayes ceiling mean max(p, 1 - p) directly.
    """
    pred = (reward_a > reward_b).double() + 0.5 * (reward_a == reward_b).double()
    p_a = torch.as_tensor(p_a, dtype=torch.float64)
    return float((pred * p_a + (1 - pred) * (1 - p_a)).mean())


def preference_metrics(reward_chosen: torch.Tensor, reward_rejected: torch.Tensor, pairs: list[dict],
                       temperature: float) -> dict:
    """How well rewards (N,), (N,) of the chosen and rejected responses rank N labelled pairs (dicts with
    gold_chosen and gold_rejected, as made by preferences.label_pairs).

    Returns {"accuracy": on these labels, "expected_accuracy": over all label draws,
             "bayes_ceiling": mean max(p, 1 - p), "ratio": expected_accuracy / bayes_ceiling,
             "gold_order_accuracy": agreement with the noiseless gold order (gold ties left out)}.
    """
    gold_c = torch.tensor([p["gold_chosen"] for p in pairs], dtype=torch.float64)
    gold_r = torch.tensor([p["gold_rejected"] for p in pairs], dtype=torch.float64)
    p_chosen = bt_probability(gold_c, gold_r, temperature)
    expected = expected_accuracy(reward_chosen, reward_rejected, p_chosen)
    ceiling = float(torch.maximum(p_chosen, 1 - p_chosen).mean())
    gold_order = gold_order_agreement(reward_chosen, reward_rejected, gold_c, gold_r)
    return {"accuracy": pairwise_accuracy(reward_chosen, reward_rejected), "expected_accuracy": expected,
            "bayes_ceiling": ceiling, "ratio": expected / ceiling, "gold_order_accuracy": gold_order}


def evaluate_reward_model(rm: RewardModel, pairs: list[dict], temperature: float, batch_size: int = 256) -> dict:
    """preference_metrics of rm's rewards on held-out labelled pairs (dicts with gold rewards)."""
    return preference_metrics(*score_pairs(rm, pairs, batch_size), pairs, temperature)


def calibration_bins(pred_probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 10):
    """A reliability diagram's points: how often "P = p" events happen, per bin of p.

    pred_probs (N,): predicted P(a > b), e.g. sigma(r_a - r_b); labels (N,): 1 if a was preferred.
    The bins split [0, 1] into n_bins equal widths (p = 1 falls in the last). Returns three (n_bins,)
    tensors: bin_mean_pred (mean p in the bin), bin_freq (share of labels 1) and bin_count. A
    calibrated model has bin_freq ~ bin_mean_pred. Empty bins have count 0 and NaN means (not plotted).
    """
    p = pred_probs.detach().double().flatten()
    bins = (p * n_bins).long().clamp(0, n_bins - 1)
    count = torch.bincount(bins, minlength=n_bins)
    mean_pred = torch.bincount(bins, weights=p, minlength=n_bins) / count
    freq = torch.bincount(bins, weights=labels.detach().double().flatten(), minlength=n_bins) / count
    return mean_pred, freq, count


# ---------------------------------------------------------------- training
def _epoch_batches(n: int, batch_size: int, generator: torch.Generator):
    """Endless minibatches of row indices; each epoch is a fresh permutation, so every pair is seen
    once per epoch (the last incomplete batch of an epoch is dropped)."""
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start:start + batch_size]


def reward_step(rm: RewardModel, optimizer: torch.optim.Optimizer, tokens: torch.Tensor,
                attention_mask: torch.Tensor, grad_clip: float, *, step: int = 0, settings=None) -> tuple[float, float]:
    """One Bradley-Terry update on a batch of B pairs, scored in ONE forward pass of 2B rows.

        r = rm(tokens, attention_mask)        r_chosen = r[:B], r_rejected = r[B:]
        L = -mean_b log sigma(r_chosen[b] - r_rejected[b])

    tokens, attention_mask (2B, T): rows 0..B-1 are the chosen responses, rows B..2B-1 the rejected ones of
    the same pairs, in the same order (any padding side: rm reads each row at its last real token). One pass
    instead of two halves the calls and gives both halves of a pair the same weights.
    Then zero_grad, backward, clip the gradient norm to grad_clip, step (train.optimizer_step, which stops
    on a non-finite loss and names `step` and, among `settings`, the likely cause).
    Returns (loss, accuracy on the batch) as Python floats: a loss kept as a tensor would keep its graph alive.
    """
    reward_chosen, reward_rejected = rm(tokens, attention_mask).chunk(2)
    loss = bradley_terry_loss(reward_chosen, reward_rejected)
    optimizer_step(rm, optimizer, loss, step=step, grad_clip=grad_clip, what="reward model loss", settings=settings)
    return loss.item(), pairwise_accuracy(reward_chosen.detach(), reward_rejected.detach())


def train_reward_model(rm: RewardModel, pairs, *, steps: int, batch_size: int = 32,
                       lr: float = 3e-4, warmup: int = 10, weight_decay: float = 0.1, grad_clip: float = 1.0,
                       eval_pairs=None, eval_every: int = 0, seed: int = 0,
                       progress: str | None = None) -> dict:
    """Fit rm to labelled pairs ((prompt, chosen, rejected) triples or dicts) with the Bradley-Terry loss.

    Each step takes batch_size pairs (epochs = steps * batch_size / len(pairs); InstructGPT trains one
    epoch, more over-fits) and makes one `reward_step` on them: chosen and rejected responses in ONE forward
    pass of 2B rows.
    AdamW with a cosine schedule, as in train.train_lm. eval_pairs, if given, are scored every
    eval_every steps (0: only at the end) and at the end. progress: a description to show a progress bar.
    Returns {"loss": [per step], "accuracy": [per step, on the batch], "lr": [per step],
             "eval": [(step, held-out preference accuracy), ...]}.
    """
    check_train_settings("train_reward_model", steps=steps, batch_size=batch_size, lr=lr, warmup=warmup,
                         weight_decay=weight_decay, grad_clip=grad_clip, eval_every=eval_every)
    prompts, chosen, rejected = (list(column) for column in zip(*as_triples(pairs)))
    tokens, mask = encode_responses(prompts + prompts, chosen + rejected)   # rows: N chosen, then N rejected
    device = next(rm.parameters()).device
    tokens, mask = tokens.to(device), mask.to(device)
    if tokens.size(1) > rm.config.context_length:
        raise ValueError(f"a pair has {tokens.size(1)} tokens but the reward model's context is "
                         f"{rm.config.context_length}: drop long responses or use a bigger context")
    n = len(pairs)
    batches = _epoch_batches(n, min(batch_size, n), torch.Generator().manual_seed(seed))
    optimizer = make_optimizer(rm, lr, weight_decay)
    history: dict = {"loss": [], "accuracy": [], "lr": [], "eval": []}
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, desc=progress)
    rm.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, min(warmup, steps))
        idx = next(batches)
        rows = torch.cat([idx, idx + n])
        width = int(mask[rows].sum(1).max())          # right-padded: drop the all-pad columns
        loss, accuracy = reward_step(rm, optimizer, tokens[rows, :width], mask[rows, :width], grad_clip, step=step,
                                     settings={"lr": lr, "grad_clip": grad_clip})
        history["loss"].append(loss)
        history["accuracy"].append(accuracy)
        history["lr"].append(optimizer.param_groups[0]["lr"])
        if bar is not None:
            bar.update(1)
        if eval_pairs is not None and ((eval_every and (step + 1) % eval_every == 0) or step + 1 == steps):
            rm.eval()
            history["eval"].append((step + 1, preference_accuracy(rm, eval_pairs)))
            rm.train()
    if bar is not None:
        bar.close()
    rm.eval()
    return history


# ---------------------------------------------------------------- from ratings instead of comparisons
def train_reward_regression(rm: RewardModel, examples: list[tuple[str, str]], targets, *, steps: int,
                            batch_size: int = 32, lr: float = 3e-4, warmup: int = 10, weight_decay: float = 0.1,
                            grad_clip: float = 1.0, seed: int = 0) -> dict:
    """Fit rm to scalar targets (stars, or stars normalised per user) by least squares:

        L = mean_b (r(x_b, y_b) - target_b)^2

    examples: [(prompt, response)]; targets: one number per example. Unlike Bradley-Terry, regression takes the
    raters' numbers at face value: a harsh rater's 2 and a lenient rater's 4 for the same reply are noise it must
    average away, and a rater who sees only some prompts shifts those prompts' rewards. AdamW with a cosine
    schedule, as in train_reward_model. Returns {"loss": [per step], "lr": [per step]}.
    """
    check_train_settings("train_reward_regression", steps=steps, batch_size=batch_size, lr=lr, warmup=warmup,
                         weight_decay=weight_decay, grad_clip=grad_clip)
    if len(examples) != len(targets) or not examples:
        raise ValueError(f"need one target per example and at least one example; got {len(examples)} examples and "
                         f"{len(targets)} targets")
    prompts, responses = (list(column) for column in zip(*examples))
    tokens, mask = encode_responses(prompts, responses)
    device = next(rm.parameters()).device
    tokens, mask = tokens.to(device), mask.to(device)
    y = torch.as_tensor(targets, dtype=torch.float32, device=device)
    if not torch.isfinite(y).all():
        raise ValueError("targets must be finite numbers")
    if tokens.size(1) > rm.config.context_length:
        raise ValueError(f"an example has {tokens.size(1)} tokens but the reward model's context is "
                         f"{rm.config.context_length}: drop long responses or use a bigger context")
    batches = _epoch_batches(len(examples), min(batch_size, len(examples)), torch.Generator().manual_seed(seed))
    optimizer = make_optimizer(rm, lr, weight_decay)
    history: dict = {"loss": [], "lr": []}
    rm.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, min(warmup, steps))
        idx = next(batches)
        width = int(mask[idx].sum(1).max())
        loss = (rm(tokens[idx, :width], mask[idx, :width]) - y[idx]).pow(2).mean()
        optimizer_step(rm, optimizer, loss, step=step, grad_clip=grad_clip, what="reward regression loss",
                       settings={"lr": lr, "grad_clip": grad_clip})
        history["loss"].append(loss.item())
        history["lr"].append(optimizer.param_groups[0]["lr"])
    rm.eval()
    return history
