import json
from pathlib import Path

import nbformat
import pytest
import torch

from minirlhf import student, zoo
from minirlhf.model import GPT, GPTConfig
from minirlhf.reward import RewardModel
from minirlhf.tasks import arithmetic, reviews
from minirlhf.train import cosine_lr, pretrain, sft
from minirlhf.utils import seed_everything

TINY = dict(vocab_size=57, context_length=32, d_model=32, n_layers=1, n_heads=2)


def tiny_model(seed=0):
    seed_everything(seed)
    return GPT(GPTConfig(**TINY))


def test_pretraining_lowers_the_loss_and_is_deterministic():
    texts = arithmetic.pretraining_corpus(500)
    h1 = pretrain(tiny_model(), texts, steps=40, batch_size=8, lr=3e-3, warmup=5)
    h2 = pretrain(tiny_model(), texts, steps=40, batch_size=8, lr=3e-3, warmup=5)
    assert h1["loss"] == h2["loss"]
    assert sum(h1["loss"][-5:]) / 5 < h1["loss"][0] - 0.5


def test_sft_only_learns_the_response():
    """With lr on, SFT changes the model; but the loss never sees prompt tokens: check through the batch mask."""
    model = tiny_model()
    pairs = arithmetic.sft_dataset(50)
    h = sft(model, pairs, steps=5, batch_size=4, lr=1e-3, warmup=1,
            eval_fn=lambda m: {"ok": 1.0}, eval_every=2)
    assert len(h["loss"]) == 5 and [s for s, _ in h["eval"]] == [2, 4, 5]
    with pytest.raises(ValueError, match="context"):
        sft(tiny_model(), [("q: 1+1\na: ", "2" * 40)], steps=1)


def test_cosine_schedule():
    assert cosine_lr(0, 100, 1.0, warmup=10) == pytest.approx(0.1)
    assert cosine_lr(9, 100, 1.0, warmup=10) == pytest.approx(1.0)
    assert cosine_lr(100, 100, 1.0, warmup=10) == pytest.approx(0.1)


def test_nonfinite_loss_stops_training():
    model = tiny_model()
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan")) if hasattr(model, "lm_head") else next(model.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="step 0"):
        pretrain(model, arithmetic.pretraining_corpus(100), steps=2, batch_size=2)


# ---------------------------------------------------------------- zoo
def test_checkpoint_roundtrip_and_manifest_verification(tmp_path):
    model = tiny_model()
    sha = zoo.save_checkpoint(tmp_path / "m.pt", model, name="m", meta={"x": 1})
    loaded, meta = zoo.load_checkpoint(tmp_path / "m.pt", expected_sha256=sha)
    assert meta == {"x": 1}
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    assert not list(tmp_path.glob(".*.tmp")), "temporary file left behind"
    # same weights -> same bytes: rebuilding the zoo is checkable by sha256
    assert zoo.save_checkpoint(tmp_path / "m2.pt", model, name="m", meta={"x": 1}) == sha


def test_corrupt_missing_and_foreign_files_give_clear_errors(tmp_path):
    sha = zoo.save_checkpoint(tmp_path / "m.pt", tiny_model(), name="m")
    data = bytearray((tmp_path / "m.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "m.pt").write_bytes(bytes(data))
    with pytest.raises(zoo.CheckpointError, match="corrupt"):
        zoo.load_checkpoint(tmp_path / "m.pt", expected_sha256=sha)
    with pytest.raises(zoo.CheckpointError, match="not a readable checkpoint"):
        (tmp_path / "junk.pt").write_bytes(b"not a zip")
        zoo.load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(zoo.CheckpointError, match="zoo build"):
        zoo.load_checkpoint(tmp_path / "absent.pt")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(zoo.CheckpointError, match="not a minirlhf checkpoint"):
        zoo.load_checkpoint(tmp_path / "other.pt")


def test_checkpoint_that_does_not_fit_its_config(tmp_path):
    model = tiny_model()
    zoo.save_checkpoint(tmp_path / "m.pt", model, name="m")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["config"]["n_layers"] = 2
    torch.save(payload, tmp_path / "m.pt")
    with pytest.raises(zoo.CheckpointError, match="does not fit"):
        zoo.load_checkpoint(tmp_path / "m.pt")


def test_unknown_zoo_name_and_broken_manifest(tmp_path):
    with pytest.raises(KeyError, match="reviews-base"):
        zoo.load("no-such-model")
    (tmp_path / zoo.MANIFEST).write_text("{ broken")
    with pytest.raises(zoo.CheckpointError, match="not valid JSON"):
        zoo.read_manifest(tmp_path)


def test_shipped_zoo_verifies_and_loads():
    manifest = zoo.read_manifest()
    assert set(manifest) == set(zoo.RECIPES)
    for name in manifest:
        if zoo.RECIPES[name].kind == "pairs":
            with pytest.raises(zoo.CheckpointError, match="load_pairs"):
                zoo.load(name)
            splits = zoo.load_pairs(name)
            assert {k: len(v) for k, v in splits.items()} == manifest[name]["sizes"]
            assert set(splits["train"][0]) == {"prompt", "chosen", "rejected", "gold_chosen", "gold_rejected"}
        else:
            assert not zoo.load(name).training


def test_pairs_and_reward_recipes_build_deterministically(tmp_path, monkeypatch):
    """The preference data and the reward model are zoo entries like the models: built from their parent,
    byte-identical when rebuilt, a corrupt pairs file is refused."""
    config = dict(vocab_size=57, context_length=160, d_model=32, n_layers=1, n_heads=2)
    short = {r.name: r for r in [
        zoo.Recipe("tiny", "", config, lambda m: pretrain(m, reviews.pretraining_corpus(40, seed=0), steps=2)),
        zoo.Recipe("tiny-pairs", "", config, lambda policy: zoo._sample_reviews_pairs(policy, n_train=12, n_test=6),
                   parent="tiny", kind="pairs"),
        zoo.Recipe("tiny-rm", "", config, lambda rm, pairs: zoo._train_reviews_rm(rm, pairs, steps=2, batch_size=4),
                   parent="tiny", kind="reward", pairs="tiny-pairs")]}
    monkeypatch.setattr(zoo, "RECIPES", short)
    a = zoo.build(None, zoo_dir=tmp_path / "a", log=lambda s: None)
    b = zoo.build(None, zoo_dir=tmp_path / "b", log=lambda s: None)
    assert {n: e["sha256"] for n, e in a.items()} == {n: e["sha256"] for n, e in b.items()}
    assert a["tiny-pairs"]["sizes"] == {"train": 12, "test": 6}
    assert set(a["tiny-rm"]["test"]) == {"accuracy", "expected_accuracy", "bayes_ceiling", "ratio", "gold_order_accuracy"}
    pairs = zoo.load_pairs("tiny-pairs", tmp_path / "a")
    assert len(pairs["train"]) == 12 and pairs["test"][0]["prompt"].startswith("review: ")
    rm, meta = zoo.load_with_meta("tiny-rm", tmp_path / "a")
    assert isinstance(rm, RewardModel) and len(meta["loss_curve"]) == 2
    (tmp_path / "a" / "tiny-pairs.json.gz").write_bytes(b"not gzip")
    with pytest.raises(zoo.CheckpointError, match="sha256"):
        zoo.load_pairs("tiny-pairs", tmp_path / "a")
    with pytest.raises(zoo.CheckpointError, match="gzipped JSON"):
        zoo.load_pairs_file(tmp_path / "a" / "tiny-pairs.json.gz")


def test_build_is_deterministic_and_parents_come_first(tmp_path, monkeypatch):
    """A shortened recipe built twice gives byte-identical checkpoints (same machine, same threads)."""
    short = {n: zoo.Recipe(r.name, r.description, TINY, lambda m, r=r: r.train(m, steps=3, n_texts=200) if "pre" in r.train.__name__
                           else r.train(m, steps=3, n_pairs=50), parent=r.parent, seed=r.seed)
             for n, r in zoo.RECIPES.items() if n.startswith("arithmetic")}
    monkeypatch.setattr(zoo, "RECIPES", short)
    a = zoo.build(["arithmetic-sft", "arithmetic-base"], zoo_dir=tmp_path / "a", log=lambda s: None)
    b = zoo.build(None, zoo_dir=tmp_path / "b", log=lambda s: None)
    assert list(a) == ["arithmetic-base", "arithmetic-sft"]
    assert {n: e["sha256"] for n, e in a.items()} == {n: e["sha256"] for n, e in b.items()}
    assert json.loads((tmp_path / "a" / zoo.MANIFEST).read_text())["arithmetic-sft"]["parent"] == "arithmetic-base"
    with pytest.raises(zoo.CheckpointError, match="arithmetic-base"):
        zoo.build(["arithmetic-sft"], zoo_dir=tmp_path / "c", log=lambda s: None)


# ---------------------------------------------------------------- student versions
def test_strip_solutions_keeps_indentation_and_rejects_broken_markers():
    src = "def f(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\n\nf = check_f(f)"
    out = student.strip_solutions(src)
    assert out == "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\nf = check_f(f)"
    with pytest.raises(ValueError, match="never closed"):
        student.strip_solutions("### BEGIN SOLUTION\nx = 1")
    with pytest.raises(ValueError, match="without"):
        student.strip_solutions("x = 1\n### END SOLUTION")


def test_student_version_clears_outputs():
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"state": {}}
    cell = nbformat.v4.new_code_cell("x = 1\n### BEGIN SOLUTION\ny = 2\n### END SOLUTION")
    cell.outputs = [nbformat.v4.new_output("stream", text="hi")]
    cell.execution_count = 3
    nb.cells.append(cell)
    out = student.student_version(nb)
    assert out.cells[0].outputs == [] and out.cells[0].execution_count is None
    assert "widgets" not in out.metadata and "y = 2" not in out.cells[0].source
    assert nb.cells[0].outputs, "the solution notebook itself must not be modified"


def test_committed_student_notebooks_are_up_to_date():
    assert student.solution_notebooks(), "no solution notebooks found"
    assert student._main(["--check"]) == 0, "run `python -m minirlhf.student` and commit notebooks/student/"


def test_every_solution_notebook_has_exercises_with_checks():
    overview = {"00_rlhf_map.ipynb"}   # the opening map runs the pipeline; it teaches nothing to exercise yet
    for path in student.solution_notebooks():
        assert nbformat.read(path, as_version=4).metadata.kernelspec.name == "python3"
        if path.name in overview:
            continue
        text = student.render(path)
        nb = nbformat.reads(text, as_version=4)
        stubs = sum("raise NotImplementedError()" in c.source for c in nb.cells if c.cell_type == "code")
        assert stubs >= 1, f"{path.name} has no exercise"
        assert "exercise_summary(" in text, f"{path.name} does not end with exercise_summary"
