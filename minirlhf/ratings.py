"""1-5 star ratings from simulated users, each on their own scale, and the training signals made from them.

Each user turns their satisfaction u in [0, 1] (the task's `satisfaction`, which carries its biases) into
stars their own way:

    typical   stars = round(1 + 4 * slope * u + offset + noise), clipped to 1..5   (offset ~ N(0, 0.3))
    harsh     the same with offset ~ N(-1.5, 0.3)
    lenient   the same with offset ~ N(+1.5, 0.3)
    extreme   5 if the typical stars would be above 3, else 1
    random    1..5 uniformly, whatever the reply (a clicker)
    unhappy   a typical scale, but rates only when unhappy (u < 0.6: 90%, else 15%): missing not at random

User kinds depend on the intent that brings them (TYPE_MIX): people asking for a refund are harsher than
people resetting a password, so raw stars differ between intents for reasons that have nothing to do with
the replies. The learners below remove the users' scales in different ways:

- raw stars (regression);
- per-user z-scores: (stars - the user's mean) / the user's std (`normalize_per_user`);
- comparisons within one user's ratings of the same ticket (`within_user_pairs`), for Bradley-Terry;
- thumbs up (4-5 stars) / down (1-2), for KTO (`thumbs`).
"""
from __future__ import annotations

import math
import numbers
import random
from collections import defaultdict
from dataclasses import dataclass

KINDS = ("typical", "harsh", "lenient", "extreme", "random", "unhappy")
OFFSETS = {"typical": 0.0, "harsh": -1.5, "lenient": 1.5, "extreme": 0.0, "random": 0.0, "unhappy": 0.0}
# P(kind | the intent that brings the user), in KINDS' order.
TYPE_MIX = {
    "refund": (0.15, 0.35, 0.05, 0.2, 0.1, 0.15),
    "complaint": (0.15, 0.3, 0.05, 0.2, 0.1, 0.2),
    "cancel": (0.35, 0.15, 0.15, 0.15, 0.1, 0.1),
    "track": (0.35, 0.05, 0.35, 0.1, 0.1, 0.05),
    "password": (0.35, 0.05, 0.35, 0.1, 0.1, 0.05),
}
UNHAPPY_BELOW = 0.6


@dataclass(frozen=True)
class User:
    """A simulated customer: id, kind, home intent, and their scale's offset, slope and noise."""
    id: int
    kind: str
    intent: str
    offset: float
    slope: float
    noise: float = 0.5


def make_users(n: int, seed: int = 0, intents=tuple(TYPE_MIX), first_id: int = 0) -> list[User]:
    """n users; each comes with a home intent (uniform) and a kind drawn from TYPE_MIX[intent]."""
    rng = random.Random(seed)
    users = []
    for i in range(n):
        intent = rng.choice(intents)
        kind = rng.choices(KINDS, weights=TYPE_MIX[intent])[0]
        users.append(User(first_id + i, kind, intent, rng.gauss(OFFSETS[kind], 0.3), rng.uniform(0.8, 1.2)))
    return users


def stars(user: User, u: float, rng: random.Random) -> int:
    """The stars (1..5) `user` gives a reply that leaves them with satisfaction u (see the module docstring)."""
    if not 0.0 <= u <= 1.0:
        raise ValueError(f"satisfaction must be in [0, 1], got {u}")
    if user.kind == "random":
        return rng.randint(1, 5)
    latent = 1 + 4 * user.slope * u + user.offset + rng.gauss(0.0, user.noise)
    if user.kind == "extreme":
        return 5 if latent > 3 else 1
    return int(min(5, max(1, round(latent))))


def responds(user: User, u: float, rng: random.Random) -> bool:
    """Does `user` leave a rating at all? Everyone does, but "unhappy" users mostly when unhappy."""
    if user.kind != "unhappy":
        return True
    return rng.random() < (0.9 if u < UNHAPPY_BELOW else 0.15)


def rate(users: list[User], conversations: list[tuple[int, str, str]], satisfaction, seed: int = 0) -> list[dict]:
    """Ratings of conversations [(user id, prompt, response)]: one record per rating left, in order:
    {"user", "kind", "prompt", "response", "stars"}. satisfaction(prompt, response) -> u in [0, 1]."""
    by_id = {u.id: u for u in users}
    rng = random.Random(seed)
    out = []
    for user_id, prompt, response in conversations:
        if user_id not in by_id:
            raise KeyError(f"conversation for unknown user {user_id}; pass every user in `users`")
        user, u = by_id[user_id], satisfaction(prompt, response)
        if responds(user, u, rng):
            out.append({"user": user_id, "kind": user.kind, "prompt": prompt, "response": response,
                        "stars": stars(user, u, rng)})
    return out


# ---------------------------------------------------------------- training signals
def check_stars(ratings: list[dict]) -> None:
    """Refuse a rating whose stars are not a finite number (NaN would turn every z-score of its user into NaN and
    drop out of every comparison unseen), naming the rating and its user."""
    for i, r in enumerate(ratings):
        value = r["stars"]
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"ratings[{i}] (user {r['user']!r}) has stars {value!r}: stars must be a finite number; "
                             "drop that rating or fix it at its source")


def normalize_per_user(ratings: list[dict], min_ratings: int = 2) -> list[float]:
    """Each rating as a z-score within its user: (stars - user's mean) / user's std (population std).

    A user whose stars are all equal carries no information about which reply is better: 0. Users with fewer
    than min_ratings ratings also get 0. Returns one float per rating, in order."""
    check_stars(ratings)
    by_user = defaultdict(list)
    for r in ratings:
        by_user[r["user"]].append(r["stars"])
    stats = {}
    for user, values in by_user.items():
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        stats[user] = (mean, std, len(values))
    out = []
    for r in ratings:
        mean, std, n = stats[r["user"]]
        out.append(0.0 if n < min_ratings or std == 0 else (r["stars"] - mean) / std)
    return out


def within_user_pairs(ratings: list[dict]) -> list[dict]:
    """Bradley-Terry pairs from one user's ratings of replies to the same prompt: each two with different
    stars make a pair (chosen = more stars). Ties are dropped. A user's scale cancels in the comparison.
    Returns [{"prompt", "chosen", "rejected", "user", "margin"}] in order of first appearance."""
    check_stars(ratings)
    groups = defaultdict(list)
    for r in ratings:
        groups[(r["user"], r["prompt"])].append(r)
    pairs = []
    for (user, prompt), rs in groups.items():
        for i in range(len(rs)):
            for j in range(i + 1, len(rs)):
                a, b = rs[i], rs[j]
                if a["stars"] == b["stars"]:
                    continue
                hi, lo = (a, b) if a["stars"] > b["stars"] else (b, a)
                pairs.append({"prompt": prompt, "chosen": hi["response"], "rejected": lo["response"], "user": user,
                              "margin": hi["stars"] - lo["stars"]})
    return pairs


def thumbs(ratings: list[dict], up: int = 4, down: int = 2) -> list[dict]:
    """Thumbs for KTO: stars >= up are desirable, <= down undesirable, the rest dropped.
    Returns [{"prompt", "response", "desirable": bool}]."""
    if not up > down:
        raise ValueError(f"up ({up}) must be larger than down ({down}): stars between them are dropped, and a rating "
                         "at or above up and at or below down would be a thumb up and a thumb down at once")
    check_stars(ratings)
    return [{"prompt": r["prompt"], "response": r["response"], "desirable": r["stars"] >= up}
            for r in ratings if r["stars"] >= up or r["stars"] <= down]
