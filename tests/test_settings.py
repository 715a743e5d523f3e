"""Settings checked before a step is taken: every config refuses what cannot be meant, naming the field, and
accepts every config the course itself uses (the recipes, the experiments, the notebooks, the shipped results)."""
import ast
import dataclasses
import json
import math

import pytest
import torch

from helpers import tiny_config, tiny_models, tiny_reinforce_config
from minirlhf import dpo
from minirlhf.course import recipes, rlvr
from minirlhf.dpo import DPOConfig, train_dpo
from minirlhf.grpo import GRPOConfig, VerifierReward, train_grpo
from minirlhf.rft import RFTConfig
from minirlhf.model import GPT, GPTConfig
from minirlhf.ppo import PPOConfig, train_ppo
from minirlhf.reinforce import ReinforceConfig, train_reinforce
from minirlhf.reward import RewardModel, score, train_reward_model, train_reward_regression
from minirlhf.tasks import reviews
from minirlhf.sampling import SamplingConfig
from minirlhf.tokenizer import TOKENIZER
from minirlhf.train import pretrain, sft
from minirlhf.utils import REPO_ROOT, nonfinite_hint

CONFIGS = {c.__name__: c for c in (PPOConfig, ReinforceConfig, GRPOConfig, RFTConfig, DPOConfig, SamplingConfig)}
TINY = GPTConfig(vocab_size=TOKENIZER.vocab_size, context_length=32, d_model=16, n_layers=1, n_heads=2)


# ---------------------------------------------------------------- what the course uses is accepted
def literal_constructions(source: str):
    """(config name, kwargs) of every call Config(name=literal, ...) in Python source (literal arguments only)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in CONFIGS:
            try:
                kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
                args = [ast.literal_eval(a) for a in node.args]
            except ValueError:
                continue                       # a variable among the arguments: covered by its own source
            if len(kwargs) == len(node.keywords):
                yield node.func.id, args, kwargs


def course_sources():
    for path in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        yield path.name, "\n".join(line for cell in code for line in cell.splitlines() if not line.startswith(("%", "!")))
    for path in sorted((REPO_ROOT / "minirlhf").rglob("*.py")):
        yield str(path.relative_to(REPO_ROOT)), path.read_text()


def test_every_literal_config_of_the_notebooks_and_the_package_is_accepted():
    made = 0
    for where, source in course_sources():
        for name, args, kwargs in literal_constructions(source):
            CONFIGS[name](*args, **kwargs)
            made += 1
    assert made >= 15


def test_the_recipes_experiments_and_shipped_results_configs_are_accepted():
    GRPOConfig(**recipes.GRPO_ARITHMETIC)
    GRPOConfig(**recipes.TOOL_GRPO, success_reward=1.0 - recipes.TOOL_CALL_COST)
    PPOConfig(**recipes.SUPPORT_PPO)
    for method, overrides in rlvr.METHODS.items():
        (RFTConfig if method == "RFT" else GRPOConfig)(**overrides)
    found = 0

    def walk(x):
        nonlocal found
        if isinstance(x, dict):
            for key, value in x.items():
                if key == "config" and isinstance(value, dict):
                    # an older run may lack a field added since: its default applies
                    kinds = [c for c in CONFIGS.values() if set(value) <= {f.name for f in dataclasses.fields(c)}]
                    assert kinds, sorted(value)
                    for kind in kinds:
                        kind(**value)
                    found += 1
                else:
                    walk(value)
        elif isinstance(x, list):
            for value in x:
                walk(value)

    for path in sorted((REPO_ROOT / "data" / "results").glob("*.json")):
        walk(json.loads(path.read_text()))
    assert found >= 20


# ---------------------------------------------------------------- what cannot be meant is refused, by name
BAD = [
    (PPOConfig, "beta", -0.1), (PPOConfig, "beta", math.nan), (PPOConfig, "beta", math.inf), (PPOConfig, "clip", -0.2),
    (PPOConfig, "vf_clip", -0.2), (PPOConfig, "gamma", 1.5), (PPOConfig, "gamma", -0.1), (PPOConfig, "lam", 2.0),
    (PPOConfig, "lam", math.nan), (PPOConfig, "batch_size", 0), (PPOConfig, "epochs", 0), (PPOConfig, "minibatches", 0),
    (PPOConfig, "minibatches", -2), (PPOConfig, "iterations", 0), (PPOConfig, "lr", 0.0), (PPOConfig, "lr", -1e-4),
    (PPOConfig, "lr", math.nan), (PPOConfig, "temperature", 0.0), (PPOConfig, "max_new_tokens", 0),
    (PPOConfig, "iterations", 2.5), (PPOConfig, "batch_size", True), (PPOConfig, "target_kl", 0.0),
    (ReinforceConfig, "beta", -1.0), (ReinforceConfig, "batch_size", 0), (ReinforceConfig, "lr", 0),
    (ReinforceConfig, "iterations", -1), (ReinforceConfig, "top_k", 0),
    (GRPOConfig, "beta", -0.04), (GRPOConfig, "beta", math.nan), (GRPOConfig, "epsilon", -0.2),
    (GRPOConfig, "epsilon_high", -0.28), (GRPOConfig, "steps", 0), (GRPOConfig, "prompts_per_step", 0),
    (GRPOConfig, "num_iterations", 0), (GRPOConfig, "lr", 0.0), (GRPOConfig, "max_completion_length", 0),
    (GRPOConfig, "temperature", -1.0),
    (RFTConfig, "steps", 0), (RFTConfig, "num_generations", 0), (RFTConfig, "lr", -1e-4), (RFTConfig, "lr", math.nan),
    (DPOConfig, "beta", math.nan), (DPOConfig, "beta", -0.1), (DPOConfig, "beta", math.inf),
    (DPOConfig, "learning_rate", 0.0), (DPOConfig, "batch_size", 0), (DPOConfig, "steps", 0),
    (DPOConfig, "label_smoothing", 0.5), (DPOConfig, "label_smoothing", -0.1), (DPOConfig, "rpo_alpha", -1.0),
    (SamplingConfig, "temperature", 0.0), (SamplingConfig, "max_new_tokens", 0), (SamplingConfig, "top_k", 0),
]


@pytest.mark.parametrize("config, field, value", BAD, ids=[f"{c.__name__}.{f}={v}" for c, f, v in BAD])
def test_a_setting_that_cannot_be_meant_is_refused_at_construction_naming_the_field(config, field, value):
    with pytest.raises(ValueError, match=rf"{config.__name__}\.{field} must be .*, got {value!r}"):
        config(**{field: value})


def test_a_negative_beta_is_explained_and_zero_stays_allowed_where_it_means_no_kl():
    with pytest.raises(ValueError, match="pay the policy to move away"):
        GRPOConfig(beta=-0.1)
    assert PPOConfig(beta=0.0).beta == 0.0 and GRPOConfig(beta=0.0).beta == 0.0


def test_ppo_minibatches_must_divide_the_batch_at_construction():
    with pytest.raises(ValueError, match=r"PPOConfig\.batch_size \(6\) must be divisible by minibatches \(4\)"):
        PPOConfig(batch_size=6, minibatches=4)
    with pytest.raises(ValueError, match="critic must be one of"):
        PPOConfig(critic="joint")


@pytest.mark.parametrize("call, field", [
    (lambda: pretrain(GPT(TINY), ["ab"] * 8, steps=1, batch_size=0), "pretrain.batch_size"),
    (lambda: sft(GPT(TINY), [("a", "b")], steps=1, batch_size=-1), "sft.batch_size"),
    (lambda: sft(GPT(TINY), [("a", "b")], steps=0), "train_lm.steps"),
    (lambda: sft(GPT(TINY), [("a", "b")], steps=1, lr=0.0), "train_lm.lr"),
    (lambda: sft(GPT(TINY), [("a", "b")], steps=1, warmup=-1), "train_lm.warmup"),
    (lambda: train_reward_model(RewardModel(TINY), [("a", "b", "c")], steps=1, batch_size=0),
     "train_reward_model.batch_size"),
    (lambda: train_reward_model(RewardModel(TINY), [("a", "b", "c")], steps=1, lr=math.nan), "train_reward_model.lr"),
    (lambda: train_reward_regression(RewardModel(TINY), [("a", "b")], [1.0], steps=1, batch_size=0),
     "train_reward_regression.batch_size"),
])
def test_the_loops_without_a_config_check_their_keyword_settings(call, field):
    with pytest.raises(ValueError, match=rf"{field} must be"):
        call()


# ---------------------------------------------------------------- a non-finite loss names the setting behind it
def test_the_nonfinite_hint_names_the_extreme_settings_or_else_the_learning_rate():
    hint = nonfinite_hint(PPOConfig(temperature=0.01, beta=50.0))
    assert "temperature = 0.01" in hint and "beta = 50.0" in hint and "lower the learning rate" not in hint
    assert nonfinite_hint(DPOConfig(learning_rate=0.5)).startswith("the likely cause is learning_rate = 0.5")
    assert nonfinite_hint(PPOConfig()) == ("no setting looks extreme: lower the learning rate (now 0.00015), "
                                           "or look for NaN/inf in the inputs")
    assert "lower the learning rate, or look" in nonfinite_hint({})


def test_a_nonfinite_dpo_loss_names_the_extreme_beta(monkeypatch):
    monkeypatch.setattr(dpo, "dpo_loss", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
    pairs = [{"prompt": "a", "chosen": "b", "rejected": "c"}] * 4
    with pytest.raises(FloatingPointError, match=r"DPO loss became nan at step 0: the likely cause is beta = 50\.0"):
        train_dpo(GPT(TINY), pairs, DPOConfig(beta=50.0, steps=1, batch_size=4))
    with pytest.raises(FloatingPointError, match=r"no setting looks extreme: lower the learning rate \(now 5e-05\)"):
        train_dpo(GPT(TINY), pairs, DPOConfig(steps=1, batch_size=4))


def test_a_nonfinite_sft_loss_names_the_learning_rate():
    model = GPT(TINY)
    with torch.no_grad():
        model.tok_emb.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"training loss became nan at step 0: the likely cause is lr = 1\.0"):
        sft(model, [("a", "b")], steps=1, lr=1.0)


# ---------------------------------------------------------------- a reward must be one number per row
class ColumnRM(torch.nn.Module):
    """A reward model whose head kept its last dimension: (B, 1) instead of (B,)."""

    def __init__(self, rm):
        super().__init__()
        self.rm = rm

    def forward(self, tokens, attention_mask):
        return self.rm(tokens, attention_mask)[:, None]


def test_a_reward_model_returning_b_by_1_is_refused_where_the_trainers_call_it():
    policy, reference, rm = tiny_models()
    message = r"returned \(8, 1\) for 8 rows: it must return one scalar per row, a tensor of shape \(8,\)"
    with pytest.raises(ValueError, match=message):
        train_ppo(policy, reference, ColumnRM(rm), reviews.prompts, tiny_config(iterations=1))
    with pytest.raises(ValueError, match=message):
        train_reinforce(policy, reference, ColumnRM(rm), reviews.prompts, tiny_reinforce_config(iterations=1))
    with pytest.raises(ValueError, match=r"returned \(2, 1\) for 2 rows"):
        score(ColumnRM(rm), ["review: soup\n"] * 2, ["good.", "bad."])


def test_a_reward_function_returning_a_list_is_refused_with_what_to_return():
    config = GRPOConfig(steps=1, prompts_per_step=2, num_generations=2, max_completion_length=4)
    with pytest.raises(TypeError, match=r"reward_fn returned \[1\.0\] .*one number \(a float\) per \(prompt, response\)"):
        train_grpo(GPT(TINY), ["q: 1+1\na: "], lambda p, r: [1.0], config)
    tokens = torch.tensor([TOKENIZER.encode("q: 1\na: 2", bos=True)])
    with pytest.raises(TypeError, match="one number"):
        VerifierReward(lambda p, r: (1.0, 2.0), "\na: ")(tokens, torch.ones_like(tokens, dtype=torch.bool))
