"""Simulated users' 1-5 stars and the training signals made from them."""
import random
import statistics
from collections import Counter

import pytest

from minirlhf import ratings as R


def _user(kind, offset=0.0):
    return R.User(0, kind, "refund", offset, 1.0)


def test_scales_differ_by_kind():
    rng = random.Random(0)
    mean = {k: statistics.mean(R.stars(_user(k, R.OFFSETS[k]), 0.5, rng) for _ in range(2000)) for k in R.KINDS}
    assert mean["harsh"] < mean["typical"] - 1 < mean["lenient"] - 2
    extreme = Counter(R.stars(_user("extreme"), u, rng) for u in (0.2, 0.8) for _ in range(200))
    assert set(extreme) == {1, 5}
    clicks = [R.stars(_user("random"), u, rng) for u in (0.0, 1.0) for _ in range(2000)]
    assert abs(statistics.mean(clicks[:2000]) - statistics.mean(clicks[2000:])) < 0.15   # ignores the reply
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        R.stars(_user("typical"), 1.5, rng)


def test_unhappy_users_rate_mostly_when_unhappy():
    rng = random.Random(0)
    low = statistics.mean(R.responds(_user("unhappy"), 0.2, rng) for _ in range(2000))
    high = statistics.mean(R.responds(_user("unhappy"), 0.9, rng) for _ in range(2000))
    assert low > 0.8 and high < 0.25 and R.responds(_user("typical"), 0.9, rng)


def test_kinds_depend_on_intent():
    users = R.make_users(3000, seed=0)
    harsh = {i: statistics.mean(u.kind == "harsh" for u in users if u.intent == i) for i in ("refund", "password")}
    assert harsh["refund"] > 0.25 > 0.1 > harsh["password"]


def test_rate_keeps_order_and_names_unknown_users():
    users = R.make_users(3, seed=0)
    convs = [(u.id, "p", "r") for u in users for _ in range(2)]
    out = R.rate(users, convs, lambda p, r: 0.3, seed=0)
    assert [r["user"] for r in out] == sorted(r["user"] for r in out)
    with pytest.raises(KeyError, match="unknown user 99"):
        R.rate(users, [(99, "p", "r")], lambda p, r: 0.3)


def _ratings(rows):
    return [{"user": u, "prompt": p, "response": r, "stars": s} for u, p, r, s in rows]


def test_normalize_per_user_removes_each_users_scale():
    rows = _ratings([(1, "a", "x", 1), (1, "b", "y", 3), (2, "a", "x", 3), (2, "b", "y", 5), (3, "a", "x", 4),
                     (3, "b", "y", 4), (4, "a", "x", 2)])
    z = R.normalize_per_user(rows)
    assert z[:4] == pytest.approx([-1, 1, -1, 1])      # a harsh and a lenient user agree once normalised
    assert z[4:] == [0.0, 0.0, 0.0]                     # all-equal user, single rating: no information


def test_within_user_pairs_compare_only_one_users_replies_to_one_prompt():
    rows = _ratings([(1, "a", "x", 2), (1, "a", "y", 5), (1, "a", "z", 5), (2, "a", "x", 4), (1, "b", "w", 1)])
    pairs = R.within_user_pairs(rows)
    assert [(p["chosen"], p["rejected"], p["margin"]) for p in pairs] == [("y", "x", 3), ("z", "x", 3)]
    assert all(p["prompt"] == "a" and p["user"] == 1 for p in pairs)


def test_thumbs_drop_the_middle():
    rows = _ratings([(1, "a", "x", 5), (1, "a", "y", 3), (1, "a", "z", 2), (1, "a", "w", 4)])
    assert [(t["response"], t["desirable"]) for t in R.thumbs(rows)] == [("x", True), ("z", False), ("w", True)]


def _rated(stars_by_user):
    return [{"user": u, "kind": "typical", "prompt": "p", "response": f"r{i}", "stars": s}
            for u, stars in stars_by_user.items() for i, s in enumerate(stars)]


def test_thumbs_refuse_an_up_threshold_not_above_the_down_one():
    ratings = _rated({0: [1, 3, 5]})
    for up, down in ((3, 3), (2, 4)):
        with pytest.raises(ValueError, match=rf"up \({up}\) must be larger than down \({down}\)"):
            R.thumbs(ratings, up=up, down=down)
    assert [t["desirable"] for t in R.thumbs(ratings, up=4, down=2)] == [False, True]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "5", None])
def test_stars_that_are_no_finite_number_are_refused_naming_the_user(bad):
    ratings = _rated({7: [1, 4], 8: [2, bad]})
    for signal in (R.normalize_per_user, R.within_user_pairs, R.thumbs):
        with pytest.raises(ValueError, match=r"ratings\[3\] \(user 8\) has stars .*must be a finite number"):
            signal(ratings)
