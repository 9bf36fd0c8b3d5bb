"""Tests for the GPU, machine and model catalogs and their memory arithmetic.

Expected values are worked out by hand from the architectures (config.json values) and the hardware
figures of REFERENCE.md section 4, not read back from the catalog.
"""

from __future__ import annotations

import dataclasses

import pytest

from strato.errors import ConfigError
from strato.llm.catalog import (
    DEFAULT_RESERVE_FRACTION,
    GIB,
    Gpu,
    LlmModel,
    check_tensor_parallel,
    fits,
    get_gpu,
    get_machine,
    get_model,
    kv_bytes_per_token_per_gpu,
    kv_capacity_tokens,
    machine_names,
    model_names,
)

# ------------------------------------------------------------------------------------------ KV cache


def test_llama2_70b_kv_bytes_per_token_is_320_kib() -> None:
    llama = get_model("llama2-70b")
    assert llama.head_dim == 8192 // 64 == 128
    assert llama.kv_bytes_per_token == 2 * 80 * 8 * 128 * 2 == 327_680 == 320 * 1024
    assert llama.uses_gqa


def test_bloom_176b_kv_bytes_per_token_by_hand() -> None:
    bloom = get_model("bloom-176b")
    # K and V, 70 layers, 112 heads of 14336 / 112 = 128 dimensions, 2 bytes each.
    assert bloom.kv_bytes_per_token == 4_014_080
    assert not bloom.uses_gqa


def test_grouped_query_attention_is_eight_times_smaller_than_multi_head() -> None:
    gqa = get_model("llama2-70b")
    mha = dataclasses.replace(gqa, kv_heads=gqa.heads)
    assert mha.kv_bytes_per_token == 8 * gqa.kv_bytes_per_token == 2_621_440


@pytest.mark.parametrize("name", model_names())
def test_published_parameter_counts_match_the_architecture(name: str) -> None:
    model = get_model(name)
    # Norms and biases are left out of the recount: well under 0.01 % of any of these models.
    assert model.parameter_count() == pytest.approx(model.params, rel=1e-4)
    assert model.weight_bytes == model.params * 2


def test_catalog_holds_at_least_two_more_open_models() -> None:
    names = set(model_names())
    assert {"llama2-70b", "bloom-176b"} <= names
    assert len(names - {"llama2-70b", "bloom-176b"}) >= 2
    llama3 = get_model("llama3-8b")
    assert (llama3.layers, llama3.hidden_size, llama3.heads, llama3.kv_heads) == (32, 4096, 32, 8)
    assert llama3.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2


# ------------------------------------------------------------------------------------------- sizing


def test_bloom_does_not_fit_on_one_a100() -> None:
    assert not fits("bloom-176b", "a100", 1)
    with pytest.raises(ConfigError) as raised:
        kv_capacity_tokens("bloom-176b", "a100", 1)
    message = str(raised.value)
    assert "bloom-176b" in message and "a100-80gb" in message
    assert "328.3 GiB" in message and "72.0 GiB" in message


def test_bloom_kv_capacity_at_tp8_by_hand() -> None:
    assert fits("bloom-176b", "a100", 8)
    usable = 80 * GIB * (1 - DEFAULT_RESERVE_FRACTION)
    weights_per_gpu = 176_247_271_424 * 2 / 8
    per_token_per_gpu = 4_014_080 / 8
    assert kv_capacity_tokens("bloom-176b", "a100", 8) == int((usable - weights_per_gpu) // per_token_per_gpu)
    assert kv_capacity_tokens("bloom-176b", "a100", 8) == 66_261


def test_llama2_70b_capacity_grows_with_tensor_parallelism() -> None:
    capacities = [kv_capacity_tokens("llama2-70b", "a100", tp) for tp in (2, 4, 8)]
    assert capacities[0] == 50_859
    assert capacities == sorted(capacities)
    # Two 80 GiB GPUs hold the weights; one does not.
    assert not fits("llama2-70b", "a100", 1)


def test_reserve_fraction_is_a_parameter() -> None:
    loose = kv_capacity_tokens("llama2-70b", "h100", 4, reserve_fraction=0.0)
    tight = kv_capacity_tokens("llama2-70b", "h100", 4, reserve_fraction=0.2)
    assert loose > tight > 0
    with pytest.raises(ConfigError, match="reserve_fraction"):
        kv_capacity_tokens("llama2-70b", "h100", 4, reserve_fraction=1.0)


def test_a_model_must_hold_one_full_context_request() -> None:
    # Llama2-70B at TP2 with a 19 % reserve leaves 0.6 GB per GPU: 3,666 tokens, under one 4096-token request.
    assert fits("llama2-70b", "a100", 2, reserve_fraction=0.10)
    assert not fits("llama2-70b", "a100", 2, reserve_fraction=0.19)
    with pytest.raises(ConfigError, match="4096-token request"):
        kv_capacity_tokens("llama2-70b", "a100", 2, reserve_fraction=0.19)


def test_tensor_parallel_checks() -> None:
    llama, a100 = get_model("llama2-70b"), get_machine("a100")
    with pytest.raises(ConfigError, match="exceeds the 8 GPUs"):
        check_tensor_parallel(llama, a100, 16)
    with pytest.raises(ConfigError, match="do not split evenly"):
        check_tensor_parallel(llama, a100, 3)
    with pytest.raises(ConfigError, match="positive integer"):
        check_tensor_parallel(llama, a100, 0)


def test_kv_heads_are_replicated_when_fewer_than_gpus() -> None:
    model = LlmModel(
        name="toy",
        layers=2,
        hidden_size=1024,
        heads=16,
        kv_heads=2,
        intermediate_size=4096,
        vocab_size=1000,
        params_billion=0.01,
    )
    # Eight GPUs, two KV heads: each GPU still stores one full head.
    assert kv_bytes_per_token_per_gpu(model, 8) == 2 * 2 * 1 * 64 * 2
    assert kv_bytes_per_token_per_gpu(model, 2) == 2 * 2 * 1 * 64 * 2
    assert kv_bytes_per_token_per_gpu(model, 1) == model.kv_bytes_per_token


# ------------------------------------------------------------------------------------------ hardware


def test_machines_carry_the_splitwise_numbers() -> None:
    a100, h100 = get_machine("a100"), get_machine("h100")
    assert (a100.gpu.paper_tflops, h100.gpu.paper_tflops) == (19.5, 66.9)
    assert (a100.gpu.hbm_bandwidth_gbps, h100.gpu.hbm_bandwidth_gbps) == (2039.0, 3352.0)
    assert (a100.gpu.tdp_w, h100.gpu.tdp_w) == (400.0, 700.0)
    assert (a100.interconnect_gbps, h100.interconnect_gbps) == (200.0, 400.0)
    assert (a100.cost_per_hour, h100.cost_per_hour) == (17.6, 38.0)
    assert h100.cost_per_hour / a100.cost_per_hour == pytest.approx(2.16, abs=0.01)
    assert (a100.public_sim_cost, h100.public_sim_cost) == (2.21, 4.76)
    assert (a100.public_sim_power, h100.public_sim_power) == (24.8, 44.0)
    assert a100.gpus_per_machine == h100.gpus_per_machine == 8
    assert a100.gpu.hbm_gb == h100.gpu.hbm_gb == 80


def test_power_capped_h100_changes_power_not_peaks_or_price() -> None:
    h100, cap = get_machine("h100"), get_machine("h100cap")
    assert cap.gpu.tflops_fp16 == h100.gpu.tflops_fp16
    assert cap.gpu.hbm_bandwidth_gbps == h100.gpu.hbm_bandwidth_gbps
    assert cap.cost_per_hour == h100.cost_per_hour
    assert cap.gpu.power_w == pytest.approx(0.7 * 700)
    assert cap.power_kw == pytest.approx(0.7 * h100.power_kw)
    assert cap.public_sim_power == pytest.approx(0.7 * 44)
    assert cap.gpu.capped_prompt_slowdown == 1.30 and h100.gpu.capped_prompt_slowdown == 1.0


def test_roofline_peaks_are_the_dense_fp16_datasheet_figures() -> None:
    assert get_gpu("a100").tflops_fp16 == 312.0
    assert get_gpu("h100").tflops_fp16 == 989.4
    assert get_gpu("a100").hbm_bytes == 80 * 2**30
    assert get_gpu("h100").nvlink_bytes_per_s == pytest.approx(450e9)


# ------------------------------------------------------------------------------------------- lookups


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("llama2-70b", "llama2-70b"),
        ("Llama2-70B", "llama2-70b"),
        ("LLAMA-2-70B", "llama2-70b"),
        ("meta-llama/Llama-2-70b-hf", "llama2-70b"),
        ("bloom-176b", "bloom-176b"),
        ("BLOOM", "bloom-176b"),
        ("llama_3_8b", "llama3-8b"),
    ],
)
def test_model_aliases(alias: str, name: str) -> None:
    assert get_model(alias).name == name


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("a100", "a100-80gb"),
        ("A100-80GB", "a100-80gb"),
        ("DGX-A100", "a100-80gb"),
        ("h100", "h100-80gb"),
        ("H100", "h100-80gb"),
        ("h100cap", "h100-80gb-pcap"),
        ("H100-80GB-PCAP", "h100-80gb-pcap"),
    ],
)
def test_machine_aliases(alias: str, name: str) -> None:
    assert get_machine(alias).name == name


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(ConfigError) as raised:
        get_model("gpt-4")
    assert "'gpt-4'" in str(raised.value)
    for name in model_names():
        assert name in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        get_machine("tpu-v5")
    for name in machine_names():
        assert name in str(raised.value)
    assert machine_names() == ["a100-80gb", "h100-80gb", "h100-80gb-pcap"]


def test_entries_are_frozen_and_validated() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_model("bloom").layers = 1  # type: ignore[misc]
    with pytest.raises(ConfigError, match="not a multiple of heads"):
        dataclasses.replace(get_model("llama2-7b"), heads=30)
    with pytest.raises(ConfigError, match="power_cap"):
        dataclasses.replace(get_gpu("h100"), power_cap=1.5)
    with pytest.raises(ConfigError, match="tflops_fp16"):
        Gpu(
            name="x",
            part="x",
            tflops_fp16=0,
            paper_tflops=1,
            hbm_gb=1,
            hbm_bandwidth_gbps=1,
            tdp_w=1,
            nvlink_gbps=1,
        )
