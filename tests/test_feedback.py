""""""
import json
import math
import os
import random

import pytest
import torch

from minirlhf import feedback as fb
from minirlhf.preferences import bayes_optimal_accuracy
from minirlhf.tasks import reviews

PAIRS = [("review: soup\n", f"the soup was {x}.", f"the soup was {y}.")
         for x, y in [("lovely", "cold"), ("bland", "warm"), ("fresh", "stale"), ("quick", "slow")]]


def label(i, choice, seq):
    return fb.make_label(*PAIRS[i], choice, seq)


def write_lines(path, lines, end="\n"):
    path.write_text("\n".join(lines) + end)


def good_line(i=0, choice="a", seq=1):
    return json.dumps(label(i, choice, seq))


# ---------------------------------------------------------------- records and the file
def test_pair_id_is_stable_and_unambiguous():
    assert fb.pair_id("p", "a", "b") == fb.pair_id("p", "a", "b")
    assert len(fb.pair_id("p", "a", "b")) == 12
    assert fb.pair_id("p", "ab", "c") != fb.pair_id("p", "a", "bc")
    assert fb.pair_id("p", "a", "b") != fb.pair_id("p", "b", "a")


def test_append_then_read_round_trip_and_creates_dirs(tmp_path):
    path = tmp_path / "deep" / "dir" / "labels.jsonl"
    assert fb.read_labels(path) == []                       # no file yet: nothing labelled
    records = [label(0, "a", 1), label(1, "tie", 2), label(2, "skip", 5)]
    for r in records:
        fb.append_label(path, r)
    assert fb.read_labels(path) == records
    assert path.read_text().count("\n") == 3


def test_append_never_rewrites_earlier_bytes(tmp_path):
    path = tmp_path / "labels.jsonl"
    fb.append_label(path, label(0, "a", 1))
    before = path.read_bytes()
    fb.append_label(path, label(1, "b", 2))
    fb.append_label(path, fb.make_undo(2, 3))
    after = path.read_bytes()
    assert after.startswith(before) and len(after) > len(before)


def test_append_fsyncs_every_record(tmp_path, monkeypatch):
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))
    path = tmp_path / "labels.jsonl"
    fb.append_label(path, label(0, "a", 1))
    fb.append_label(path, fb.make_undo(1, 2))
    assert len(calls) == 2


def test_append_refuses_a_bad_record_and_writes_nothing(tmp_path):
    path = tmp_path / "labels.jsonl"
    bad = dict(label(0, "a", 1), choice="maybe")
    with pytest.raises(ValueError, match="choice"):
        fb.append_label(path, bad)
    assert not path.exists()
    with pytest.raises(ValueError, match="one of 'a', 'b', 'tie', 'skip'"):
        fb.make_label(*PAIRS[0], "A", 1)


@pytest.mark.parametrize("bad, expected", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"op": "relabel", "seq": 9}', "'op' is 'relabel'"),
    ('{"op": "label", "seq": 9, "choice": "a"}', "needs the field(s) pair_id, prompt, response_a, response_b"),
    (json.dumps(dict(label(1, "a", 9), seq="9")), "'seq' must be an integer"),
    (json.dumps(dict(label(1, "a", 9), seq=True)), "'seq' must be an integer"),
    (json.dumps(dict(label(1, "a", 9), prompt=3)), "'prompt' must be a string"),
    (json.dumps(dict(label(1, "a", 9), choice="maybe")), "'choice' is 'maybe'"),
    (json.dumps(dict(label(1, "a", 9), response_a="edited")), "'pair_id'"),
    (good_line(1, "a", seq=1), "seq 1 is not larger than the seq before it (2)"),
    ('{"op": "undo", "seq": 9, "undoes": 7}', "undoes seq 7, which is no label in effect"),
    ('{"op": "undo", "seq": 9}', "needs the field(s) undoes"),
    ("[" * 100_000, "not readable JSON (RecursionError"),                  # json.loads raised a bare RecursionError
    ('{"op": "undo", "seq": ' + "1" * 5000 + "}", "not readable JSON (ValueError: Exceeds the limit"),
])
def test_malformed_line_reported_with_its_number(tmp_path, bad, expected):
    path = tmp_path / "labels.jsonl"
    write_lines(path, [good_line(0, "a", 1), "", good_line(2, "b", 2), bad, good_line(3, "a", 20)])
    before = path.read_bytes()
    with pytest.raises(fb.LabelFileError) as err:
        fb.read_labels(path)
    msg = str(err.value)
    assert err.value.line == 4 and "line 4:" in msg and str(path) in msg
    assert expected in msg
    assert "fix or delete line 4" in msg
    assert path.read_bytes() == before                    # reading never changes the file
    if "seq 1 is not larger" not in expected:             # that one is what two writers leave: see the test below
        with pytest.raises(fb.LabelFileError):            # repair is for a cut-off last line and a seq written twice
            fb.read_labels(path, repair=True)
        assert path.read_bytes() == before


def test_undoing_twice_and_bad_utf8_are_reported(tmp_path):
    path = tmp_path / "labels.jsonl"
    write_lines(path, [good_line(0, "a", 1), '{"op": "undo", "seq": 2, "undoes": 1}',
                       '{"op": "undo", "seq": 3, "undoes": 1}'])
    with pytest.raises(fb.LabelFileError, match="line 3: it undoes seq 1"):
        fb.read_labels(path)
    path.write_bytes(good_line(0).encode() + b"\n\xff\xfe\n")
    with pytest.raises(fb.LabelFileError, match="line 2: not valid JSON"):
        fb.read_labels(path)


def test_crash_mid_write_is_reported_then_repaired_on_request(tmp_path):
    path = tmp_path / "labels.jsonl"
    fb.append_label(path, label(0, "a", 1))
    fb.append_label(path, label(1, "b", 2))
    full = json.dumps(label(2, "tie", 3)) + "\n"
    torn = full[:len(full) // 2]
    with open(path, "a") as f:                            # the crash: half a line, no newline
        f.write(torn)
    before = path.read_bytes()
    with pytest.raises(fb.LabelFileError) as err:
        fb.read_labels(path)
    assert err.value.line == 3 and "cut off" in str(err.value) and "repair=True" in str(err.value)
    assert path.read_bytes() == before
    with pytest.warns(UserWarning, match="cut-off"):
        labels = fb.read_labels(path, repair=True)
    assert [r["choice"] for r in labels] == ["a", "b"]
    assert (tmp_path / "labels.jsonl.corrupt").read_text() == torn + "\n"
    assert before.startswith(path.read_bytes()) and path.read_bytes().endswith(b"\n")
    fb.append_label(path, label(2, "tie", 3))             # carries on as if nothing happened
    assert [r["choice"] for r in fb.read_labels(path)] == ["a", "b", "tie"]


def test_append_after_a_torn_tail_keeps_the_new_record_whole(tmp_path):
    path = tmp_path / "labels.jsonl"
    fb.append_label(path, label(0, "a", 1))
    with open(path, "a") as f:
        f.write('{"op": "lab')
    fb.append_label(path, label(1, "b", 2))               # goes on its own line, not glued to the tail
    assert path.read_text().splitlines()[-1] == json.dumps(label(1, "b", 2))
    with pytest.raises(fb.LabelFileError, match="line 2: not valid JSON"):
        fb.read_labels(path)


def test_last_line_without_newline_but_whole_is_fine(tmp_path):
    path = tmp_path / "labels.jsonl"
    write_lines(path, [good_line(0, "a", 1), good_line(1, "b", 2)], end="")
    assert len(fb.read_labels(path)) == 2
    fb.append_label(path, label(2, "a", 3))
    assert len(fb.read_labels(path)) == 3


def test_undo_and_resume(tmp_path):
    path = tmp_path / "labels.jsonl"
    for r in [label(0, "a", 1), label(1, "b", 2), fb.make_undo(2, 3), label(1, "skip", 4), label(2, "a", 5),
              fb.make_undo(5, 6)]:
        fb.append_label(path, r)
    labels = fb.read_labels(path)
    assert [(r["seq"], r["choice"]) for r in labels] == [(1, "a"), (4, "skip")]
    assert fb.next_unlabeled(PAIRS, labels) == 2          # a skip counts as done
    assert fb.next_unlabeled(PAIRS[:2], labels) is None
    assert fb.next_unlabeled(PAIRS[::-1], labels) == 0


# ---------------------------------------------------------------- the session
def test_session_labels_undoes_and_resumes_from_the_file(tmp_path):
    path = tmp_path / "labels.jsonl"
    s = fb.LabelingSession(PAIRS, path)
    assert s.current() == PAIRS[0] and s.progress() == (0, 4)
    assert s.undo() is None and not path.exists()          # nothing to undo: a no-op
    s.choose("a")
    s.choose("tie")
    assert s.current() == PAIRS[2] and s.progress() == (2, 4)
    assert s.undo()["choice"] == "tie"
    assert s.current() == PAIRS[1] and s.progress() == (1, 4)
    s.choose("b")
    s2 = fb.LabelingSession(PAIRS, path)                   # reopened: resumes where it stopped
    assert s2.current() == PAIRS[2] and s2.progress() == (2, 4)
    s2.choose("skip")
    s2.choose("a")
    assert s2.current() is None and s2.progress() == (4, 4)
    with pytest.raises(ValueError, match="every pair"):
        s2.choose("a")
    seqs = [r["seq"] for r in fb.read_log(path)]
    assert seqs == sorted(set(seqs))
    with pytest.raises(ValueError, match="must be one of"):
        fb.LabelingSession(PAIRS, tmp_path / "other.jsonl").choose("yes")


def test_session_refuses_a_stale_view_and_bad_pairs(tmp_path):
    path = tmp_path / "labels.jsonl"
    s1, s2 = fb.LabelingSession(PAIRS, path), fb.LabelingSession(PAIRS, path)
    shown = fb.pair_id(*s1.current())
    s2.choose("a")                                         # another widget on the same file moved on
    with pytest.raises(fb.StaleViewError):
        s1.choose("b", expected_pair_id=shown)
    assert len(fb.read_labels(path)) == 1
    with pytest.raises(ValueError, match=r"pairs\[1\]"):
        fb.LabelingSession([PAIRS[0], ("only", "two")], path)


def _label_in_another_process(path, pairs, clicks, start):
    session = fb.LabelingSession(pairs, path)
    start.wait()
    for k in range(clicks):
        session.choose("ab"[k % 2])


def test_two_processes_labelling_one_file_never_write_one_seq_twice_nor_lose_a_click(tmp_path):
    """Two notebook tabs on one file: each click reads the last seq and appends; unlocked, two clicks at once wrote
    the same seq (and labelled one pair twice), and from then on the file could not be read."""
    import multiprocessing

    path = tmp_path / "labels.jsonl"
    pairs = [("review: soup\n", f"the soup was good {i}.", f"the soup was bad {i}.") for i in range(150)]
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    workers = [context.Process(target=_label_in_another_process, args=(path, pairs, 60, start)) for _ in range(2)]
    for w in workers:
        w.start()
    start.set()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    records = fb.read_log(path)
    assert [r["seq"] for r in records] == list(range(1, 121))         # unique, increasing: every click kept
    assert len({r["pair_id"] for r in records}) == 120                # and no pair labelled twice


def test_a_seq_written_twice_is_reported_then_renumbered_on_request(tmp_path):
    """A file written by two processes before the lock: seq 2 twice, and an undo of seq 2 after them. repair=True
    renumbers from the first repeat on (the undo takes back the most recent label with that seq, as a session's undo
    does), after keeping the file as it was; no label is lost."""
    path = tmp_path / "labels.jsonl"
    lines = [good_line(0, "a", 1), good_line(1, "b", 2), good_line(2, "a", 2), good_line(3, "tie", 3),
             '{"op": "undo", "seq": 4, "undoes": 2}', good_line(1, "a", 3)]
    write_lines(path, lines)
    before = path.read_bytes()
    with pytest.raises(fb.LabelFileError, match="(?s)line 3: seq 2 is not larger.*at once.*repair=True"):
        fb.read_labels(path)
    assert path.read_bytes() == before
    with pytest.warns(UserWarning, match="renumbered"):
        labels = fb.read_labels(path, repair=True)
    assert [(r["pair_id"], r["choice"]) for r in labels] == [
        (fb.pair_id(*PAIRS[i]), c) for i, c in [(0, "a"), (1, "b"), (3, "tie"), (1, "a")]]
    assert [r["seq"] for r in fb.read_log(path)] == [1, 2, 3, 4, 5, 6]      # readable now without repair
    assert fb.read_log(path)[4] == {"op": "undo", "seq": 5, "undoes": 3}
    assert (tmp_path / "labels.jsonl.before-repair").read_bytes() == before
    session = fb.LabelingSession(PAIRS, path)
    assert session.choose("b")["seq"] == 7                                 # and carries on


def test_a_record_written_twice_identically_is_kept_twice_by_the_repair(tmp_path):
    """Both tabs clicked the same answer on the same pair: two clicks, both kept (the later label of a pair counts)."""
    path = tmp_path / "labels.jsonl"
    write_lines(path, [good_line(0, "a", 1), good_line(1, "b", 2), good_line(1, "b", 2)])
    with pytest.warns(UserWarning, match="renumbered"):
        records = fb.read_log(path, repair=True)
    assert [(r["seq"], r["choice"]) for r in records] == [(1, "a"), (2, "b"), (3, "b")]
    assert fb.LabelingSession(PAIRS, path).progress() == (2, 4)


def test_session_opening_a_broken_file_fails_or_repairs(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text(good_line(0, "a", 1) + "\n" + '{"op": "label", "se')
    with pytest.raises(fb.LabelFileError, match="line 2"):
        fb.LabelingSession(PAIRS, path)
    with pytest.warns(UserWarning):
        s = fb.LabelingSession(PAIRS, path, repair=True)
    assert s.progress() == (1, 4)


# ---------------------------------------------------------------- the widget
def test_widget_clicks_save_labels_and_redraw(tmp_path):
    pytest.importorskip("ipywidgets")
    path = tmp_path / "labels.jsonl"
    w = fb.labeling_widget(fb.LabelingSession(PAIRS, path))
    assert w.progress.value == "0 / 4 labelled"
    assert "lovely" in w.responses["a"].value and "cold" in w.responses["b"].value
    assert "review: soup" in w.prompt.value
    assert w.buttons["undo"].disabled
    w.buttons["a"].click()
    w.buttons["b"].click()
    assert w.progress.value == "2 / 4 labelled" and "fresh" in w.responses["a"].value
    w.buttons["undo"].click()
    assert w.progress.value == "1 / 4 labelled" and "bland" in w.responses["a"].value
    assert "Undone" in w.message.value
    w.buttons["tie"].click()
    w.buttons["skip"].click()
    w.buttons["a"].click()
    assert [r["choice"] for r in fb.read_labels(path)] == ["a", "tie", "skip", "a"]
    assert w.progress.value == "4 / 4 labelled" and "All 4 pairs labelled" in w.message.value
    assert w.buttons["a"].disabled and not w.buttons["undo"].disabled
    w.buttons["b"].click()                                  # disabled, but click() still calls handlers
    assert "Not saved" in w.message.value and len(fb.read_labels(path)) == 4
    for _ in range(5):
        w.buttons["undo"].click()
    assert "Nothing to undo" in w.message.value and w.progress.value == "0 / 4 labelled"


def test_widget_escapes_html_and_reports_a_stale_view(tmp_path):
    pytest.importorskip("ipywidgets")
    path = tmp_path / "labels.jsonl"
    pairs = [("p", "<b>bold</b>", "x")] + PAIRS
    w = fb.labeling_widget(fb.LabelingSession(pairs, path))
    assert "&lt;b&gt;bold" in w.responses["a"].value
    fb.LabelingSession(pairs, path).choose("b")             # a second widget labels the shown pair
    w.buttons["a"].click()
    assert "Not saved" in w.message.value and "changed" in w.message.value
    assert [r["choice"] for r in fb.read_labels(path)] == ["b"]
    assert w.progress.value == "1 / 5 labelled"


# ---------------------------------------------------------------- agreement
def test_agreement_rate_counts_a_tie_as_half():
    one = ["a", "b", "tie", "a", "skip", "tie"]
    two = ["a", "a", "tie", "tie", "a", "b"]
    # pairs 0..3 and 5 (4 is skipped by one): 1 + 0 + 1 + 0.5 + 0.5
    assert fb.agreement_rate(one, two) == pytest.approx(3 / 5)
    assert fb.agreement_rate({"x": "a", "y": "b"}, {"y": "b", "z": "a"}) == 1.0
    with pytest.raises(ValueError, match="same pairs"):
        fb.agreement_rate({"x": "a"}, {"y": "a"})
    with pytest.raises(ValueError, match="'maybe'"):
        fb.agreement_rate(["maybe"], ["a"])


def test_agreement_on_records_uses_pair_ids_and_the_latest_label():
    one = [label(0, "a", 1), label(1, "b", 2), label(2, "a", 3), label(0, "b", 4)]  # pair 0 relabelled
    two = [label(2, "a", 1), label(0, "b", 2), label(3, "a", 3)]
    assert fb.agreement_rate(one, two) == 1.0               # pairs 0 and 2
    assert fb.agreement_rate(one, [label(1, "skip", 1), label(2, "b", 2)]) == 0.0


def test_cohens_kappa_hand_value_and_edge_cases():
    one = ["a", "a", "b", "b"]
    two = ["a", "b", "b", "b"]
    # p_o = 3/4, p_e = 1/2 * 1/4 + 1/2 * 3/4 = 1/2 -> kappa = 1/2
    assert fb.cohens_kappa(one, two) == pytest.approx(0.5)
    assert fb.cohens_kappa(one, one) == 1.0
    assert fb.cohens_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)
    assert math.isnan(fb.cohens_kappa(["a", "a"], ["a", "a"]))


def test_gold_agreement_skips_ties_skips_and_equal_gold():
    gold = {"good": 2.0, "bad": -1.0, "also good": 2.0}
    gold_fn = lambda prompt, response: gold[response]
    labels = [fb.make_label("p", "good", "bad", "a", 1), fb.make_label("p", "bad", "good", "a", 2),
              fb.make_label("p", "bad", "good", "b", 3), fb.make_label("p", "good", "bad", "tie", 4),
              fb.make_label("p", "good", "also good", "a", 5), fb.make_label("p", "bad", "good", "skip", 6)]
    assert fb.gold_agreement(labels, gold_fn) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="nothing to compare"):
        fb.gold_agreement(labels[3:], gold_fn)


# ---------------------------------------------------------------- raters
def test_rate_is_deterministic_clipped_and_follows_offsets():
    gold = torch.linspace(-3, 3, 200)
    r1 = fb.rate(fb.RATERS[0], gold, torch.Generator().manual_seed(0))
    r2 = fb.rate(fb.RATERS[0], gold, torch.Generator().manual_seed(0))
    assert torch.equal(r1, r2) and r1.dtype == torch.long
    assert r1.min() >= 1 and r1.max() <= 5
    exact = fb.rate(fb.Rater("exact", 3.0, 1.0, 0.0), torch.tensor([-9.0, -1.0, 0.0, 1.4, 9.0]), torch.Generator())
    assert exact.tolist() == [1, 2, 3, 4, 5]
    harsh, generous = (fb.rate(fb.RATERS[i], gold, torch.Generator().manual_seed(1)).double().mean() for i in (0, 1))
    assert harsh + 1 < generous


def test_ratings_to_pairs_and_random_pairs():
    assert fb.ratings_to_pairs(torch.tensor([1, 3, 3]), [(0, 1), (1, 0), (1, 2)]) == ["b", "a", "tie"]
    pairs = fb.random_pairs(5, 1000, torch.Generator().manual_seed(0))
    assert pairs.shape == (1000, 2) and (pairs[:, 0] != pairs[:, 1]).all()
    assert pairs.min() == 0 and pairs.max() == 4
    with pytest.raises(ValueError, match="at least 2"):
        fb.random_pairs(1, 3, torch.Generator())


def test_rating_agreement_values():
    out = fb.rating_agreement(torch.tensor([1, 2, 3, 5]), torch.tensor([2, 2, 3, 3]))
    assert out["exact"] == 0.5 and out["mean_abs_diff"] == 0.75
    with pytest.raises(ValueError, match="same shape"):
        fb.rating_agreement(torch.tensor([1, 2]), torch.tensor([1]))


def test_raters_disagree_on_ratings_but_agree_on_comparisons():
    rng = random.Random(0)
    gold = torch.tensor([reviews.gold_reward(None, reviews.sample_review(rng)) for _ in range(300)])
    g = torch.Generator().manual_seed(0)
    rows = fb.compare_raters(fb.RATERS, gold, fb.random_pairs(len(gold), 1000, g), g)
    assert len(rows) == 7 and rows[-1]["raters"].startswith("two BT humans")
    for row in rows[:-1]:
        assert row["rating_exact"] < 0.5 and row["pair_agreement"] > 0.75
        assert row["pair_kappa"] > row["rating_kappa"] + 0.2
    harsh_vs_generous = rows[0]
    assert harsh_vs_generous["rating_exact"] < 0.1 and harsh_vs_generous["rating_mad"] > 1.2


# ---------------------------------------------------------------- the simulated student
def test_simulated_student_file(tmp_path):
    rng = random.Random(1)
    pairs = []
    for _ in range(60):
        topic = rng.choice(reviews.NOUNS)
        prompt = reviews.make_prompt(topic)
        pairs.append((prompt, reviews.sample_review(rng, topic), reviews.sample_review(rng, topic)))
    path = tmp_path / "student.jsonl"
    labels = fb.simulate_student_labels(pairs, reviews.gold_reward, 0.5, 0, path, skip_rate=0.1)
    assert labels == fb.read_labels(path) and len(labels) == 60
    assert fb.next_unlabeled(pairs, labels) is None
    records = fb.read_log(path)
    assert sum(r["op"] == "undo" for r in records) == 1
    counts = {c: sum(r["choice"] == c for r in labels) for c in fb.CHOICES}
    assert counts["skip"] >= 1 and counts["tie"] >= 1 and counts["a"] + counts["b"] > 40
    g_a = torch.tensor([reviews.gold_reward(p, a) for p, a, _ in pairs])
    g_b = torch.tensor([reviews.gold_reward(p, b) for p, _, b in pairs])
    unequal = g_a != g_b
    assert abs(fb.gold_agreement(labels, reviews.gold_reward) - bayes_optimal_accuracy(g_a[unequal], g_b[unequal], 0.5)) < 0.15
    again = fb.simulate_student_labels(pairs, reviews.gold_reward, 0.5, 0, tmp_path / "again.jsonl", skip_rate=0.1)
    assert again == labels                                  # same seed, same file
    with pytest.raises(FileExistsError, match="never overwritten"):
        fb.simulate_student_labels(pairs, reviews.gold_reward, 0.5, 0, path)


def test_widget_shows_a_file_broken_under_it(tmp_path):
    pytest.importorskip("ipywidgets")
    path = tmp_path / "labels.jsonl"
    w = fb.labeling_widget(fb.LabelingSession(PAIRS, path))
    w.buttons["a"].click()
    with open(path, "a") as f:
        f.write("oops\n")
    w.buttons["b"].click()
    assert "line 2" in w.message.value and len(path.read_text().splitlines()) == 2
