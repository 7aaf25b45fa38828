"""Read the shipped reference data (reference/ in the project) into plain field dicts.

The files are KAITO's and Azure's facts, copied unchanged (see reference/README.md); this module
turns them into the values of the catalog tables, and nothing else.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from apps.catalog.sizing import parse_size_gib

# NOTICE.md: Hugging Face requires an accepted licence and a token for the Llama and Gemma
# licences. KAITO itself marks only the Llama presets downloadAuthRequired.
GATED_LICENCE_PREFIXES = ("llama", "gemma")

# Words that name a family inside a model id besides the family key itself.
FAMILY_ALIASES = {"mistral": ("ministral",)}

_HF_COMMIT_RE = re.compile(r"huggingface\.co/([^/]+/[^/]+)/commit/")


class ReferenceError(Exception):
    """A reference file is missing or malformed; the message names the file and the entry."""


@dataclass
class ReferenceData:
    families: list[dict[str, Any]] = field(default_factory=list)
    kaito_models: list[dict[str, Any]] = field(default_factory=list)
    foundry_models: list[dict[str, Any]] = field(default_factory=list)
    vm_sizes: list[dict[str, Any]] = field(default_factory=list)


def _read_yaml(path: Path) -> Any:
    try:
        with path.open() as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError:
        raise ReferenceError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ReferenceError(f"{path}: not valid YAML: {exc}") from None


def _month(value: Any) -> dt.date | None:
    """'2026-11' -> 2026-11-01."""
    if value in (None, ""):
        return None
    text = str(value)
    try:
        return dt.date.fromisoformat(text if len(text) > 7 else f"{text}-01")
    except ValueError:
        raise ReferenceError(f"not a date: {value!r}") from None


def _date(value: Any) -> dt.date | None:
    if value in (None, ""):
        return None
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def family_key_for(model_id: str, family_keys: Iterable[str]) -> str | None:
    """The family whose key (or alias) appears earliest in the id: 'deepseek-ai/...Llama-8B'
    is DeepSeek, 'mistralai/Ministral-3' is Mistral."""
    text = model_id.lower()
    best: tuple[int, str] | None = None
    for key in family_keys:
        for word in (key, *FAMILY_ALIASES.get(key, ())):
            pos = text.find(word)
            if pos >= 0 and (best is None or pos < best[0]):
                best = (pos, key)
    return best[1] if best else None


def _preset_index(supported: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Lower-cased Hugging Face id -> the legacy preset entry that pins it."""
    index: dict[str, dict[str, Any]] = {}
    for preset in supported.get("models") or []:
        match = _HF_COMMIT_RE.search(str(preset.get("version") or ""))
        if match:
            index[match.group(1).lower()] = preset
    return index


def _kaito_model_values(
    entry: dict[str, Any],
    source: str,
    preset: dict[str, Any] | None,
    family_keys: list[str],
    origin: str,
) -> dict[str, Any]:
    name = str(entry.get("name") or "")
    try:
        licence = str(entry.get("license") or "")
        values: dict[str, Any] = {
            "model_id": name,
            "source": source,
            "description_url": str(entry.get("description") or ""),
            "license": licence,
            "pipeline_tag": str(entry.get("pipelineTag") or ""),
            "architectures": [str(a) for a in entry.get("architectures") or []],
            "weights_gib": round(parse_size_gib(entry["modelFileSize"]), 4),
            "token_limit": int(entry["modelTokenLimit"]),
            "hidden_size": int(entry["hiddenSize"]),
            "num_hidden_layers": int(entry["numHiddenLayers"]),
            "num_attention_heads": int(entry["numAttentionHeads"]),
            "num_kv_heads": _opt_int(entry.get("numKeyValueHeads")),
            "head_dim": _opt_int(entry.get("headDim")),
            "kv_lora_rank": _opt_int(entry.get("kvLoraRank")),
            "qk_rope_head_dim": _opt_int(entry.get("qkRopeHeadDim")),
            "quant_method": str(entry.get("quantMethod") or ""),
            "quant_bits": _opt_int(entry.get("quantBits")),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ReferenceError(f"{origin}: model {name or '?'}: bad or missing field {exc}") from None
    auth = bool(preset and preset.get("downloadAuthRequired"))
    values.update(
        preset_name=str(preset["name"]) if preset else None,
        version_url=str(preset.get("version") or "") if preset else "",
        image_tag=str(preset.get("tag") or "") if preset else "",
        # A preset has a KAITO image carrying both runtimes; a catalog-only id runs on vLLM.
        transformers_runtime=preset is not None,
        # Catalog-only ids are always fetched at run time; presets say whether they are baked in.
        download_at_runtime=bool(preset.get("downloadAtRuntime")) if preset else True,
        download_auth_required=auth,
        gated=auth or licence.lower().startswith(GATED_LICENCE_PREFIXES),
        lifecycle="deprecated" if preset and preset.get("deprecated") else "ga",
        family_key=family_key_for(name, family_keys),
    )
    return values


def read_reference(reference_dir: Path) -> ReferenceData:
    data = ReferenceData()

    families = _read_yaml(reference_dir / "families.yaml") or {}
    for entry in families.get("families") or []:
        data.families.append(
            {
                "key": str(entry["key"]),
                "name": str(entry.get("name") or entry["key"]),
                "developer": str(entry.get("developer") or ""),
                "strengths": str(entry.get("strengths") or "").strip(),
                "notes": str(entry.get("notes") or "").strip(),
            }
        )
    family_keys = [f["key"] for f in data.families]

    kaito_dir = reference_dir / "kaito"
    presets = _preset_index(_read_yaml(kaito_dir / "supported_models.yaml") or {})
    for filename, source in (
        ("model_catalog.yaml", "catalog"),
        ("model_catalog_extra.yaml", "extra"),
    ):
        catalog = _read_yaml(kaito_dir / filename) or {}
        for entry in catalog.get("models") or []:
            preset = presets.get(str(entry.get("name", "")).lower())
            data.kaito_models.append(
                _kaito_model_values(entry, source, preset, family_keys, filename)
            )

    foundry = _read_yaml(reference_dir / "azure" / "foundry_models.yaml") or {}
    factors = foundry.get("deployment_type_price_factor") or {}
    as_of = _month(foundry.get("as_of"))
    for entry in foundry.get("models") or []:
        data.foundry_models.append(
            {
                "name": str(entry["name"]),
                "provider": str(entry.get("provider") or ""),
                "family_key": entry.get("family"),
                "kaito_preset": entry.get("kaito_preset"),
                "input_per_1m": _opt_str_decimal(entry.get("input_per_1m")),
                "output_per_1m": _opt_str_decimal(entry.get("output_per_1m")),
                "data_zone_factor": _opt_str_decimal(factors.get("data_zone")),
                "regional_factor": _opt_str_decimal(factors.get("regional")),
                "currency": str(foundry.get("currency") or "USD"),
                "price_as_of": as_of,
                "lifecycle": str(entry.get("lifecycle") or "ga"),
                "deprecated_on": _date(entry.get("deprecated_on")),
                "retired_on": _date(entry.get("retired_on")),
            }
        )

    skus = _read_yaml(reference_dir / "azure" / "gpu_skus.yaml") or {}
    sku_as_of = _month(skus.get("as_of"))
    for entry in skus.get("skus") or []:
        data.vm_sizes.append(
            {
                "sku": str(entry["sku"]),
                "arm_name": str(entry.get("arm_name") or ""),
                "gpu_model": str(entry.get("gpu_model") or ""),
                "gpu_count": int(entry.get("gpu_count") or 0),
                "gpu_memory_gib": float(entry.get("gpu_memory_gib") or 0),
                "cuda_cc": entry.get("cuda_cc"),
                "nvme": bool(entry.get("nvme")),
                "price_per_hour": _opt_str_decimal(entry.get("price_per_hour")),
                "price_confidence": str(entry.get("confidence") or "none"),
                "price_as_of": sku_as_of,
                "region": str(skus.get("region") or ""),
                "currency": str(skus.get("currency") or "USD"),
            }
        )
    return data


def _opt_int(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


def _opt_str_decimal(value: Any) -> str | None:
    """Prices as decimal strings, so 0.075 stays 0.075 and never becomes 0.07500000001."""
    return None if value is None else str(value)
