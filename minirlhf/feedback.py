"""Human feedback: a label file that never loses a click, a labeling widget, agreement statistics,
and simulated raters that show why comparisons beat 1-5 ratings.

The label file is an append-only JSON-lines log. Each line is one record:

    {"op": "label", "seq": 3, "pair_id": "1f0c...", "choice": "a", "prompt": ..., "response_a": ..., "response_b": ...}
    {"op": "undo", "seq": 4, "undoes": 3}

- `seq` increases strictly down the file (every record has one, undos too);
- `choice` is "a", "b", "tie" or "skip";
- `pair_id` is `pair_id(prompt, response_a, response_b)`: the same pair always gets the same id, so a
  reopened session knows which pairs are done and resumes at the first one that is not;
- an undo takes back the label with seq `undoes`; it is appended, never done by rewriting the file.

Each record is written with one `write`, then flushed and fsync'ed: a label that the widget showed as
saved survives a kernel crash or a power cut. A session reads the file and appends to it while holding an
exclusive lock on `<file>.lock` (fcntl.flock; msvcrt.locking on Windows), so two processes on one file (two
notebook tabs) never write the same seq nor label one pair twice. Reading replays the log; anything it cannot
read is reported with its line number (`LabelFileError`), never skipped, and the file is never rewritten.
The exceptions, and only on request (`repair=True`), each under the lock and after a backup:
- a last line cut off by a crash mid-write: it is copied to `<file>.corrupt` (fsync'ed) and only then cut
  from the label file;
- seqs that do not increase, as two processes wrote them before the lock: the file is copied to
  `<file>.before-repair`, then replaced (atomically) by the same records renumbered from the first repeat on.
"""
from __future__ import annotations

import hashlib
import html
import json
import os
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import torch

from .preferences import DEFAULT_TEMPERATURE, sample_bt_labels
from .utils import REPO_ROOT, atomic_write_bytes

try:
    import fcntl
except ImportError:             # Windows
    fcntl = None
    import msvcrt

CHOICES = ("a", "b", "tie", "skip")
LABEL_FIELDS = {"seq": int, "pair_id": str, "choice": str, "prompt": str, "response_a": str, "response_b": str}
UNDO_FIELDS = {"seq": int, "undoes": int}

Pair = tuple[str, str, str]  # (prompt, response_a, response_b)


LABELS_DIR_VARIABLE = "MINIRLHF_LABELS_DIR"


def labels_dir() -> Path:
    """Where notebook 06 keeps your labels: labels/ at the repository root (git-ignored), or the folder named by
    the environment variable MINIRLHF_LABELS_DIR (the browser test points it at a scratch folder)."""
    return Path(os.environ.get(LABELS_DIR_VARIABLE) or REPO_ROOT / "labels")


class LabelFileError(ValueError):
    """A label file has a line that cannot be read; `path` and `line` (1-based) say where."""

    def __init__(self, message: str, path: Path, line: int | None = None):
        super().__init__(message)
        self.path, self.line = path, line


# ---------------------------------------------------------------- records
def pair_id(prompt: str, response_a: str, response_b: str) -> str:
    """A stable 12-hex-digit id of a pair: sha1 of the JSON list [prompt, a, b].

    JSON keeps the three texts apart (plain concatenation would give ("ab", "c") and ("a", "bc") the
    same id). Swapping a and b gives another id: a label is about what was shown on the left.
    """
    text = json.dumps([prompt, response_a, response_b])
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def make_label(prompt: str, response_a: str, response_b: str, choice: str, seq: int) -> dict:
    """A label record (see the module docstring); raises ValueError for a choice not in CHOICES."""
    record = {"op": "label", "seq": seq, "pair_id": pair_id(prompt, response_a, response_b), "choice": choice,
              "prompt": prompt, "response_a": response_a, "response_b": response_b}
    problem = record_problem(record)
    if problem:
        raise ValueError(problem)
    return record


def make_undo(undoes: int, seq: int) -> dict:
    """An undo record: takes back the label whose seq is `undoes`."""
    return {"op": "undo", "seq": seq, "undoes": undoes}


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)  # JSON true would pass isinstance(x, int)


def record_problem(record) -> str | None:
    """What is wrong with one record on its own (not its place in the log), or None if it is fine."""
    if not isinstance(record, dict):
        return f"expected a JSON object {{...}}, got {type(record).__name__}"
    op = record.get("op")
    if op not in ("label", "undo"):
        return f"'op' is {op!r}, but must be 'label' or 'undo'"
    fields = LABEL_FIELDS if op == "label" else UNDO_FIELDS
    missing = [name for name in fields if name not in record]
    if missing:
        return f"a {op} record needs the field(s) {', '.join(missing)}"
    for name, kind in fields.items():
        ok = _is_int(record[name]) if kind is int else isinstance(record[name], kind)
        if not ok:
            return f"'{name}' must be {'an integer' if kind is int else 'a string'}, got {record[name]!r}"
    if op == "undo":
        return None
    if record["choice"] not in CHOICES:
        return f"'choice' is {record['choice']!r}, but must be one of {', '.join(map(repr, CHOICES))}"
    expected = pair_id(record["prompt"], record["response_a"], record["response_b"])
    if record["pair_id"] != expected:
        return (f"'pair_id' is {record['pair_id']!r} but the prompt and responses give {expected!r} "
                "(was a text edited?)")
    return None


# ---------------------------------------------------------------- the file
def append_label(path, record: dict) -> None:
    """Append one record (a label or an undo) as one JSON line, then flush and fsync.

    Creates the parent folders. Earlier bytes are never touched: the file is opened in append mode.
    The record is checked on its own first; its seq must be larger than the file's last one (a
    `LabelingSession` takes care of that). If the file does not end with a newline (a hand edit, or a
    write cut off by a crash), a newline goes first, so the new record is on a line of its own.
    """
    problem = record_problem(record)
    if problem:
        raise ValueError(f"not writing this record to {path}: {problem}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record) + "\n"
    with open(path, "a+b") as f:
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
        f.write(line.encode("utf-8"))  # one write: a crash leaves a whole line or a cut-off last line
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def locked(path):
    """Hold an exclusive lock on `<file>.lock` (created if need be) while reading a label file and appending to
    it: another process that asks meanwhile waits. Advisory: only code that takes it (a LabelingSession, a repair)
    is kept out."""
    lock = Path(path).with_name(Path(path).name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+b") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)      # released when f is closed
            yield
        else:
            # Windows: lock byte 0; LK_LOCK retries for about 10 s, then raises OSError (the widget shows "Not saved")
            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)
            try:
                yield
            finally:
                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)


def _line_error(path: Path, number: int, problem: str, text: bytes, advice: str = "") -> LabelFileError:
    shown = text.decode("utf-8", errors="replace")
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    advice = advice or (f"Open the file in a text editor, fix or delete line {number}, save it, and run this cell "
                        "again.")
    return LabelFileError(f"{path}, line {number}: {problem}.\n  the line: {shown!r}\nYour other labels are safe. "
                          f"{advice}", path, number)


def _seq_error(path: Path, number: int, seq: int, last_seq: int, text: bytes) -> LabelFileError:
    return _line_error(
        path, number, f"seq {seq} is not larger than the seq before it ({last_seq}): two processes (notebook tabs, "
        "widgets) probably wrote to the file at once", text,
        "Pass repair=True (read_labels(path, repair=True) or LabelingSession(pairs, path, repair=True)) to renumber "
        f"the records, no label lost (the file as it is now is kept as {path.name}.before-repair), or fix or delete "
        f"line {number} in a text editor; then run this cell again.")


def _torn_tail_error(path: Path, number: int, text: bytes) -> LabelFileError:
    corrupt = _corrupt_path(path)
    return LabelFileError(
        f"{path}, line {number} (the last line) is cut off: the last save did not finish, probably "
        f"because the kernel or the computer stopped mid-write.\n  the line: {text[:80]!r}\n"
        f"Your other labels are safe. Delete that last line in a text editor, or pass repair=True "
        f"(read_labels(path, repair=True) or LabelingSession(pairs, path, repair=True)) to move it "
        f"into {corrupt.name} and carry on; you will label that one pair again.", path, number)


def _corrupt_path(path: Path) -> Path:
    return path.with_name(path.name + ".corrupt")


def _move_tail_to_backup(path: Path, keep: int, tail: bytes) -> None:
    """Append the cut-off tail to <file>.corrupt (fsync'ed first), then cut it from the label file."""
    with open(_corrupt_path(path), "ab") as f:
        f.write(tail + b"\n")
        f.flush()
        os.fsync(f.fileno())
    os.truncate(path, keep)
    warnings.warn(f"{path}: moved a cut-off last line ({len(tail)} bytes) to {_corrupt_path(path)}", stacklevel=4)


def read_log(path, repair: bool = False) -> list[dict]:
    """Every record of a label file, in order, each checked; [] if the file does not exist yet.

    Raises `LabelFileError` naming the line for: text that is not JSON or not UTF-8, a record with a
    missing field, a wrong type, a bad choice or a pair_id that does not match its texts, a seq that
    does not increase, an undo of a label that is not in effect (unknown, or undone already). Blank
    lines carry no record and are passed over. A last line without a newline that is not valid JSON
    was cut off by a crash: reported too, or with `repair=True` moved to `<file>.corrupt` first. Seqs
    that do not increase (two processes wrote at once, before the lock) are reported too, or with
    `repair=True` renumbered (see `_renumbered`) after the file is copied to `<file>.before-repair`.
    """
    path = Path(path)
    if not path.exists():
        return []
    if not repair:
        return _checked_records(path, _parse_lines(path, repair=False))
    with locked(path):       # a repair rewrites the file: no session may append meanwhile
        entries = _parse_lines(path, repair=True)
        records = [record for _, _, record in entries]
        if _seqs_increase(records):
            return _checked_records(path, entries)
        fixed = _renumbered(path, entries)
        _checked_records(path, [(number, text, r) for (number, text, _), r in zip(entries, fixed)])
        _replace_keeping_backup(path, fixed)
        return fixed


def _parse_lines(path: Path, repair: bool) -> list[tuple[int, bytes, dict]]:
    """(line number, text, record) of every record, each checked on its own; a cut-off last line is reported,
    or with repair moved to <file>.corrupt."""
    lines = path.read_bytes().split(b"\n")  # the part after the last newline is b"" unless the last line is cut off
    entries, offset = [], 0
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            offset += len(text) + 1
            continue
        try:
            record = json.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            if number < len(lines):
                raise _line_error(path, number, f"not valid JSON ({e})", text) from None
            if not repair:
                raise _torn_tail_error(path, number, text) from None
            _move_tail_to_backup(path, offset, text)
            break
        except (RecursionError, ValueError) as e:     # nested too deep, or an integer too long to read
            raise _line_error(path, number, f"not readable JSON ({e.__class__.__name__}: {e})", text) from None
        problem = record_problem(record)
        if problem:
            raise _line_error(path, number, problem, text)
        entries.append((number, text, record))
        offset += len(text) + 1
    return entries


def _seqs_increase(records: list[dict]) -> bool:
    return all(a["seq"] < b["seq"] for a, b in zip(records, records[1:]))


def _checked_records(path: Path, entries: list[tuple[int, bytes, dict]]) -> list[dict]:
    """The records, once their order is checked: seqs increase, and every undo takes back a label in effect."""
    in_effect, last_seq = set(), None
    for number, text, record in entries:
        if last_seq is not None and record["seq"] <= last_seq:
            raise _seq_error(path, number, record["seq"], last_seq, text)
        if record["op"] == "undo" and record["undoes"] not in in_effect:
            raise _line_error(path, number, f"it undoes seq {record['undoes']}, which is no label in effect "
                              "(unknown, or undone already)", text)
        if record["op"] == "label":
            in_effect.add(record["seq"])
        else:
            in_effect.remove(record["undoes"])
        last_seq = record["seq"]
    return [record for _, _, record in entries]


def _renumbered(path: Path, entries: list[tuple[int, bytes, dict]]) -> list[dict]:
    """The records with increasing seqs: each seq kept if it is larger than the one before, else that one + 1.

    An undo then names the new seq of the label it took back: the most recent label in effect with the seq it
    named (what a session's undo takes back, the last label in effect). An undo of no such label raises
    LabelFileError, as read_log does."""
    out, last_seq, new_seqs = [], None, {}     # new_seqs: old seq -> new seqs of the labels in effect with it
    for number, text, record in entries:
        seq = record["seq"] if last_seq is None or record["seq"] > last_seq else last_seq + 1
        if record["op"] == "label":
            new_seqs.setdefault(record["seq"], []).append(seq)
            out.append({**record, "seq": seq})
        elif new_seqs.get(record["undoes"]):
            out.append({**record, "seq": seq, "undoes": new_seqs[record["undoes"]].pop()})
        else:
            raise _line_error(path, number, f"it undoes seq {record['undoes']}, which is no label in effect "
                              "(unknown, or undone already)", text)
        last_seq = seq
    return out


def _replace_keeping_backup(path: Path, records: list[dict]) -> None:
    """Copy the label file to <file>.before-repair (fsync'ed), then replace it atomically by `records`."""
    backup = path.with_name(path.name + ".before-repair")
    n = 1
    while backup.exists():                  # an earlier repair's backup is kept too
        backup, n = path.with_name(f"{path.name}.before-repair.{n}"), n + 1
    atomic_write_bytes(backup, path.read_bytes())
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in records).encode("utf-8"))
    warnings.warn(f"{path}: renumbered the records whose seq did not increase (two processes wrote at once); "
                  f"no label was lost, and the file as it was is in {backup}", stacklevel=3)


def apply_undos(records: list[dict]) -> list[dict]:
    """The label records still in effect after the undo records, in file order."""
    undone = {r["undoes"] for r in records if r["op"] == "undo"}
    return [r for r in records if r["op"] == "label" and r["seq"] not in undone]


def read_labels(path, repair: bool = False) -> list[dict]:
    """The current labels of a label file: its label records minus the undone ones (see `read_log`)."""
    return apply_undos(read_log(path, repair))


def next_unlabeled(pairs: list[Pair], labels: list[dict]) -> int | None:
    """Index of the first pair with no label (by pair_id; a skip counts as labelled), None if all have one."""
    done = {r["pair_id"] for r in labels}
    for i, pair in enumerate(pairs):
        if pair_id(*pair) not in done:
            return i
    return None


# ---------------------------------------------------------------- a labeling session
class StaleViewError(ValueError):
    """The pair a view showed is no longer the one to label (the file changed under it)."""


class LabelingSession:
    """Label `pairs` = [(prompt, response_a, response_b), ...] one by one into the file at `path`.

    The file is the only state: every method reads it again, so a session reopened after a crash or
    a kernel restart resumes at the first unlabelled pair; a click reads and appends under the file's lock
    (`locked`), so two widgets on one file, in one process or two, never reuse a seq. `repair=True` is passed
    to `read_log` once, on opening.
    """

    def __init__(self, pairs, path, repair: bool = False):
        self.pairs = [tuple(p) for p in pairs]
        for i, p in enumerate(self.pairs):
            if len(p) != 3 or not all(isinstance(s, str) for s in p):
                raise ValueError(f"pairs[{i}] must be (prompt, response_a, response_b), three strings; got {p!r}")
        self.path = Path(path)
        read_log(self.path, repair)  # fail now, not on the first click, if the file cannot be read

    @property
    def labels(self) -> list[dict]:
        """The labels in effect, read from the file."""
        return read_labels(self.path)

    def current(self) -> Pair | None:
        """The first pair without a label, or None when every pair has one."""
        i = next_unlabeled(self.pairs, self.labels)
        return None if i is None else self.pairs[i]

    def progress(self) -> tuple[int, int]:
        """(pairs with a label, skips included; number of pairs)."""
        done = {r["pair_id"] for r in self.labels}
        return sum(pair_id(*p) in done for p in self.pairs), len(self.pairs)

    def _next_seq(self) -> int:
        records = read_log(self.path)
        return records[-1]["seq"] + 1 if records else 1

    def choose(self, choice: str, expected_pair_id: str | None = None) -> dict:
        """Save `choice` ("a", "b", "tie" or "skip") for the current pair; return the record written.

        A view passes the id of the pair it showed as `expected_pair_id`: if the file has moved on
        since (another widget on the same file), nothing is written and StaleViewError is raised.
        """
        with locked(self.path):      # the pair and the seq read here are still the file's when appending
            pair = self.current()
            if pair is None:
                raise ValueError(f"every pair in {self.path} has a label; undo one first to change it")
            if expected_pair_id is not None and pair_id(*pair) != expected_pair_id:
                raise StaleViewError("the label file changed since this pair was shown (another widget on the same "
                                     "file?); nothing was saved. The view now shows the pair to label.")
            record = make_label(*pair, choice, self._next_seq())
            append_label(self.path, record)
        return record

    def undo(self) -> dict | None:
        """Take back the most recent label still in effect and return it; None (no-op) if there is none."""
        with locked(self.path):
            labels = self.labels
            if not labels:
                return None
            append_label(self.path, make_undo(labels[-1]["seq"], self._next_seq()))
        return labels[-1]


# ---------------------------------------------------------------- the widget
_BUTTONS = {"a": "A is better", "b": "B is better", "tie": "Tie", "skip": "Skip", "undo": "Undo"}
_BOX = ("<div style='border:1px solid #bbb;border-radius:6px;padding:8px;min-height:4em;white-space:pre-wrap'>"
        "<b>{title}</b><br>{text}</div>")


def _error_html(what: str, error: Exception) -> str:
    return f"<span style='color:#b00;white-space:pre-wrap'>{what}: {html.escape(str(error))}</span>"


def labeling_widget(session: LabelingSession):
    """An ipywidgets VBox that shows the session's current pair and saves a click as a label.

    The prompt is on top, responses A and B side by side, then the buttons and a progress line.
    A thin shell: every button calls a session method, then redraws from the file. For tests and
    scripts the parts are attributes: `.buttons[name]` for name in a, b, tie, skip, undo (call
    `.click()`), `.prompt`, `.responses["a"|"b"]`, `.progress` and `.message` (read `.value`).
    """
    import ipywidgets as widgets  # only the widget needs it; the rest of the module works without

    prompt = widgets.HTML()
    responses = {k: widgets.HTML(layout=widgets.Layout(width="50%")) for k in ("a", "b")}
    pair_box = widgets.HBox([responses["a"], responses["b"]])
    buttons = {k: widgets.Button(description=d, button_style="primary" if k in ("a", "b") else "")
               for k, d in _BUTTONS.items()}
    progress, message = widgets.Label(), widgets.HTML()
    shown = {"pair_id": None}  # the pair on screen, so a click labels what the student saw

    def redraw(note: str = "") -> None:
        pair = session.current()
        done, total = session.progress()
        progress.value = f"{done} / {total} labelled"
        for k in ("a", "b", "tie", "skip"):
            buttons[k].disabled = pair is None
        buttons["undo"].disabled = not session.labels
        if pair is None:
            shown["pair_id"] = None
            prompt.value, pair_box.layout.display = "", "none"
            note = note or f"<b>All {total} pairs labelled, thank you!</b> Your labels are saved in {html.escape(str(session.path))}."
        else:
            shown["pair_id"] = pair_id(*pair)
            pair_box.layout.display = None
            prompt.value = f"<b>Prompt</b><pre>{html.escape(pair[0])}</pre>"
            for k, text in zip(("a", "b"), pair[1:]):
                responses[k].value = _BOX.format(title=f"Response {k.upper()}", text=html.escape(text))
        message.value = note

    def on_click(name):
        def handler(_button):
            try:
                if name == "undo":
                    note = "Undone: that pair is shown again." if session.undo() else "Nothing to undo."
                else:
                    session.choose(name, expected_pair_id=shown["pair_id"])
                    note = ""
            except (OSError, ValueError) as e:  # shown in the widget: errors in callbacks are otherwise hidden
                note = _error_html("Not saved", e)
            try:
                redraw(note)
            except (OSError, ValueError) as e:  # e.g. someone broke the file by hand meanwhile
                message.value = _error_html("Cannot read the label file", e)
        return handler

    for name, button in buttons.items():
        button.on_click(on_click(name))
    root = widgets.VBox([prompt, pair_box, widgets.HBox(list(buttons.values())), progress, message])
    root.buttons, root.prompt, root.responses, root.progress, root.message = buttons, prompt, responses, progress, message
    redraw()
    return root


# ---------------------------------------------------------------- agreement
def _choice_map(labels) -> dict:
    """{key: choice}, skips left out, from label records (key: pair_id; a later label of a pair wins),
    a {key: choice} mapping, or a list of choices (key: position)."""
    if isinstance(labels, Mapping):
        items = list(labels.items())
    else:
        items = [(r["pair_id"], r["choice"]) if isinstance(r, Mapping) else (i, r) for i, r in enumerate(labels)]
    out = {}
    for key, choice in items:
        if choice not in CHOICES:
            raise ValueError(f"label {key!r} is {choice!r}; a choice must be one of {', '.join(map(repr, CHOICES))}")
        out[key] = choice
    return {k: c for k, c in out.items() if c != "skip"}


def _aligned(labels_1, labels_2) -> tuple[list, list]:
    """The two sets' choices on the pairs both labelled (skips excluded), in the first set's order."""
    m1, m2 = _choice_map(labels_1), _choice_map(labels_2)
    common = [k for k in m1 if k in m2]
    if not common:
        raise ValueError("no pair has an a/b/tie label in both label sets: were they made on the same pairs?")
    return [m1[k] for k in common], [m2[k] for k in common]


_WIN = {"a": 1.0, "tie": 0.5, "b": 0.0}  # a label as P(a is better)


def agreement_rate(labels_1, labels_2) -> float:
    """Share of agreement on the pairs both labelled, skips excluded; a tie is half a vote for each.

    With a = 1, tie = 1/2, b = 0: agreement = mean(1 - |y1 - y2|), so a vs a and tie vs tie count 1,
    a vs tie counts 1/2, a vs b counts 0. labels: records (from read_labels), a {key: choice} dict, or
    a list of choices aligned by position.
    """
    c1, c2 = _aligned(labels_1, labels_2)
    return sum(1 - abs(_WIN[x] - _WIN[y]) for x, y in zip(c1, c2)) / len(c1)


def category_kappa(x: list, y: list) -> float:
    """Cohen's kappa of two aligned lists of categories: (p_o - p_e) / (1 - p_e); nan if p_e = 1."""
    n = len(x)
    p_o = sum(a == b for a, b in zip(x, y)) / n
    p_e = sum((x.count(c) / n) * (y.count(c) / n) for c in set(x) | set(y))
    return float("nan") if p_e == 1 else (p_o - p_e) / (1 - p_e)


def cohens_kappa(labels_1, labels_2) -> float:
    """Cohen's kappa of two label sets on the pairs both labelled (skips excluded); categories a, b, tie.

    kappa = (p_o - p_e) / (1 - p_e): observed exact agreement p_o corrected for the agreement p_e that
    two raters with these label frequencies reach by chance. 1 = perfect, 0 = chance. nan when chance
    agreement is already 1 (both always give the same single answer). Inputs as for `agreement_rate`.
    """
    return category_kappa(*_aligned(labels_1, labels_2))


def gold_agreement(labels: list[dict], gold_fn) -> float:
    """Share of a labeller's a/b labels that pick the response the gold taste rewards more.

    gold_fn(prompt, response) -> float, like `reviews.gold_reward`. Ties and skips are left out, and
    so are pairs whose two gold rewards are equal (no right answer). A simulated human at temperature
    T is expected to score `preferences.bayes_optimal_accuracy` on these pairs.
    """
    hits = []
    for r in labels:
        if r["choice"] in ("a", "b"):
            g_a, g_b = gold_fn(r["prompt"], r["response_a"]), gold_fn(r["prompt"], r["response_b"])
            if g_a != g_b:
                hits.append((r["choice"] == "a") == (g_a > g_b))
    if not hits:
        raise ValueError("no a/b label on a pair with unequal gold rewards: nothing to compare with the gold taste")
    return sum(hits) / len(hits)


# ---------------------------------------------------------------- 1-5 ratings vs comparisons
@dataclass(frozen=True)
class Rater:
    """A simulated rater who scores one response at a time on a 1..5 scale.

    rating = clip(round(offset + scale * gold + noise * eps), 1, 5), eps ~ N(0, 1). The offset is
    the rater's idea of "average" (harsh: low, generous: high), scale how strongly quality moves the
    score, noise how inconsistent the rater is.
    """
    name: str
    offset: float
    scale: float
    noise: float


RATERS = (
    Rater("harsh", offset=2.0, scale=1.0, noise=0.3),
    Rater("generous", offset=4.0, scale=1.0, noise=0.3),
    Rater("lukewarm", offset=3.0, scale=0.5, noise=0.3),  # sticks to the middle of the scale
    Rater("noisy", offset=3.0, scale=1.0, noise=1.0),
)


def rate(rater: Rater, gold_rewards, generator: torch.Generator) -> torch.Tensor:
    """One rater's 1..5 ratings of responses with these gold rewards; (N,) -> (N,) long."""
    g = torch.as_tensor(gold_rewards, dtype=torch.float64)
    eps = torch.randn(g.shape, generator=generator, dtype=torch.float64)
    return (rater.offset + rater.scale * g + rater.noise * eps).round().clamp(1, 5).long()


def random_pairs(n_items: int, n_pairs: int, generator: torch.Generator) -> torch.Tensor:
    """(n_pairs, 2) long: indices (i, j) of two different items, drawn uniformly."""
    if n_items < 2:
        raise ValueError(f"need at least 2 items to make a pair, got {n_items}")
    i = torch.randint(n_items, (n_pairs,), generator=generator)
    j = (i + torch.randint(1, n_items, (n_pairs,), generator=generator)) % n_items  # never equal to i
    return torch.stack([i, j], dim=1)


def ratings_to_pairs(ratings, pairs) -> list[str]:
    """The preferences a rater's ratings imply on pairs (i, j): "a" if i rated higher, "b" if lower, else "tie"."""
    r = torch.as_tensor(ratings)
    pairs = torch.as_tensor(pairs).reshape(-1, 2)
    diff = r[pairs[:, 0]] - r[pairs[:, 1]]
    return ["a" if d > 0 else "b" if d < 0 else "tie" for d in diff.tolist()]


def bt_choices(gold_a, gold_b, temperature: float, generator: torch.Generator) -> list[str]:
    """A simulated human's comparisons with Bradley-Terry noise (see `preferences`), as "a"/"b"."""
    return ["a" if y else "b" for y in sample_bt_labels(gold_a, gold_b, temperature, generator).tolist()]


def rating_agreement(ratings_1, ratings_2) -> dict[str, float]:
    """How two raters' 1..5 ratings of the same responses agree.

    exact: share of identical ratings; mean_abs_diff: mean |r1 - r2| in scale points; kappa: Cohen's
    kappa with the five ratings as categories (comparable with `cohens_kappa` of pairwise labels).
    """
    r1, r2 = torch.as_tensor(ratings_1), torch.as_tensor(ratings_2)
    if r1.shape != r2.shape or r1.numel() == 0:
        raise ValueError(f"need two non-empty rating tensors of the same shape, got {tuple(r1.shape)} and {tuple(r2.shape)}")
    return {"exact": (r1 == r2).double().mean().item(),
            "mean_abs_diff": (r1 - r2).abs().double().mean().item(),
            "kappa": category_kappa(r1.tolist(), r2.tolist())}


def compare_raters(raters, gold_rewards, pairs, generator: torch.Generator,
                   temperature: float = DEFAULT_TEMPERATURE) -> list[dict]:
    """For every two raters: agreement of their raw ratings vs of the comparisons their ratings imply.

    One row per pair of raters (each rates every response once), plus a last row for two independent
    Bradley-Terry humans comparing the same pairs at `temperature` (no ratings, so those fields are None).
    Keys: raters, rating_exact, rating_mad, rating_kappa, pair_agreement, pair_kappa.
    """
    gold = torch.as_tensor(gold_rewards, dtype=torch.float64)
    pairs = torch.as_tensor(pairs).reshape(-1, 2)
    ratings = {r.name: rate(r, gold, generator) for r in raters}
    prefs = {name: ratings_to_pairs(x, pairs) for name, x in ratings.items()}
    rows = []
    for n1, n2 in combinations(ratings, 2):
        raw = rating_agreement(ratings[n1], ratings[n2])
        rows.append({"raters": f"{n1} vs {n2}", "rating_exact": raw["exact"], "rating_mad": raw["mean_abs_diff"],
                     "rating_kappa": raw["kappa"], "pair_agreement": agreement_rate(prefs[n1], prefs[n2]),
                     "pair_kappa": cohens_kappa(prefs[n1], prefs[n2])})
    g_a, g_b = gold[pairs[:, 0]], gold[pairs[:, 1]]
    bt_1, bt_2 = (bt_choices(g_a, g_b, temperature, generator) for _ in range(2))
    rows.append({"raters": f"two BT humans (T={temperature:g})", "rating_exact": None, "rating_mad": None,
                 "rating_kappa": None, "pair_agreement": agreement_rate(bt_1, bt_2), "pair_kappa": cohens_kappa(bt_1, bt_2)})
    return rows


# ---------------------------------------------------------------- a simulated student
def simulate_student_labels(pairs, gold_fn, temperature: float, seed: int, path,
                            skip_rate: float = 0.05) -> list[dict]:
    """Label `pairs` as a simulated student would in the widget, into a new label file; return its labels.

    The student compares with Bradley-Terry noise at `temperature` (gold_fn(prompt, response), like
    `reviews.gold_reward`), says "tie" when the two gold rewards are equal, skips a pair with
    probability `skip_rate`, and once mis-clicks and undoes it (on the first pair). Written through a
    `LabelingSession`, so the file is exactly what the widget writes. Refuses to touch an existing file.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists; delete it or pick another path (labels are never overwritten)")
    pairs = [tuple(p) for p in pairs]
    if not pairs:
        raise ValueError("no pairs to label")
    g = torch.Generator().manual_seed(seed)
    g_a = torch.tensor([gold_fn(prompt, a) for prompt, a, _ in pairs], dtype=torch.float64)
    g_b = torch.tensor([gold_fn(prompt, b) for prompt, _, b in pairs], dtype=torch.float64)
    choices = bt_choices(g_a, g_b, temperature, g)
    skips = (torch.rand(len(pairs), generator=g, dtype=torch.float64) < skip_rate).tolist()
    session = LabelingSession(pairs, path)
    for i, choice in enumerate(choices):
        if i == 0:  # the mis-click: the other answer first, then undo
            session.choose("b" if choice == "a" else "a")
            session.undo()
        session.choose("skip" if skips[i] else "tie" if g_a[i] == g_b[i] else choice)
    return session.labels
