"""zoo.py: checkpoint files, the manifest, loading by name."""

import pytest
import torch

from minirlhf import zoo
from minirlhf.course import recipes
from helpers import tiny_model


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
    with pytest.raises(zoo.CheckpointError, match="not a readable checkpoint"), pytest.warns(UserWarning):
        (tmp_path / "junk.pt").write_bytes(b"not a zip")
        zoo.load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(zoo.CheckpointError, match="zoo build"):
        zoo.load_checkpoint(tmp_path / "absent.pt")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(zoo.CheckpointError, match="not a minirlhf checkpoint"), pytest.warns(UserWarning):
        zoo.load_checkpoint(tmp_path / "other.pt")


def test_checkpoint_that_does_not_fit_its_config(tmp_path):
    model = tiny_model()
    zoo.save_checkpoint(tmp_path / "m.pt", model, name="m")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["config"]["n_layers"] = 2
    torch.save(payload, tmp_path / "m.pt")
    (tmp_path / "m.pt.sha256").unlink()      # changed on purpose: its recorded sha256 no longer applies
    with pytest.raises(zoo.CheckpointError, match="does not fit"), pytest.warns(UserWarning, match="unverified"):
        zoo.load_checkpoint(tmp_path / "m.pt")


def test_a_checkpoint_loaded_by_path_refuses_every_single_bit_flip(tmp_path):
    """Loaded without a hash, as a student reloads their own save: torch.load itself notices almost no flip (the
    zip's CRCs are not checked), so the save's own sha256 must."""
    model = tiny_model()
    zoo.save_checkpoint(tmp_path / "m.pt", model, name="m")
    intact = (tmp_path / "m.pt").read_bytes()
    offsets = sorted({*range(0, len(intact), max(1, len(intact) // 60)), len(intact) // 2, len(intact) - 1})
    for offset in offsets:
        damaged = bytearray(intact)
        damaged[offset] ^= 1 << (offset % 8)
        (tmp_path / "m.pt").write_bytes(bytes(damaged))
        with pytest.raises(zoo.CheckpointError, match="(?s)damaged.*save it again"):
            zoo.load_checkpoint(tmp_path / "m.pt")
    (tmp_path / "m.pt").write_bytes(intact)
    loaded, _ = zoo.load_checkpoint(tmp_path / "m.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_a_checkpoint_without_a_recorded_sha256_loads_with_a_warning(tmp_path):
    """Saved before checkpoints carried their sha256 (or copied without it): loadable, but not silently."""
    zoo.save_checkpoint(tmp_path / "m.pt", tiny_model(), name="m")
    (tmp_path / "m.pt.sha256").unlink()
    with pytest.warns(UserWarning, match="(?s)cannot be checked.*save it again"):
        zoo.load_checkpoint(tmp_path / "m.pt")


def test_shipped_checkpoints_carry_the_manifest_sha256_next_to_them():
    """So that loading a shipped file by its path is verified too, and the same as loading it by name."""
    for name, entry in zoo.read_manifest().items():
        if entry["kind"] != "pairs":
            assert zoo.recorded_sha256(zoo.ZOO_DIR / entry["file"]) == entry["sha256"], name


def test_unknown_zoo_name_and_broken_manifest(tmp_path):
    with pytest.raises(zoo.CheckpointError, match="reviews-base"):
        zoo.load("no-such-model")
    (tmp_path / zoo.MANIFEST).write_text("{ broken")
    with pytest.raises(zoo.CheckpointError, match="not valid JSON"):
        zoo.read_manifest(tmp_path)


@pytest.mark.slow
def test_shipped_zoo_verifies_and_loads():
    manifest = zoo.read_manifest()
    assert set(manifest) == set(recipes.RECIPES)
    for name in manifest:
        if manifest[name]["kind"] == "pairs":
            with pytest.raises(zoo.CheckpointError, match="load_pairs"):
                zoo.load(name)
            splits = zoo.load_pairs(name)
            assert {k: len(v) for k, v in splits.items()} == manifest[name]["sizes"]
            ratings = name.endswith("-ratings")     # a data file of 1-5 stars, not of pairs
            assert set(splits["train"][0]) == ({"user", "kind", "prompt", "response", "stars"} if ratings else
                                               {"prompt", "chosen", "rejected", "gold_chosen", "gold_rejected"})
        else:
            assert not zoo.load(name).training


def test_a_damaged_pairs_file_names_the_file_and_what_to_do(tmp_path):
    import gzip
    path = tmp_path / "p.json.gz"
    zoo.save_pairs(path, {"train": [{"prompt": "a", "chosen": "b", "rejected": "c"}]}, name="p")
    good = path.read_bytes()
    cases = {
        "cut short (EOFError)": (good[:len(good) // 2], "is not readable gzip \\(EOFError"),
        "damaged inside (zlib)": (good[:10] + b"\x07" * 20 + good[30:], "is not readable gzip"),
        "not gzip": (b"plain text", "is not readable gzip \\(BadGzipFile"),
        "not JSON": (gzip.compress(b'{"format": 1,\n oops'), "is not valid JSON \\(line 2, column 2"),
        "nested too deep": (gzip.compress(b"[" * 100_000), "is not readable JSON \\(RecursionError"),
        "not UTF-8": (gzip.compress(b'{"a": "\xff"}'), "is not readable JSON \\(UnicodeDecodeError"),
        "a list": (gzip.compress(b"[1, 2]"), "is not a minirlhf preference file"),
        "no splits": (gzip.compress(b'{"format": "minirlhf-pairs/1"}'), "has no 'splits'"),
    }
    for name, (data, message) in cases.items():
        path.write_bytes(data)
        with pytest.raises(zoo.CheckpointError, match=rf"{path}.*{message}.*restore it with git") as caught:
            zoo.load_pairs_file(path)
        assert caught.value.__class__ is zoo.CheckpointError, name


def test_a_damaged_manifest_or_results_file_names_the_file_and_what_to_do(tmp_path):
    path = tmp_path / zoo.MANIFEST
    for data, message in ((b"[" * 100_000, "RecursionError"), (b'{"a": "\xff"}', "UnicodeDecodeError"),
                          (b"[1]", "must be a JSON object"), (b'{"m": {"file": "m.pt"}}', "the entry 'm' needs")):
        path.write_bytes(data)
        with pytest.raises(zoo.CheckpointError, match=rf"{path}.*{message}.*git checkout"):
            zoo.read_manifest(tmp_path)
    (tmp_path / "run.json").write_text('{\n  "x": 1,\n}')
    with pytest.raises(zoo.CheckpointError, match=r"run\.json is not valid JSON \(line 3, .*rerun python -m minirlhf"):
        zoo.load_results("run", tmp_path)
