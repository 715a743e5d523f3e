"""course/recipes.py: building the zoo from its recipes, in dependency order, inside the target folder."""
import json

import pytest
import torch

from minirlhf import zoo
from minirlhf.course import recipes
from minirlhf.course.recipes import Recipe
from minirlhf.reward import RewardModel
from minirlhf.tasks import reviews
from minirlhf.train import pretrain

CONFIG = dict(vocab_size=57, context_length=160, d_model=32, n_layers=1, n_heads=2)
QUIET = dict(log=lambda line: None)


def _pretrain(steps, seed=0):
    return lambda m, inputs: pretrain(m, reviews.pretraining_corpus(40, seed=0), steps=steps, seed=seed)


@pytest.mark.slow
def test_pairs_and_reward_recipes_build_deterministically(tmp_path):
    """The preference data and the reward model are zoo entries like the models: built from their parent,
    byte-identical when rebuilt, a corrupt pairs file is refused."""
    short = {r.name: r for r in [
        Recipe("tiny", "", CONFIG, _pretrain(2)),
        Recipe("tiny-pairs", "", CONFIG, lambda policy, inputs: recipes._sample_reviews_pairs(policy, inputs, n_train=12, n_test=6),
               kind="pairs", parent="tiny"),
        Recipe("tiny-rm", "", CONFIG,
               lambda rm, inputs: recipes._train_reviews_rm(rm, {"reviews-pairs": inputs["tiny-pairs"]}, steps=2, batch_size=4),
               kind="reward", parent="tiny", needs=("tiny-pairs",))]}
    a = recipes.build(None, zoo_dir=tmp_path / "a", recipes=short, **QUIET)
    b = recipes.build(None, zoo_dir=tmp_path / "b", recipes=short, **QUIET)
    assert {n: e["sha256"] for n, e in a.items()} == {n: e["sha256"] for n, e in b.items()}
    assert a["tiny-pairs"]["sizes"] == {"train": 12, "test": 6}
    assert a["tiny-rm"]["needs"] == ["tiny", "tiny-pairs"] and a["tiny-rm"]["kind"] == "reward"
    assert set(a["tiny-rm"]["test"]) == {"accuracy", "expected_accuracy", "bayes_ceiling", "ratio", "gold_order_accuracy"}
    pairs = zoo.load_pairs("tiny-pairs", tmp_path / "a")
    assert len(pairs["train"]) == 12 and pairs["test"][0]["prompt"].startswith("review: ")
    rm, meta = zoo.load_with_meta("tiny-rm", tmp_path / "a")
    assert isinstance(rm, RewardModel) and len(meta["loss_curve"]) == 2
    with pytest.raises(zoo.CheckpointError, match="load_pairs"):
        zoo.load("tiny-pairs", tmp_path / "a")
    with pytest.raises(zoo.CheckpointError, match="not preference data"):
        zoo.load_pairs("tiny-rm", tmp_path / "a")
    (tmp_path / "a" / "tiny-pairs.json.gz").write_bytes(b"not gzip")
    with pytest.raises(zoo.CheckpointError, match="sha256"):
        zoo.load_pairs("tiny-pairs", tmp_path / "a")
    with pytest.raises(zoo.CheckpointError, match="not readable gzip"):
        zoo.load_pairs_file(tmp_path / "a" / "tiny-pairs.json.gz")


def test_build_is_deterministic_and_parents_come_first(tmp_path):
    """A shortened recipe built twice gives byte-identical checkpoints (same machine, same threads)."""
    small = dict(CONFIG, context_length=32)
    short = {n: Recipe(r.name, r.description, dict(small, context_length=r.config["context_length"]),
                       lambda m, inputs, r=r: r.train(m, inputs, steps=3, **({"n_texts": 200} if "pre" in r.train.__name__
                                                                             else {"n_pairs": 50})),
                       parent=r.parent, seed=r.seed)
             for n, r in recipes.RECIPES.items() if n in ("arithmetic-base", "arithmetic-sft", "arithmetic-tool-sft")}
    a = recipes.build(["arithmetic-sft", "arithmetic-base"], zoo_dir=tmp_path / "a", recipes=short, **QUIET)
    b = recipes.build(None, zoo_dir=tmp_path / "b", recipes=short, **QUIET)
    assert list(a) == ["arithmetic-base", "arithmetic-sft"]
    assert {n: e["sha256"] for n, e in a.items()} == {n: b[n]["sha256"] for n in a}
    assert b["arithmetic-tool-sft"]["parent"] == "arithmetic-sft" and b["arithmetic-tool-sft"]["config"]["context_length"] == 64
    assert json.loads((tmp_path / "a" / zoo.MANIFEST).read_text())["arithmetic-sft"]["parent"] == "arithmetic-base"
    with pytest.raises(zoo.CheckpointError, match="arithmetic-base"):
        recipes.build(["arithmetic-sft"], zoo_dir=tmp_path / "c", recipes=short, **QUIET)


def _fingerprint(model) -> float:
    return float(sum(p.double().sum() for p in model.state_dict().values()))


@pytest.mark.slow
def test_children_are_built_from_the_parents_in_the_target_folder(tmp_path):
    """Rebuilding a parent in a folder is what its children are built from there: never the shipped zoo, and
    every entry a child needs (not only its parent) comes from that folder."""
    seen = {}

    def child(model, inputs):
        seen["parent"] = _fingerprint(inputs["base"])
        seen["other"] = _fingerprint(inputs["other"])
        return pretrain(model, reviews.pretraining_corpus(40, seed=0), steps=1)

    def make(base_seed):
        return {r.name: r for r in [
            Recipe("base", "", CONFIG, _pretrain(2, base_seed)),
            Recipe("other", "", CONFIG, _pretrain(1)),
            Recipe("child", "", CONFIG, child, parent="base", needs=("other",))]}

    old = recipes.build(None, zoo_dir=tmp_path, recipes=make(0), **QUIET)
    first = dict(seen)
    # the base recipe changes and is rebuilt together with its child: the child starts from the NEW base
    new = recipes.build(["base", "child"], zoo_dir=tmp_path, recipes=make(1), **QUIET)
    assert new["base"]["sha256"] != old["base"]["sha256"]
    assert seen["parent"] == pytest.approx(_fingerprint(zoo.load("base", tmp_path)), abs=0)
    assert seen["parent"] != first["parent"] and seen["other"] == first["other"]
    # rebuilding the child alone takes the base that is in the folder now, not the shipped zoo's
    recipes.build(["child"], zoo_dir=tmp_path, recipes=make(1), **QUIET)
    assert seen["parent"] == pytest.approx(_fingerprint(zoo.load("base", tmp_path)), abs=0)
    # --check rebuilds in a copy of the folder and compares
    assert recipes.check_build(["base", "child"], zoo_dir=tmp_path, recipes=make(1), **QUIET) == {"base": True, "child": True}
    assert recipes.check_build(["base"], zoo_dir=tmp_path, recipes=make(2), **QUIET) == {"base": False}


def test_every_shipped_recipe_declares_what_it_is_built_from():
    """reviews-ppo needs the SFT reference and the reward model; reviews-rm needs the pairs; parents come first."""
    assert recipes.RECIPES["reviews-ppo"].depends_on == ("reviews-sft", "reviews-rm")
    assert recipes.RECIPES["reviews-rm"].depends_on == ("reviews-sft", "reviews-pairs")
    manifest = zoo.read_manifest()
    for name, r in recipes.RECIPES.items():
        assert manifest[name]["needs"] == list(r.depends_on) and manifest[name]["kind"] == r.kind, name
    with pytest.raises(ValueError, match="listed before"):
        recipes.check_recipes({"a": Recipe("a", "", CONFIG, _pretrain(1), parent="b"),
                               "b": Recipe("b", "", CONFIG, _pretrain(1))})
    with pytest.raises(ValueError, match="kind"):
        recipes.check_recipes({"a": Recipe("a", "", CONFIG, _pretrain(1), kind="value")})


def test_run_recipe_uses_the_given_inputs(tmp_path):
    """A notebook can run a recipe shortened (overrides) from models it already holds (inputs)."""
    base = {"tiny": Recipe("tiny", "", CONFIG, _pretrain(1)),
            "tiny-2": Recipe("tiny-2", "", CONFIG, _pretrain(1), parent="tiny")}
    parent, _ = recipes.run_recipe("tiny", recipes=base)
    child, history = recipes.run_recipe("tiny-2", {"tiny": parent}, recipes=base)
    assert len(history["loss"]) == 1 and not torch.equal(child.tok_emb.weight, parent.tok_emb.weight)


@pytest.mark.slow
def test_shipped_reviews_dpo_beats_sft_on_gold_and_logs_trl_metrics():
    """The zoo's DPO policy: trained on reviews-pairs from reviews-sft, its held-out gold rose along the run."""
    assert recipes.RECIPES["reviews-dpo"].depends_on == ("reviews-sft", "reviews-pairs")
    _, meta = zoo.load_with_meta("reviews-dpo")
    for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
                "logps/rejected"):
        assert len(meta[key]) == len(meta["loss_curve"]) == 125, key
    assert meta["eval/gold"][-1] > meta["eval/gold"][0] + 2 * meta["eval/gold_se"][0]
    assert sum(meta["rewards/accuracies"][-20:]) / 20 > 0.6


def test_the_judge_recipe_stretches_the_context_and_records_its_held_out_accuracy(tmp_path):
    """reviews-judge, shortened: a tiny base and SFT model, 10 comparisons (any principle: a 2-step model's samples
    rarely differ on one), 2 steps."""
    short = {r.name: r for r in [
        Recipe("reviews-base", "", CONFIG, _pretrain(2)),
        Recipe("reviews-sft", "", CONFIG, _pretrain(2, seed=1)),
        Recipe("reviews-judge", "", {**CONFIG, "context_length": 320},
               lambda m, inputs: recipes._train_reviews_judge(m, inputs, steps=2, n_pool=12, n_test=2,
                                                                max_new_tokens=40, informative=False),
               needs=("reviews-base", "reviews-sft"))]}
    manifest = recipes.build(None, zoo_dir=tmp_path, recipes=short, **QUIET)
    judge = zoo.load("reviews-judge", tmp_path)
    base = zoo.load("reviews-base", tmp_path)
    assert judge.config.context_length == 320
    torch.testing.assert_close(judge.pos_emb.weight[:160], base.pos_emb.weight, atol=0.05, rtol=0)   # 2 small steps
    assert 0 <= manifest["reviews-judge"]["test"]["human_label_accuracy"] <= 1


@pytest.mark.slow
def test_shipped_tool_grpo_calls_where_a_call_pays_and_beats_its_sft():
    """c = 0.05: calling pays on two-digit sums (a call right 0.99 of the time against 0.62 alone at T = 1)."""
    from minirlhf.course.experiments import tool_buckets
    from minirlhf.evaluate import tool_use_accuracy

    sums = tool_buckets(100, seed=50)["two-digit sums"]
    rl, sft = (tool_use_accuracy(zoo.load(name), sums)["all"] for name in ("arithmetic-tool-grpo", "arithmetic-tool-sft"))
    assert rl["call_rate"] > 0.9 > 0.1 > sft["call_rate"]
    assert rl["accuracy"] > sft["accuracy"] + 0.08 and rl["accuracy"] > 0.95
