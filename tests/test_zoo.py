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
