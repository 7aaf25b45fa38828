"""KAITO's sizing formula (reference/kaito/SIZING.md) against numbers worked out by hand.

Each expected figure is derived in the comment above it, from the catalog's facts, so a change
to the formula or the data shows up here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from apps.catalog.sizing import (
    ModelSpec,
    VmSpec,
    cheapest_fit,
    max_context_on,
    parse_size_gib,
    size_on,
    size_over,
)

REFERENCE = Path(__file__).resolve().parents[2] / "reference"


def catalog_entry(model_id: str) -> ModelSpec:
    for name in ("model_catalog.yaml", "model_catalog_extra.yaml"):
        for entry in yaml.safe_load((REFERENCE / "kaito" / name).read_text())["models"]:
            if entry["name"] == model_id:
                return ModelSpec.from_catalog_entry(entry)
    raise LookupError(model_id)


def vm(sku: str) -> VmSpec:
    for entry in yaml.safe_load((REFERENCE / "azure" / "gpu_skus.yaml").read_text())["skus"]:
        if entry["sku"] == sku:
            return VmSpec(
                sku=sku,
                gpu_count=entry["gpu_count"],
                gpu_memory_gib=entry["gpu_memory_gib"],
                price_per_hour=entry["price_per_hour"],
                cuda_cc=entry.get("cuda_cc"),
            )
    raise LookupError(sku)


ALL_VMS = [
    vm(e["sku"])
    for e in yaml.safe_load((REFERENCE / "azure" / "gpu_skus.yaml").read_text())["skus"]
]


def test_it_parses_kubernetes_style_sizes() -> None:
    assert parse_size_gib("7.15Gi") == pytest.approx(7.15)
    assert parse_size_gib("512Mi") == pytest.approx(0.5)
    assert parse_size_gib(2 * 1024**3) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="not a size"):
        parse_size_gib("lots")


def test_phi_4_mini_matches_the_worked_example_in_sizing_md() -> None:
    phi = catalog_entry("microsoft/Phi-4-mini-instruct")
    # 2 x 32 layers x 8 KV heads x (3072 / 24 = 128) head dim x 2 bytes
    assert phi.kv_bytes_per_token == 131_072
    a100 = vm("Standard_NC24ads_A100_v4")
    result = size_on(phi, a100)
    assert (result.fits, result.gpus, result.nodes) == (True, 1, 1)
    # 80 x 0.9 - 2.3 - 7.15 x 1.02 = 62.407 GiB; / 0.125 MiB = 511,238 tokens, capped at 131,072
    assert result.max_context == 131_072
    uncapped = ModelSpec(**{**phi.__dict__, "token_limit": 10**9})
    assert max_context_on(uncapped, a100, 1) == 511_238
    assert result.price_per_hour == pytest.approx(3.673)
    assert result.price_per_month == pytest.approx(3.673 * 730)


def test_phi_4_mini_on_an_a10_has_a_shorter_context() -> None:
    # 24 x 0.9 - 2.3 - 7.293 = 12.007 GiB x 8192 tokens/GiB = 98,361 tokens
    result = size_on(catalog_entry("microsoft/Phi-4-mini-instruct"), vm("Standard_NV36ads_A10_v5"))
    assert (result.fits, result.nodes, result.max_context) == (True, 1, 98_361)


def test_a_70b_model_needs_two_a100s_and_the_two_gpu_vm_is_cheapest() -> None:
    llama = catalog_entry("meta-llama/Llama-3.3-70B-Instruct")
    # 2 x 80 layers x 8 KV heads x 128 x 2 bytes
    assert llama.kv_bytes_per_token == 327_680
    # need = 131.42 x 1.02 + 2048 x 327,680 B (0.625 GiB) = 134.673 GiB; 69.7 GiB usable per A100
    one_gpu_nodes = size_on(llama, vm("Standard_NC24ads_A100_v4"))
    assert (one_gpu_nodes.gpus, one_gpu_nodes.nodes) == (2, 2)
    two_gpu_node = size_on(llama, vm("Standard_NC48ads_A100_v4"))
    assert (two_gpu_node.gpus, two_gpu_node.nodes) == (2, 1)
    # (2 x 69.7 - 134.0484) GiB / 327,680 B = 17,536 tokens
    assert two_gpu_node.max_context == 17_536
    # On A10s (19.3 GiB usable each): ceil(134.673 / 19.3) = 7 GPUs = 7 one-GPU nodes
    assert size_on(llama, vm("Standard_NV36ads_A10_v5")).nodes == 7
    # 2 x NC24ads and 1 x NC48ads both cost $7.346/h; fewer nodes wins the tie
    best = cheapest_fit(llama, ALL_VMS)
    assert best is not None
    assert (best.sku, best.nodes) == ("Standard_NC48ads_A100_v4", 1)
    assert best.price_per_hour == pytest.approx(7.346)


def test_a_longer_context_needs_more_gpus() -> None:
    llama = catalog_entry("meta-llama/Llama-3.3-70B-Instruct")
    # 131,072 tokens x 327,680 B = 40 GiB of KV cache: 174.05 GiB / 69.7 = 2.5 -> 3 GPUs
    result = size_on(llama, vm("Standard_NC24ads_A100_v4"), max_tokens=131_072)
    assert (result.gpus, result.nodes) == (3, 3)


def test_a_falcon_model_cannot_be_split_over_gpus() -> None:
    falcon = catalog_entry("tiiuae/falcon-40b")
    assert not falcon.splittable
    # 2 x 60 x 8 x 64 x 2 = 122,880 B/token; 77.95 x 1.02 + 0.234 = 79.74 GiB > 69.7 on an A100
    on_a100s = size_on(falcon, vm("Standard_NC96ads_A100_v4"))
    assert not on_a100s.fits
    assert on_a100s.gpus == 2
    assert "cannot be split" in on_a100s.reason
    # One H200 (1128 / 8 = 141 GiB, 124.6 usable) holds it; context capped at Falcon's 2,048
    on_h200 = size_on(falcon, vm("Standard_ND96isr_H200_v5"))
    assert (on_h200.fits, on_h200.gpus, on_h200.nodes, on_h200.max_context) == (True, 1, 1, 2048)
    # One H100 (94 GiB: 84.6 - 2.3 = 82.3 usable) holds it too, and is the cheapest priced fit
    best = cheapest_fit(falcon, ALL_VMS)
    assert best is not None
    assert (best.sku, best.gpus, best.nodes) == ("Standard_NC40ads_H100_v5", 1, 1)


def test_falcon_7b_uses_one_gpu_even_on_a_two_gpu_vm() -> None:
    falcon = catalog_entry("tiiuae/falcon-7b")
    # multi-query attention: 2 x 32 layers x 1 KV head x 64 x 2 = 8,192 B (KAITO's own tests)
    assert falcon.kv_bytes_per_token == 8192
    two_a10 = vm("Standard_NV72ads_A10_v5")
    result = size_on(falcon, two_a10)
    assert (result.fits, result.gpus, result.nodes) == (True, 1, 1)
    # one A10 only: 19.3 - 13.7088 = 5.5912 GiB x 131,072 = 732,849 tokens, capped at 2,048
    uncapped = ModelSpec(**{**falcon.__dict__, "token_limit": 10**9})
    assert max_context_on(uncapped, two_a10, 1) == 732_849


def test_deepseek_multi_latent_attention_caches_one_compressed_vector() -> None:
    deepseek = catalog_entry("deepseek-ai/DeepSeek-R1-0528")
    assert deepseek.uses_mla
    # (kv_lora_rank 512 + qk_rope_head_dim 64) x 61 layers x 2 bytes, no K+V factor
    assert deepseek.kv_bytes_per_token == 70_272
    # as plain attention it would be 2 x 61 x 128 heads x 56 x 2 = 1,748,992 bytes: ~25x more
    plain = ModelSpec(**{**deepseek.__dict__, "kv_lora_rank": None, "qk_rope_head_dim": None})
    assert plain.kv_bytes_per_token == 1_748_992


def test_a_model_too_large_for_any_single_priced_node_spans_nodes() -> None:
    deepseek = catalog_entry("deepseek-ai/DeepSeek-R1-0528")
    # 641.30 x 1.02 = 654.126 GiB + 2048 x 70,272 B (0.134 GiB) = 654.26 GiB: 10 A100s of 69.7
    biggest_a100 = vm("Standard_ND96amsr_A100_v4")
    result = size_on(deepseek, biggest_a100)
    assert (result.fits, result.gpus, result.nodes) == (True, 10, 2)
    assert result.price_per_hour == pytest.approx(2 * 32.77)
    # 2 nodes x 8 x 69.7 = 1115.2 GiB - 654.126 = 461.07 GiB: millions of tokens, capped
    assert result.max_context == 163_840
    # asked to stay on one node, it does not fit, and says why
    forced = size_on(deepseek, biggest_a100, nodes=1)
    assert not forced.fits
    assert "needs 2 node(s)" in forced.reason
    priced = [v for v in ALL_VMS if v.price_per_hour is not None and v.gpu_count]
    assert all(size_on(deepseek, v).nodes > 1 for v in priced)
    # cheapest: 10 GPUs on five 2-GPU NC48ads ($36.73/h) beat two ND96amsr ($65.54/h)
    best = cheapest_fit(deepseek, ALL_VMS)
    assert best is not None
    assert (best.sku, best.nodes) == ("Standard_NC48ads_A100_v4", 5)
    assert best.price_per_hour == pytest.approx(36.73)


def test_cpu_sizes_and_old_gpus_do_not_fit() -> None:
    phi = catalog_entry("microsoft/Phi-4-mini-instruct")
    cpu = size_on(phi, vm("Standard_D16s_v5"))
    assert not cpu.fits
    assert "no GPU" in cpu.reason
    v100 = VmSpec("Standard_NC6s_v3", gpu_count=1, gpu_memory_gib=16, cuda_cc=7.0)
    assert "compute capability" in size_on(phi, v100).reason


def test_size_over_ranks_cheapest_fits_first_then_unpriced_then_misfits() -> None:
    rows = size_over(catalog_entry("microsoft/Phi-4-mini-instruct"), ALL_VMS)
    prices = [r.price_per_hour for r in rows if r.fits and r.price_per_hour is not None]
    assert prices == sorted(prices)
    assert rows[0].sku == "Standard_NV36ads_A10_v5"
    kinds = [0 if r.fits and r.price_per_hour is not None else 1 if r.fits else 2 for r in rows]
    assert kinds == sorted(kinds)
    assert rows[-1].sku == "Standard_D16s_v5"


def test_lower_gpu_memory_utilisation_shortens_the_context() -> None:
    phi = catalog_entry("microsoft/Phi-4-mini-instruct")
    a10 = vm("Standard_NV36ads_A10_v5")
    # 24 x 0.8 - 2.3 - 7.293 = 9.607 GiB -> 78,700 tokens
    assert size_on(phi, a10, utilization=0.8).max_context == 78_700
