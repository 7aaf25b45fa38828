"""Reference data shipped in ``reference/``: the Workspace CRD, KAITO presets and Azure VM sizes.

The files are read at run time from ``<repo>/reference`` (override with ``KAITOSIM_REFERENCE_DIR``).
Nothing is fetched from the network: a preset name that is neither a KAITO legacy short name
nor a model id of the curated catalogs is unknown to the simulator.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REFERENCE_DIR_ENV = "KAITOSIM_REFERENCE_DIR"

_HF_VERSION_URL = re.compile(r"https://huggingface\.co/(?P<model_id>[^/]+/[^/]+)/")
_VCPUS_IN_SKU = re.compile(r"^Standard_[A-Za-z]+?(?P<vcpus>\d+)")


def reference_dir() -> Path:
    """The directory holding the reference files."""
    override = os.environ.get(REFERENCE_DIR_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / "reference"


@dataclass(frozen=True)
class ModelPreset:
    """A model KAITO can deploy, resolved from a Workspace's ``inference.preset.name``."""

    name: str
    """The preset name as KAITO knows it (legacy short name, or the catalog's model id)."""
    model_id: str
    """The Hugging Face model id (``org/model``)."""
    legacy_name: str | None
    download_at_runtime: bool
    download_auth_required: bool
    deprecated: bool
    catalog_entry: dict[str, Any] | None = field(default=None, compare=False, hash=False)

    @property
    def supports_distributed_inference(self) -> bool:
        """Falcon models cannot be split over several GPUs (KAITO's preset flag)."""
        architectures = (self.catalog_entry or {}).get("architectures") or []
        return not any(str(arch).startswith("Falcon") for arch in architectures)

    @property
    def model_token_limit(self) -> int:
        entry = self.catalog_entry or {}
        return int(entry.get("modelTokenLimit") or 2048)

    @property
    def image_name(self) -> str:
        """The container image KAITO would run for this preset."""
        if self.legacy_name and not self.download_at_runtime:
            return f"mcr.microsoft.com/aks/kaito/kaito-{self.legacy_name}:0.2.0"
        return "mcr.microsoft.com/aks/kaito/kaito-base:0.5.0"


@dataclass(frozen=True)
class GpuSku:
    """A row of ``reference/azure/gpu_skus.yaml``."""

    sku: str
    gpu_model: str | None
    gpu_count: int
    gpu_memory_gib: float
    """Total GPU memory across the VM's GPUs."""
    cuda_cc: float | None
    price_per_hour: float | None
    arm_name: str | None = None

    @property
    def is_gpu(self) -> bool:
        return self.gpu_count > 0

    @property
    def vcpus(self) -> int:
        match = _VCPUS_IN_SKU.match(self.sku)
        return int(match.group("vcpus")) if match else 4

    @property
    def gpu_memory_per_gpu_gib(self) -> float:
        return self.gpu_memory_gib / self.gpu_count if self.gpu_count else 0.0


@dataclass
class ReferenceData:
    """Everything the simulator reads from ``reference/``."""

    workspace_crd: dict[str, Any]
    legacy_presets: dict[str, dict[str, Any]]
    catalog: dict[str, dict[str, Any]]
    """Catalog entries by lower-cased model id (model_catalog.yaml + model_catalog_extra.yaml)."""
    skus: dict[str, GpuSku]
    """VM sizes keyed by lower-cased SKU name."""

    def resolve_preset(self, name: str) -> ModelPreset | None:
        """Resolve a preset name the way KAITO's webhook does, case-insensitively.

        Returns None for names KAITO would not know without asking the Hugging Face hub.
        """
        key = name.strip().lower()
        legacy = self.legacy_presets.get(key)
        if legacy is not None:
            match = _HF_VERSION_URL.match(str(legacy.get("version", "")))
            model_id = match.group("model_id") if match else key
            return ModelPreset(
                name=str(legacy["name"]),
                model_id=model_id,
                legacy_name=str(legacy["name"]),
                download_at_runtime=bool(legacy.get("downloadAtRuntime", False)),
                download_auth_required=bool(legacy.get("downloadAuthRequired", False)),
                deprecated=bool(legacy.get("deprecated", False)),
                catalog_entry=self.catalog.get(model_id.lower()),
            )
        entry = self.catalog.get(key)
        if entry is not None:
            model_id = str(entry["name"])
            gated = any(
                bool(preset.get("downloadAuthRequired", False))
                for preset in self.legacy_presets.values()
                if str(preset.get("version", ""))
                .lower()
                .startswith(f"https://huggingface.co/{key}/")
            )
            return ModelPreset(
                name=model_id,
                model_id=model_id,
                legacy_name=None,
                download_at_runtime=True,
                download_auth_required=gated,
                deprecated=False,
                catalog_entry=entry,
            )
        return None

    def sku(self, instance_type: str) -> GpuSku | None:
        return self.skus.get(instance_type.strip().lower())

    def gpu_sku_names(self) -> list[str]:
        return [sku.sku for sku in self.skus.values() if sku.is_gpu]

    def workspace_crd_version(self, version: str) -> dict[str, Any]:
        for served in self.workspace_crd["spec"]["versions"]:
            if served["name"] == version:
                return dict(served)
        raise KeyError(version)


def _read_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@functools.lru_cache(maxsize=4)
def _load(directory: str) -> ReferenceData:
    root = Path(directory)
    kaito_dir = root / "kaito"
    crd = _read_yaml(kaito_dir / "kaito.sh_workspaces.yaml")
    legacy: dict[str, dict[str, Any]] = {}
    for preset in _read_yaml(kaito_dir / "supported_models.yaml").get("models", []):
        if preset.get("name") == "base" or not preset.get("version"):
            continue
        legacy[str(preset["name"]).lower()] = preset
    catalog: dict[str, dict[str, Any]] = {}
    for file_name in ("model_catalog.yaml", "model_catalog_extra.yaml"):
        path = kaito_dir / file_name
        if path.exists():
            for entry in _read_yaml(path).get("models", []) or []:
                catalog[str(entry["name"]).lower()] = entry
    skus: dict[str, GpuSku] = {}
    for row in _read_yaml(root / "azure" / "gpu_skus.yaml").get("skus", []):
        sku = GpuSku(
            sku=str(row["sku"]),
            gpu_model=row.get("gpu_model"),
            gpu_count=int(row.get("gpu_count") or 0),
            gpu_memory_gib=float(row.get("gpu_memory_gib") or 0),
            cuda_cc=row.get("cuda_cc"),
            price_per_hour=row.get("price_per_hour"),
            arm_name=row.get("arm_name"),
        )
        skus[sku.sku.lower()] = sku
    return ReferenceData(workspace_crd=crd, legacy_presets=legacy, catalog=catalog, skus=skus)


def load_reference() -> ReferenceData:
    """Load (once per directory) the reference data."""
    return _load(str(reference_dir()))
