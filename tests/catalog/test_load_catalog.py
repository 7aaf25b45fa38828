from __future__ import annotations

import shutil
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from apps.catalog.models import FoundryModel, GpuVmSize, KaitoModel, ModelFamily
from apps.catalog.services import LoadReport, catalog_load
from tests.factories import KaitoModelFactory

pytestmark = pytest.mark.django_db


def load(*args: str) -> str:
    out = StringIO()
    call_command("load_catalog", *args, stdout=out)
    return out.getvalue()


def test_it_seeds_every_kaito_model_foundry_model_family_and_vm_size() -> None:
    output = load()
    # KAITO's 60 curated models plus the 5 Falcon and Phi-2 presets it lacks
    assert KaitoModel.objects.filter(source="catalog").count() == 60
    assert KaitoModel.objects.filter(source="extra").count() == 5
    assert FoundryModel.objects.count() == 11
    assert ModelFamily.objects.count() == 13
    assert GpuVmSize.objects.count() == 13
    assert "KAITO models: 65 created" in output


def test_legacy_preset_names_are_aliases_of_hugging_face_ids(catalog: LoadReport) -> None:
    phi = KaitoModel.objects.get(preset_name="phi-4-mini-instruct")
    assert phi.model_id == "microsoft/Phi-4-mini-instruct"
    assert phi.preset_reference == "phi-4-mini-instruct"
    assert phi.family is not None and phi.family.key == "phi"
    assert phi.weights_gib == pytest.approx(7.15)
    assert phi.token_limit == 131_072
    assert not phi.download_at_runtime  # baked into KAITO's image
    assert KaitoModel.objects.get(preset_name="falcon-7b").model_id == "tiiuae/falcon-7b"
    # every legacy preset of supported_models.yaml (30, without the weightless base image)
    assert KaitoModel.objects.exclude(preset_name=None).count() == 30
    catalog_only = KaitoModel.objects.get(model_id="Qwen/Qwen3.5-9B")
    assert catalog_only.preset_name is None
    assert catalog_only.preset_reference == "Qwen/Qwen3.5-9B"
    assert catalog_only.runtimes == ["vllm"]


def test_gated_models_and_the_ones_kaito_needs_a_secret_for_are_marked(catalog: LoadReport) -> None:
    llama = KaitoModel.objects.get(preset_name="llama-3.1-8b-instruct")
    assert llama.gated and llama.download_auth_required and llama.download_at_runtime
    gemma = KaitoModel.objects.get(preset_name="gemma-3-4b-instruct")
    # Gemma's licence needs a token on Hugging Face, but KAITO does not mark the preset
    assert gemma.gated and not gemma.download_auth_required
    assert not KaitoModel.objects.get(preset_name="phi-4").gated
    assert set(KaitoModel.objects.filter(gated=True).values_list("license", flat=True)) == {
        "llama3.1",
        "llama3.3",
        "gemma",
    }


def test_families_are_found_from_the_model_id(catalog: LoadReport) -> None:
    families = dict(KaitoModel.objects.values_list("model_id", "family__key"))
    assert families["deepseek-ai/DeepSeek-R1-Distill-Llama-8B"] == "deepseek"
    assert families["mistralai/Ministral-3-8B-Instruct-2512"] == "mistral"
    assert families["ibm-granite/granite-4.1-8b"] == "granite"
    assert families["tiiuae/falcon-40b"] == "falcon"
    assert None not in families.values()


def test_foundry_models_link_to_the_kaito_preset_of_the_same_model(catalog: LoadReport) -> None:
    r1 = FoundryModel.objects.get(name="DeepSeek-R1")
    assert r1.kaito_model is not None
    assert r1.kaito_model.model_id == "deepseek-ai/DeepSeek-R1-0528"
    assert r1.lifecycle == "retired"
    assert str(r1.retired_on) == "2026-08-13"
    phi = FoundryModel.objects.get(name="Phi-4-mini-instruct")
    assert (phi.input_per_1m, phi.output_per_1m) == (Decimal("0.075"), Decimal("0.3"))
    assert phi.prices_for("data_zone") == (Decimal("0.0825"), Decimal("0.33"))
    assert phi.prices_for("regional") is None
    assert FoundryModel.objects.get(name="gpt-5.1").kaito_model is None


def test_vm_sizes_carry_price_confidence_and_date(catalog: LoadReport) -> None:
    a100 = GpuVmSize.objects.get(sku="Standard_NC24ads_A100_v4")
    assert a100.price_per_hour == Decimal("3.673")
    assert a100.price_confidence == "high"
    assert str(a100.price_as_of) == "2026-11-01"
    h200 = GpuVmSize.objects.get(sku="Standard_ND96isr_H200_v5")
    assert h200.price_per_hour is None and h200.price_confidence == "none"
    assert GpuVmSize.objects.get(sku="Standard_ND96asr_A100_v4").arm_name == "Standard_ND96asr_v4"


def test_running_it_again_changes_nothing(catalog: LoadReport) -> None:
    before = list(KaitoModel.objects.values_list("model_id", "updated_at").order_by("model_id"))
    report = catalog_load(reference_dir=settings.REFERENCE_DIR)
    after = list(KaitoModel.objects.values_list("model_id", "updated_at").order_by("model_id"))
    assert before == after
    assert report.counts["KAITO models:unchanged"] == 65
    assert sum(v for k, v in report.counts.items() if k.endswith(("created", "updated"))) == 0


def test_it_keeps_a_value_an_admin_changed_unless_forced(catalog: LoadReport) -> None:
    vm = GpuVmSize.objects.get(sku="Standard_NC24ads_A100_v4")
    vm.price_per_hour = Decimal("3.1000")
    vm.save()
    output = load()
    vm.refresh_from_db()
    assert vm.price_per_hour == Decimal("3.1")
    assert "Standard_NC24ads_A100_v4: price_per_hour" in output
    load("--force")
    vm.refresh_from_db()
    assert vm.price_per_hour == Decimal("3.673")


def test_a_new_seed_value_updates_fields_no_admin_touched(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    shutil.copytree(settings.REFERENCE_DIR, reference)
    catalog_load(reference_dir=reference)
    edited = GpuVmSize.objects.get(sku="Standard_NC48ads_A100_v4")
    edited.price_per_hour = Decimal("7.0")
    edited.save()
    skus = reference / "azure" / "gpu_skus.yaml"
    text = skus.read_text().replace("price_per_hour: 3.673", "price_per_hour: 3.9")
    skus.write_text(text.replace("price_per_hour: 7.346", "price_per_hour: 7.8"))
    report = catalog_load(reference_dir=reference)
    assert GpuVmSize.objects.get(sku="Standard_NC24ads_A100_v4").price_per_hour == Decimal("3.9")
    assert GpuVmSize.objects.get(sku="Standard_NC48ads_A100_v4").price_per_hour == Decimal("7.0")
    assert report.counts["VM sizes:updated"] == 1


def test_models_an_admin_added_are_left_alone(catalog: LoadReport) -> None:
    custom = KaitoModelFactory.create(model_id="bigscience/bloomz-560m", weights_gib=1.04)
    load("--force")
    custom.refresh_from_db()
    assert custom.source == "custom"
    assert custom.weights_gib == pytest.approx(1.04)


def test_a_broken_reference_file_changes_nothing(tmp_path: Path, catalog: LoadReport) -> None:
    reference = tmp_path / "reference"
    shutil.copytree(settings.REFERENCE_DIR, reference)
    skus = reference / "azure" / "gpu_skus.yaml"
    skus.write_text(skus.read_text().replace("price_per_hour: 3.673", "price_per_hour: 3.99"))
    catalog_file = reference / "kaito" / "model_catalog.yaml"
    catalog_file.write_text(
        catalog_file.read_text().replace("modelFileSize: 7.15Gi", "modelFileSize: big")
    )
    with pytest.raises(
        CommandError, match=r"model_catalog.yaml: model microsoft/Phi-4-mini-instruct"
    ):
        load("--reference-dir", str(reference))
    assert GpuVmSize.objects.get(sku="Standard_NC24ads_A100_v4").price_per_hour == Decimal("3.673")


def test_a_missing_reference_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="file not found"):
        load("--reference-dir", str(tmp_path / "nowhere"))
