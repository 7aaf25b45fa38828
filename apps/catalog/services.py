"""Writes to the catalog. `catalog_load` seeds it from the shipped reference data."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from django.db import models, transaction

from apps.catalog.models import FoundryModel, GpuVmSize, KaitoModel, ModelFamily, Seeded
from apps.catalog.reference import read_reference

SeededT = TypeVar("SeededT", bound=Seeded)


@dataclass
class LoadReport:
    counts: Counter[str] = field(default_factory=Counter)
    kept_edits: list[str] = field(default_factory=list)  # "GpuVmSize Standard_X: price_per_hour"
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = []
        for table in ("families", "KAITO models", "Foundry models", "VM sizes"):
            c = {k.split(":", 1)[1]: v for k, v in self.counts.items() if k.startswith(table + ":")}
            out.append(
                f"{table}: {c.get('created', 0)} created, {c.get('updated', 0)} updated, "
                f"{c.get('unchanged', 0)} unchanged"
            )
        if self.kept_edits:
            out.append(f"kept {len(self.kept_edits)} admin edit(s) (use --force to overwrite):")
            out.extend(f"  {edit}" for edit in self.kept_edits)
        out.extend(f"warning: {w}" for w in self.warnings)
        return out


def _seedable(value: Any) -> Any:
    """A JSON-safe form to compare a field's current value with the seed it was given."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 6)
    return value


def _upsert(
    model: type[SeededT],
    lookup: dict[str, Any],
    values: dict[str, Any],
    *,
    force: bool,
    table: str,
    report: LoadReport,
) -> SeededT:
    """Create the row, or bring it up to the seed field by field, keeping admin edits.

    A field counts as edited by an admin when its value differs from the seed last written;
    such a field keeps its value unless `force`.
    """
    obj = model._default_manager.filter(**lookup).first()
    seed = {
        name: _seedable(model._meta.get_field(name).to_python(value))  # type: ignore[union-attr]
        for name, value in values.items()
    }
    if obj is None:
        obj = model(**lookup, **values)
        obj.seed = seed
        obj.full_clean(validate_unique=False)
        obj.save()
        report.counts[f"{table}:created"] += 1
        return obj
    changed = []
    for name, value in values.items():
        current = _seedable(getattr(obj, name))
        if current == seed[name]:
            continue
        edited = name in obj.seed and current != obj.seed[name]
        if edited and not force:
            report.kept_edits.append(f"{table} {obj}: {name}")
            continue
        setattr(obj, name, value)
        changed.append(name)
    if changed or obj.seed != seed:
        obj.seed = seed
        obj.full_clean(validate_unique=False)
        obj.save()
    report.counts[f"{table}:{'updated' if changed else 'unchanged'}"] += 1
    return obj


@transaction.atomic
def catalog_load(*, reference_dir: Path, force: bool = False) -> LoadReport:
    """Seed families, KAITO models, Foundry models and VM sizes; idempotent.

    Rows an admin added (custom KAITO models, extra VM sizes) are left alone, and so are values
    an admin changed, unless `force`. All or nothing: a bad file changes no row.
    """
    data = read_reference(reference_dir)
    report = LoadReport()

    families: dict[str, ModelFamily] = {}
    for values in data.families:
        key = values.pop("key")
        families[key] = _upsert(
            ModelFamily, {"key": key}, values, force=force, table="families", report=report
        )

    by_preset: dict[str, KaitoModel] = {}
    for values in data.kaito_models:
        family_key = values.pop("family_key")
        values["family"] = families.get(family_key) if family_key else None
        model_id = values.pop("model_id")
        obj = _upsert(
            KaitoModel,
            {"model_id": model_id},
            _with_fk_ids(values),
            force=force,
            table="KAITO models",
            report=report,
        )
        if obj.preset_name:
            by_preset[obj.preset_name.lower()] = obj

    for values in data.foundry_models:
        family_key = values.pop("family_key")
        preset = values.pop("kaito_preset")
        values["family"] = families.get(family_key) if family_key else None
        values["kaito_model"] = by_preset.get(str(preset).lower()) if preset else None
        if preset and values["kaito_model"] is None:
            report.warnings.append(
                f"Foundry model {values['name']}: KAITO preset {preset!r} is not in the catalog"
            )
        name = values.pop("name")
        _upsert(
            FoundryModel,
            {"name": name},
            _with_fk_ids(values),
            force=force,
            table="Foundry models",
            report=report,
        )

    for values in data.vm_sizes:
        sku = values.pop("sku")
        _upsert(GpuVmSize, {"sku": sku}, values, force=force, table="VM sizes", report=report)
    return report


def _with_fk_ids(values: dict[str, Any]) -> dict[str, Any]:
    """Foreign keys by id, so the seed compares ids rather than objects."""
    out = {}
    for name, value in values.items():
        if isinstance(value, models.Model) or (value is None and name in {"family", "kaito_model"}):
            out[f"{name}_id"] = value.pk if value is not None else None
        else:
            out[name] = value
    return out
