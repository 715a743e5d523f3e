"""The reviews task: restaurant reviews from a tiny grammar, and a hidden "gold" human taste.

A review is one to three sentences. Each sentence is either

    the <noun> was|were [very|really] <adjective>[ and|but the <noun> was|were [...] <adjective>].
    i loved|liked|hated the <noun>.

with "was" for singular nouns and "were" for plural ones. Pretraining text mixes good and bad
experiences; SFT data answers a prompt ``review: <noun>`` with a review that starts with that noun.

The gold reward stands in for a human we never see directly. It likes reviews that are positive,
grammatical, not repetitive and not too long (see `gold_breakdown`). Its penalties are for things the
SFT policy rarely does (repeating itself, run-on sentences, rambling), so a reward model trained on
SFT samples hardly sees them: that is what a policy can later exploit.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

SINGULAR = ("soup", "pasta", "pizza", "salad", "bread", "coffee", "cake", "waiter", "table", "music", "service", "view")
PLURAL = ("fries", "noodles", "staff", "drinks", "desserts", "portions", "prices", "chairs")
NOUNS = SINGULAR + PLURAL
POSITIVE = ("lovely", "great", "delicious", "fresh", "friendly", "warm", "tasty", "perfect", "cozy", "quick")
NEGATIVE = ("cold", "rude", "bland", "stale", "slow", "dirty", "awful", "soggy", "noisy", "burnt")
ADJECTIVES = POSITIVE + NEGATIVE
INTENSIFIERS = ("very", "really")
CONJUNCTIONS = ("and", "but")
VERBS = {"loved": 1, "liked": 1, "hated": -1}

MAX_WORDS = 20          # past this a review is "too long" for the gold human
PROMPT_TEMPLATE = "review: {}\n"


# ---------------------------------------------------------------- generating text
def _pick(rng: random.Random, options, used: set) -> str:
    """A random option not used yet in this review (reviews from the grammar never repeat a word)."""
    choice = rng.choice([o for o in options if o not in used])
    used.add(choice)
    return choice


def _clause(rng: random.Random, noun: str, positive_rate: float, used: set) -> str:
    be = "were" if noun in PLURAL else "was"
    adjective = _pick(rng, POSITIVE if rng.random() < positive_rate else NEGATIVE, used)
    intensifier = rng.choice(INTENSIFIERS) + " " if rng.random() < 0.25 else ""
    return f"the {noun} {be} {intensifier}{adjective}"


def _sentence(rng: random.Random, noun: str, positive_rate: float, used: set) -> str:
    if rng.random() < 0.2:
        verb = rng.choice(("loved", "liked") if rng.random() < positive_rate else ("hated",))
        return f"i {verb} the {noun}."
    first = _clause(rng, noun, positive_rate, used)
    if rng.random() < 0.5:
        return first + "."
    return f"{first} {rng.choice(CONJUNCTIONS)} {_clause(rng, _pick(rng, NOUNS, used), positive_rate, used)}."


def sample_review(rng: random.Random, topic: str | None = None, positive_rate: float = 0.5,
                  max_sentences: int = 2) -> str:
    """One grammatical review of 1..max_sentences sentences; the first is about `topic` if given.

    `positive_rate` is the chance that each adjective/verb is positive (0.5: mixed sentiment).
    No noun or adjective is used twice in a review: the data never shows the gold human's
    repetition penalty, so a reward model trained on it cannot learn that penalty.
    """
    if topic is not None and topic not in NOUNS:
        raise ValueError(f"unknown topic {topic!r}; choose one of {', '.join(NOUNS)}")
    n_sentences = rng.randint(1, max_sentences)
    used = {topic} if topic else set()
    nouns = [topic] if topic else []
    nouns += [_pick(rng, NOUNS, used) for _ in range(n_sentences - len(nouns))]
    return " ".join(_sentence(rng, noun, positive_rate, used) for noun in nouns)


def pretraining_corpus(n: int, seed: int = 0) -> list[str]:
    """n reviews with mixed sentiment, as found "on the web": the base model's diet."""
    rng = random.Random(seed)
    return [sample_review(rng, positive_rate=0.5, max_sentences=3) for _ in range(n)]


def make_prompt(topic: str) -> str:
    """The SFT/RL prompt asking for a review of `topic`."""
    if topic not in NOUNS:
        raise ValueError(f"unknown topic {topic!r}; choose one of {', '.join(NOUNS)}")
    return PROMPT_TEMPLATE.format(topic)


def prompt_topic(prompt: str) -> str:
    m = re.fullmatch(r"review: ([a-z]+)\n", prompt)
    if not m:
        raise ValueError(f"{prompt!r} is not a review prompt; make one with make_prompt(topic)")
    return m.group(1)


def sft_dataset(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n (prompt, response) demonstrations: reviews of the asked-for topic, mixed sentiment."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        topic = rng.choice(NOUNS)
        pairs.append((make_prompt(topic), sample_review(rng, topic=topic, positive_rate=0.5)))
    return pairs


def prompts(n: int, seed: int = 0) -> list[str]:
    """n prompts with random topics (for sampling, RL and evaluation)."""
    rng = random.Random(seed)
    return [make_prompt(rng.choice(NOUNS)) for _ in range(n)]


# ---------------------------------------------------------------- the grammar checker
_CLAUSE = re.compile(r"the ([a-z]+) (was|were) (?:(?:very|really) )?([a-z]+)")
_VERB = re.compile(r"i (loved|liked|hated) the ([a-z]+)")


def _parse_clause(text: str):
    m = _CLAUSE.fullmatch(text)
    if not m:
        return None
    noun, be, adjective = m.groups()
    if noun not in NOUNS or adjective not in ADJECTIVES or be != ("were" if noun in PLURAL else "was"):
        return None
    return noun, (1 if adjective in POSITIVE else -1), adjective


def parse_sentence(sentence: str):
    """Parse one sentence (without its final '.') into (nouns, polarities, adjectives), or None.

    A sentence has at most two clauses: three or more joined by and/but is a run-on, ungrammatical.
    """
    m = _VERB.fullmatch(sentence)
    if m:
        verb, noun = m.groups()
        return ([noun], [VERBS[verb]], []) if noun in NOUNS else None
    parts = re.split(r" (?:and|but) ", sentence)
    if len(parts) > 2:
        return None
    clauses = [_parse_clause(p) for p in parts]
    if any(c is None for c in clauses):
        return None
    return [c[0] for c in clauses], [c[1] for c in clauses], [c[2] for c in clauses]


def split_sentences(text: str) -> list[str]:
    """Sentences without their final '.'; text that does not end in '.' leaves a final fragment."""
    text = text.strip()
    pieces = text.split(". ") if text else []
    if pieces and pieces[-1].endswith("."):
        pieces[-1] = pieces[-1][:-1]
    elif pieces:
        pieces[-1] = pieces[-1] + "<unfinished>"  # never parses: an unfinished sentence is not grammatical
    return pieces


def is_grammatical(text: str) -> bool:
    """True if every sentence of `text` parses under the grammar (and there is at least one)."""
    sentences = split_sentences(text)
    return bool(sentences) and all(parse_sentence(s) is not None for s in sentences)


def follows_format(prompt: str, response: str, finished: bool = True) -> bool:
    """Did a response answer the prompt in the SFT format?

    It must have ended (emitted EOS), be a grammatical review and its first sentence must be about the
    prompt's topic. The base model, which never saw a prompt, mostly fails this.
    """
    if not finished or not is_grammatical(response):
        return False
    nouns, _, _ = parse_sentence(split_sentences(response)[0])
    return nouns[0] == prompt_topic(prompt)


# ---------------------------------------------------------------- the gold human
@dataclass(frozen=True)
class GoldScore:
    """The gold reward and its parts: total = sentiment - grammar - repetition - length - off_topic."""
    total: float
    sentiment: float
    grammar: float
    repetition: float
    length: float
    off_topic: float


def gold_breakdown(prompt: str | None, response: str) -> GoldScore:
    """The hidden human taste, in parts. prompt None: judge the text alone (no off-topic penalty).

    - sentiment: 2 x mean polarity of the adjectives/verbs it can read, in [-2, 2] (0 if none);
    - grammar: 1 per sentence that does not parse (a run-on counts as one);
    - repetition: 0.5 per repeated noun or adjective (each use after the first);
    - length: 0.25 per word beyond MAX_WORDS;
    - off_topic: 1 if a prompt is given and the first sentence is not about its topic.
    """
    topic = prompt_topic(prompt) if prompt is not None else None   # a response passed as the prompt fails here
    sentences = split_sentences(response)
    polarities, words, bad = [], [], 0
    for s in sentences:
        parsed = parse_sentence(s)
        if parsed is None:
            bad += 1
            # still read what it can: a human notices "delicious" in a broken sentence too
            polarities += [1 if w in POSITIVE else -1 for w in s.split() if w in ADJECTIVES]
            words += [w for w in s.split() if w in NOUNS or w in ADJECTIVES]
        else:
            nouns, pols, adjectives = parsed
            polarities += pols
            words += nouns + adjectives
    sentiment = 2.0 * sum(polarities) / len(polarities) if polarities else 0.0
    grammar = float(bad) if sentences else 1.0
    repetition = 0.5 * (len(words) - len(set(words)))
    length = 0.25 * max(0, len(response.split()) - MAX_WORDS)
    off_topic = 0.0
    if prompt is not None:
        first = parse_sentence(sentences[0]) if sentences else None
        off_topic = 0.0 if first and first[0][0] == topic else 1.0
    total = sentiment - grammar - repetition - length - off_topic
    return GoldScore(total, sentiment, grammar, repetition, length, off_topic)


def gold_reward(prompt: str | None, response: str) -> float:
    """The gold (true human) reward of one response to `prompt` (None: of a text alone); see `gold_breakdown`."""
    return gold_breakdown(prompt, response).total


# The task interface (tasks.Task) calls every task's gold reward or verifier `reward(prompt, response)`.
reward = gold_reward
