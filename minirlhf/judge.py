"""RLAIF: an AI judge that reads a written principle and says which of two responses follows it better.

The judge is the course's GPT, fine-tuned once on a small budget of human comparisons, each made under
ONE principle (the gold human asked about one aspect of its taste). It reads

    principle: <principle>\\nreview: <topic>\\na: <response a>\\nb: <response b>\\nbetter:

and its verdict is the probability of the token "a" against "b" at the next position, as Lee et al.
(2023) read the log-probs of "1" and "2":

    p(a > b | principle) = softmax(logits[a], logits[b])[0] = sigma(logit_a - logit_b)

A constitution is a plain-text list of principles (`read_constitution`); each comparison samples one of
them, as Constitutional AI did (Bai et al. 2022), or sums the judge's log-odds over all of them.

Judges are biased: the verdict can depend on which response is shown first. Asking both orders and
averaging, p = 1/2 [p(a, b) + 1 - p(b, a)], removes the order effect (and pulls labels toward 1/2).
"""
from __future__ import annotations

import random
from pathlib import Path

import torch

from .generation import left_pad
from .model import GPT, extend_context
from .preferences import DEFAULT_TEMPERATURE, bayes_optimal_accuracy, sample_bt_labels
from .reward import gold_order_agreement
from .sampling import sample
from .tasks import reviews
from .tokenizer import TOKENIZER
from .train import sft
from .utils import DATA_DIR

# The principles the simulated human was asked about, one per aspect of its taste (tasks.reviews.gold_breakdown).
# The judge learns what these words mean only from the comparisons made under them.
PRINCIPLES = {
    "sentiment": "prefer the more positive review.",
    "grammar": "prefer the review with correct grammar.",
    "repetition": "prefer the review that repeats no word.",
    "length": "prefer the shorter review.",
    "off_topic": "prefer the review that is about the topic asked for.",
}
ASPECT_OF = {text: aspect for aspect, text in PRINCIPLES.items()}
CONSTITUTION_PATH = DATA_DIR / "constitution.txt"
MAX_PRINCIPLE_CHARS = 60
ANSWERS = ("a", "b")           # the judge's two answer tokens: one character each in the course's alphabet
JUDGE_CONTEXT = 384            # principle + prompt + two responses of up to MAX_RESPONSE_TOKENS each
MAX_RESPONSE_TOKENS = 120


# ---------------------------------------------------------------- the constitution
def parse_constitution(text: str, source: str = "the constitution") -> list[str]:
    """Principles, one per non-blank line; lines starting with '#' are comments (to switch a principle off).

    Each principle must be written in the tokenizer's alphabet, at most MAX_PRINCIPLE_CHARS long, and
    appear once. Raises ValueError naming the line and what to do.
    """
    first_line: dict[str, int] = {}      # principle -> its line: a dict keeps the duplicate check linear
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}, line {number} ({line!r})"
        try:
            TOKENIZER.encode(line)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        if len(line) > MAX_PRINCIPLE_CHARS:
            raise ValueError(f"{where}: a principle has at most {MAX_PRINCIPLE_CHARS} characters, this one "
                             f"{len(line)}; shorten it (the judge's context must fit it and two responses)")
        if line in first_line:
            raise ValueError(f"{where}: this principle is already listed on line {first_line[line]}; list each "
                             "principle once")
        first_line[line] = number
    if not first_line:
        raise ValueError(f"{source} lists no principle: write one principle per line (lines starting "
                         f"with '#' are comments)")
    return list(first_line)


def read_constitution(path: str | Path = CONSTITUTION_PATH) -> list[str]:
    """The principles of the constitution file at `path` (see parse_constitution)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no constitution at {path}: write a text file with one principle per line "
                                f"(the course ships {CONSTITUTION_PATH})")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")     # -sig: drops the byte-order mark some editors put first
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ValueError(f"{path} is not UTF-8 text: byte {e.start} (line {line}) is {data[e.start:e.start + 1]!r}. "
                         "Save the file as UTF-8 (in your editor: save with encoding UTF-8)") from None
    return parse_constitution(text, source=str(path))


def principle_aspect(principle: str) -> str:
    """Which aspect of the gold taste a principle asks about (what the simulated human answers)."""
    if principle not in ASPECT_OF:
        raise ValueError(f"the simulated human was never asked {principle!r}; it can answer only: "
                         + "; ".join(repr(p) for p in PRINCIPLES.values()))
    return ASPECT_OF[principle]


def aspect_score(prompt: str, response: str, aspect: str) -> float:
    """The gold human's score of one aspect, higher = better: sentiment, or minus a penalty."""
    parts = reviews.gold_breakdown(prompt, response)
    if aspect not in PRINCIPLES:
        raise ValueError(f"unknown aspect {aspect!r}; choose one of {', '.join(PRINCIPLES)}")
    value = getattr(parts, aspect)
    return value if aspect == "sentiment" else -value


# ---------------------------------------------------------------- what the judge reads
def judge_prompt(principle: str, prompt: str, response_a: str, response_b: str) -> str:
    """The text the judge reads before answering "a" or "b"."""
    return f"principle: {principle}\n{prompt}a: {response_a}\nb: {response_b}\nbetter:"


def init_judge(base: GPT, context_length: int = JUDGE_CONTEXT) -> GPT:
    """A GPT with `base`'s weights and a position table stretched to context_length.

    The new rows repeat the old ones (position p starts as position p mod old length): the first
    old-length positions are exactly the base model's, and fine-tuning adapts the rest.
    """
    return extend_context(base, context_length, new_rows="repeat")


# ---------------------------------------------------------------- the human's comparisons, the judge's lessons
def sample_comparison_pool(policy: GPT, prompts: list[str], temperatures=(1.0, 1.6), seed: int = 0,
                           max_new_tokens: int = MAX_RESPONSE_TOKENS) -> list[dict]:
    """Two responses per prompt, each sampled at a temperature drawn from `temperatures`, each at most
    max_new_tokens long (so that two of them fit the judge's context).

    Hot samples break grammar and wander off topic: without them almost every pair ties on those
    aspects and a human asked about them could teach the judge nothing. Returns [{prompt, a, b}].
    """
    rng = random.Random(seed)
    slots = [(i, side, rng.choice(temperatures)) for i in range(len(prompts)) for side in ("a", "b")]
    pool = [{"prompt": p} for p in prompts]
    for k, t in enumerate(temperatures):
        rows = [(i, side) for i, side, slot_t in slots if slot_t == t]
        drawn = sample(policy, [prompts[i] for i, _ in rows], seed=seed + k, temperature=t, max_new_tokens=max_new_tokens)
        for (i, side), s in zip(rows, drawn):
            pool[i][side] = s.response
    return pool


def human_comparisons(pool: list[dict], principles: list[str], temperature: float = DEFAULT_TEMPERATURE,
                      seed: int = 0, informative: bool = False, balanced: bool = False) -> list[dict]:
    """The gold human compares each pair under one principle drawn at random, with Bradley-Terry noise:

        P(a > b | principle) = sigma((s_k(a) - s_k(b)) / temperature),   s_k = aspect_score of its aspect k

    informative: draw the principle only among those on which the two responses differ, and leave out pairs
    that differ on none (a labelling interface that never asks a question whose answer is a coin flip).
    balanced (with informative): draw a principle with weight 1 / (number of pool pairs that differ on it),
    so that the rarer differences (grammar, repetition) are asked about more often than their share of pairs.
    Returns [{prompt, a, b, principle, prefers_a (0/1)}].
    """
    rng = random.Random(seed)
    scored = [{k: (aspect_score(c["prompt"], c["a"], principle_aspect(k)),
                   aspect_score(c["prompt"], c["b"], principle_aspect(k))) for k in principles} for c in pool]
    differing = {k: sum(s[k][0] != s[k][1] for s in scored) for k in principles}
    asked, score_a, score_b = [], [], []
    for c, scores in zip(pool, scored):
        candidates = [k for k in principles if scores[k][0] != scores[k][1]] if informative else list(principles)
        if not candidates:
            continue
        k = rng.choices(candidates, weights=[1 / differing[k] for k in candidates])[0] if balanced and informative \
            else rng.choice(candidates)
        asked.append((c, k))
        score_a.append(scores[k][0])
        score_b.append(scores[k][1])
    prefers_a = sample_bt_labels(score_a, score_b, temperature, torch.Generator().manual_seed(seed)).tolist()
    return [{**c, "principle": k, "prefers_a": y} for (c, k), y in zip(asked, prefers_a)]


def judge_examples(comparisons: list[dict], both_orders: bool = True) -> list[tuple[str, str]]:
    """(judge prompt, answer) SFT pairs: each comparison in the order it was labelled, answer "a" or "b", and
    (both_orders) once more with a and b swapped and the answer flipped, so that only the content, never the
    position, predicts the answer."""
    examples = []
    for c in comparisons:
        examples.append((judge_prompt(c["principle"], c["prompt"], c["a"], c["b"]), ANSWERS[1 - c["prefers_a"]]))
        if both_orders:
            examples.append((judge_prompt(c["principle"], c["prompt"], c["b"], c["a"]), ANSWERS[c["prefers_a"]]))
    return examples


def train_judge(judge: GPT, comparisons: list[dict], *, steps: int, batch_size: int = 32, lr: float = 2e-3,
                both_orders: bool = True, seed: int = 0, **kwargs) -> dict:
    """Fine-tune `judge` to answer like the human: SFT (train.sft) on judge_examples, loss on the answer
    token and EOS only. Returns sft's history {"loss", "lr", "eval"}."""
    return sft(judge, judge_examples(comparisons, both_orders), steps=steps, batch_size=batch_size, lr=lr, seed=seed,
               **kwargs)


# ---------------------------------------------------------------- verdicts
@torch.no_grad()
def judge_probability(judge: GPT, principles: list[str], prompts: list[str], responses_a: list[str],
                      responses_b: list[str], batch_size: int = 128) -> torch.Tensor:
    """p(a > b) (N,) for each comparison in the order shown (a first), one principle per comparison.

        p = sigma(logit["a"] - logit["b"]) at the position after "better:"

    Rows are left-padded so that the last column is every row's answer position; sorted by length
    so that a batch carries little padding. A row's probability does not depend on its batch.
    """
    n = len(prompts)
    if not (len(principles) == len(responses_a) == len(responses_b) == n):
        raise ValueError(f"got {len(principles)} principles, {n} prompts, {len(responses_a)} responses a and "
                         f"{len(responses_b)} responses b: pass one of each per comparison")
    ids = [TOKENIZER.encode(judge_prompt(k, p, a, b), bos=True)
           for k, p, a, b in zip(principles, prompts, responses_a, responses_b)]
    too_long = [i for i, x in enumerate(ids) if len(x) > judge.config.context_length]
    if too_long:
        raise ValueError(f"comparison {too_long[0]} has {len(ids[too_long[0]])} tokens, more than the judge's "
                         f"context {judge.config.context_length}: shorten the responses or the principle")
    answer_ids = torch.tensor([TOKENIZER.stoi[a] for a in ANSWERS])
    device = next(judge.parameters()).device
    order = sorted(range(n), key=lambda i: len(ids[i]))
    out = torch.empty(n)
    judge.eval()
    for start in range(0, n, batch_size):
        rows = order[start:start + batch_size]
        tokens, mask = left_pad([ids[i] for i in rows], max(len(ids[i]) for i in rows), device=device)
        logits = judge(tokens, mask)[:, -1, answer_ids.to(device)]          # (B, 2): "a", "b"
        out[rows] = torch.sigmoid(logits[:, 0] - logits[:, 1]).float().cpu()
    return out


def swap_averaged(p_ab: torch.Tensor, p_ba: torch.Tensor) -> torch.Tensor:
    """Order-free verdict from both presentations: p = 1/2 [p(a, b) + 1 - p(b, a)]; shapes (N,) -> (N,).

    p_ab: P(first is better) with a shown first; p_ba: the same with b shown first. A judge that adds a
    bias b to the first position's log-odds d, p(a, b) = sigma(d + b) and p(b, a) = sigma(-d + b), gets
    1/2 [sigma(d + b) + sigma(d - b)]: the sign of d survives, the bias cancels, and |p - 1/2| shrinks.
    """
    return 0.5 * (p_ab + 1 - p_ba)


def judge_both_orders(judge: GPT, principles, prompts, responses_a, responses_b,
                      batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """(p(a, b), p(b, a)), each (N,): the judge asked with a first, then with b first."""
    p_ab = judge_probability(judge, principles, prompts, responses_a, responses_b, batch_size)
    p_ba = judge_probability(judge, principles, prompts, responses_b, responses_a, batch_size)
    return p_ab, p_ba


def position_bias(p_ab: torch.Tensor, p_ba: torch.Tensor) -> dict:
    """How much the verdict depends on the order; p_ab, p_ba (N,) as in swap_averaged.

    flip_rate: share of pairs whose winner changes when a and b swap places, i.e. both orders pick the
    same POSITION: (p_ab > 1/2) == (p_ba > 1/2). first_preference: mean P(first wins) over both
    orders (1/2 for an unbiased judge).
    """
    flips = (p_ab > 0.5) == (p_ba > 0.5)
    return {"flip_rate": float(flips.double().mean()), "first_preference": float(torch.cat([p_ab, p_ba]).double().mean())}


def judge_gold_agreement(p_a: torch.Tensor, gold_a, gold_b) -> float:
    """Share of pairs (gold ties left out) where the verdict p(a > b) (N,) picks the gold-better response;
    p = 1/2 counts half (reward.gold_order_agreement of the scores p and 1 - p)."""
    return gold_order_agreement(p_a, 1 - p_a, gold_a, gold_b)


def judge_report(judge: GPT, comparisons: list[dict], temperature: float = DEFAULT_TEMPERATURE,
                 batch_size: int = 128) -> dict:
    """How well the judge answers held-out human comparisons ({prompt, a, b, principle, prefers_a}), each asked
    under its own principle in both orders:

    - human_label_accuracy (a shown first) and swap_human_label_accuracy: agreement with the noisy human's labels;
    - flip_rate and first_preference (position_bias);
    - per aspect: n, the judge's agreement with the aspect's gold order (a first, and swap-averaged), and the
      human's expected agreement with it, mean max(p, 1 - p) at `temperature` (the Bayes ceiling of one label).
    """
    principles, prompts, a, b = ([c[k] for c in comparisons] for k in ("principle", "prompt", "a", "b"))
    p_ab, p_ba = judge_both_orders(judge, principles, prompts, a, b, batch_size)
    p_swap = swap_averaged(p_ab, p_ba)
    labels = torch.tensor([c["prefers_a"] for c in comparisons])
    report = {"comparisons": len(comparisons),
              "human_label_accuracy": round(float(((p_ab > 0.5).long() == labels).double().mean()), 4),
              "swap_human_label_accuracy": round(float(((p_swap > 0.5).long() == labels).double().mean()), 4),
              **{k: round(v, 4) for k, v in position_bias(p_ab, p_ba).items()}, "aspects": {}}
    aspects = [principle_aspect(k) for k in principles]
    for aspect in sorted(set(aspects), key=list(PRINCIPLES).index):
        rows = [i for i, x in enumerate(aspects) if x == aspect]
        gold_a = torch.tensor([aspect_score(prompts[i], a[i], aspect) for i in rows])
        gold_b = torch.tensor([aspect_score(prompts[i], b[i], aspect) for i in rows])
        untied = gold_a != gold_b
        report["aspects"][aspect] = {
            "n": len(rows),
            "judge_gold_agreement": round(judge_gold_agreement(p_ab[rows], gold_a, gold_b), 4),
            "swap_judge_gold_agreement": round(judge_gold_agreement(p_swap[rows], gold_a, gold_b), 4),
            "human_gold_agreement": round(bayes_optimal_accuracy(gold_a[untied], gold_b[untied], temperature), 4)
            if untied.any() else float("nan")}
    return report


# ---------------------------------------------------------------- labelling with a constitution
def principle_verdicts(judge: GPT, constitution: list[str], prompts: list[str], responses_a: list[str],
                       responses_b: list[str], *, swap: bool = True, batch_size: int = 128) -> torch.Tensor:
    """The judge's p(a > b) under every principle: (K, N) for K principles and N comparisons.
    swap: each verdict averaged over both orders (swap_averaged)."""
    rows = []
    for principle in constitution:
        principles = [principle] * len(prompts)
        if swap:
            rows.append(swap_averaged(*judge_both_orders(judge, principles, prompts, responses_a, responses_b, batch_size)))
        else:
            rows.append(judge_probability(judge, principles, prompts, responses_a, responses_b, batch_size))
    return torch.stack(rows)


def draw_principles(n: int, k: int, seed: int = 0) -> torch.Tensor:
    """Which of k principles each of n comparisons is judged under, uniformly at random: (n,) long."""
    rng = random.Random(seed)
    return torch.tensor([rng.randrange(k) for _ in range(n)], dtype=torch.long)


def combine_verdicts(verdicts: torch.Tensor, mode: str = "sample", seed: int = 0) -> torch.Tensor:
    """One p(a > b) per comparison from the verdicts (K, N) of K principles -> (N,).

    mode "sample": the verdict of one principle drawn per comparison (draw_principles), as Constitutional AI;
    mode "sum": p = sigma(sum_k logit p_k), the principles as independent evidence (for Bradley-Terry
    aspects that add up to the gold reward, exactly the human's probability).
    """
    if mode == "sample":
        drawn = draw_principles(verdicts.shape[1], verdicts.shape[0], seed)
        return verdicts[drawn, torch.arange(verdicts.shape[1])]
    if mode == "sum":
        return torch.sigmoid(torch.logit(verdicts.double(), eps=1e-6).sum(0)).to(verdicts.dtype)
    raise ValueError(f"mode must be 'sample' or 'sum', got {mode!r}")


def constitution_probability(judge: GPT, constitution: list[str], prompts: list[str], responses_a: list[str],
                             responses_b: list[str], *, mode: str = "sample", swap: bool = True, seed: int = 0,
                             batch_size: int = 128) -> torch.Tensor:
    """The judge's p(a > b) (N,) under a constitution (see combine_verdicts for the modes). In mode
    "sample" the judge reads only the drawn principle of each comparison: one verdict (two with swap) per pair."""
    if mode not in ("sample", "sum"):
        raise ValueError(f"mode must be 'sample' or 'sum', got {mode!r}")
    if mode == "sum":
        return combine_verdicts(principle_verdicts(judge, constitution, prompts, responses_a, responses_b,
                                                   swap=swap, batch_size=batch_size), "sum")
    principles = [constitution[i] for i in draw_principles(len(prompts), len(constitution), seed).tolist()]
    if swap:
        return swap_averaged(*judge_both_orders(judge, principles, prompts, responses_a, responses_b, batch_size))
    return judge_probability(judge, principles, prompts, responses_a, responses_b, batch_size)


def ai_label_pairs(prompts: list[str], responses_a: list[str], responses_b: list[str], p_a: torch.Tensor,
                   gold_fn=reviews.gold_reward) -> list[dict]:
    """Hard labels from the judge's p(a > b) (N,): chosen = a where p >= 1/2. Returns the dicts of
    preferences.label_pairs ({prompt, chosen, rejected, gold_chosen, gold_rejected}) plus p_chosen,
    so reward.train_reward_model and the gold metrics take them as they take human labels."""
    pairs = []
    for prompt, a, b, p in zip(prompts, responses_a, responses_b, p_a.tolist()):
        (c, r, pc) = (a, b, p) if p >= 0.5 else (b, a, 1 - p)
        pairs.append({"prompt": prompt, "chosen": c, "rejected": r, "p_chosen": pc,
                      "gold_chosen": gold_fn(prompt, c), "gold_rejected": gold_fn(prompt, r)})
    return pairs
