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
