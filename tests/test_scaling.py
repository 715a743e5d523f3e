"""scaling.py: memory per GPU at real sizes, against the ZeRO paper (Rajbhandari et al. 2020, figure 1)."""
import pytest

from minirlhf import exercises as ex
from minirlhf import scaling
from conftest import assert_check_behaves


@pytest.mark.parametrize("stage,gb", [(0, 120.0), (1, 31.4), (2, 16.6), (3, 1.9)])
def test_the_zero_papers_7_5b_model_on_64_gpus(stage, gb):
    """The paper's figure 1: 7.5B parameters, K = 12, N_d = 64: 120 GB, 31.4 GB, 16.6 GB, 1.9 GB per GPU."""
    assert scaling.trained_model_bytes(7.5e9, stage, 64) / scaling.GB == pytest.approx(gb, abs=0.05)


def test_kv_cache_of_llama_2_7b_is_half_a_megabyte_per_token():
    assert scaling.SHAPES["7B"].kv_bytes_per_token == 2 * 32 * 4096 * 2 == 524288
    assert scaling.SHAPES["70B"].kv_bytes_per_token == 2 * 80 * 8 * 128 * 2      # grouped-query attention: 8 KV heads


def test_ppo_holds_four_models_dpo_two_grpo_one():
    ppo, dpo, grpo = (scaling.rlhf_memory(a, "7B", rows_per_gpu=0) for a in ("ppo", "dpo", "grpo"))
    trained, frozen = 16 * 6.7, 2 * 6.7
    assert ppo["total"] == pytest.approx(2 * trained + 2 * frozen)
    assert dpo["total"] == pytest.approx(trained + frozen) and grpo["total"] == pytest.approx(trained)
    assert "reference" not in scaling.rlhf_memory("dpo, precomputed reference", "7B")
    assert scaling.rlhf_memory("grpo, beta > 0", "7B", rows_per_gpu=0)["total"] == pytest.approx(trained + frozen)
    sharded = scaling.rlhf_memory("ppo", "70B", stage=3, world=64, rows_per_gpu=0)
    assert sharded["total"] == pytest.approx((2 * 16 + 2 * 2) * 69 / 64)


def test_memory_table_and_bad_input():
    rows = scaling.memory_table(world=8, rows_per_gpu=4, tokens=512)
    assert len(rows) == len(scaling.SHAPES) * len(scaling.ALGORITHMS) * 2
    assert all(r["gb_per_gpu"] > 0 for r in rows)
    for bad, match in ((dict(algorithm="sft", size="7B"), "algorithm must be"), (dict(algorithm="ppo", size="13B"), "size must"),
                       (dict(algorithm="ppo", size="7B", stage=4), "stage must"), (dict(algorithm="ppo", size="7B", world=0), "world")):
        with pytest.raises(ValueError, match=match):
            scaling.rlhf_memory(bad.pop("algorithm"), bad.pop("size"), **bad)


def test_lora_a_small_critic_and_adam_offload_each_save_what_they_should():
    shape = scaling.PUBLISHED_SHAPES["OPT-13B"]
    assert scaling.lora_params(shape, 128) == 128 * 40 * 18 * 5120          # four d x d projections and a d x 4d MLP
    plain = scaling.rlhf_memory("ppo", shape, rows_per_gpu=0)
    assert plain["total"] == pytest.approx(36 * 13)                           # 16 + 16 + 2 + 2 bytes per parameter
    lora = scaling.rlhf_memory("ppo", shape, rows_per_gpu=0, lora_rank=128)
    assert lora["policy (frozen, LoRA adapters trained)"] == pytest.approx(2 * 13 + 16 * scaling.lora_params(shape, 128) / 1e9)
    small = scaling.rlhf_memory("ppo", shape, rows_per_gpu=0, critic="0.1B")
    assert small["value model (trained)"] == pytest.approx(16 * 0.124) and small["reward model"] == pytest.approx(2 * 0.124)
    offload = scaling.rlhf_memory("ppo", shape, rows_per_gpu=0, adam_offload=True)
    assert offload["total"] == pytest.approx(plain["total"] - 2 * 12 * 13)    # Adam's 12 bytes of both trained models
    assert scaling.trained_model_bytes(7.5e9, 3, 64, adam_offload=True) == pytest.approx(4 * 7.5e9 / 64)
    with pytest.raises(ValueError, match="for ppo only"):
        scaling.rlhf_memory("dpo", "7B", critic="0.1B")
    with pytest.raises(ValueError, match="LoRA rank"):
        scaling.lora_params(shape, 0)


def test_published_claims_hold_in_their_setting_and_what_full_fine_tuning_would_need():
    """DeepSpeed-Chat (table 3 of its blog, the README's three examples) and OpenRLHF (70B on 16 A100-80G) against
    rlhf_memory: every claim holds with the publication's LoRA / small critic / Adam offload (and for the "largest
    model" claims the next OPT size does not fit); plain full fine-tuning with a policy-sized critic does not fit
    where those savings are what made it possible, and the rows say which."""
    rows = scaling.published_checks()
    assert len(rows) == len(scaling.PUBLISHED) == 8
    for r in rows:
        assert r["url"].startswith("https://github.com/") and r["setting_url"].startswith("https://github.com/")
        assert r["agrees"] and r["fits"] and r["ours_gb"] <= r["gpu_gb"], r
        assert r["plain_gb"] >= r["ours_gb"] and r["savings"] != "none"
    largest = [r for r in rows if r["next_size"]]
    assert len(largest) == 4 and all(r["next_gb"] > r["gpu_gb"] for r in largest)
    assert [r["plain_fits"] for r in rows] == [False, False, False, False, True, False, True, False]
    a100_40 = rows[2]
    assert a100_40["gpu_gb"] == pytest.approx(42.95, abs=0.01) and a100_40["gpu_gb"] - a100_40["ours_gb"] < 5   # tight
    openrlhf = rows[-1]
    assert openrlhf["savings"] == "Adam in CPU memory" and openrlhf["plain_gb"] > 2 * openrlhf["gpu_gb"]


def test_zero_memory_check(capsys):
    def by_parts(params, stage, world):          # right, written differently: what each GPU keeps, part by part
        sharded = {0: 0, 1: 12, 2: 14, 3: 16}[stage]
        return (16 - sharded) * params + sharded * params / world

    wrongs = [
        (lambda p, s, w: 2 * p / (w if s >= 3 else 1) + 2 * p / (w if s >= 2 else 1) + 8 * p / (w if s >= 1 else 1),
         "12 bytes per parameter"),
        (lambda p, s, w: 16 * p / (w if s >= 1 else 1), "stage 1 shards only the optimizer state"),
        (lambda p, s, w: 16 * p / (w if s >= 2 else 1) if s >= 2 else scaling.trained_model_bytes(p, s, w),
         "stage 2 shards the gradients"),
        (lambda p, s, w: scaling.trained_model_bytes(p, min(s, 2), w), "stage 3 shards the weights too"),
        (lambda p, s, w: str(scaling.trained_model_bytes(p, s, w)), "float"),
    ]
    assert_check_behaves(ex.check_zero_memory, [scaling.trained_model_bytes, by_parts], wrongs, capsys)
