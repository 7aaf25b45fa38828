from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.test import Client
from django.urls import reverse

from apps.catalog.models import GpuVmSize, KaitoModel
from apps.catalog.services import catalog_load
from tests.conftest import wait_for


def test_an_admin_reseeds_the_catalog_through_a_celery_worker(
    celery_worker_process: Path, admin_client_role: Client
) -> None:
    catalog_load(reference_dir=settings.REFERENCE_DIR)
    GpuVmSize.objects.filter(sku="Standard_NC24ads_A100_v4").delete()
    edited = GpuVmSize.objects.get(sku="Standard_NV36ads_A10_v5")
    edited.price_per_hour = "2.9"
    edited.save()
    any_row = KaitoModel.objects.first()
    assert any_row is not None
    response = admin_client_role.post(
        reverse("admin:catalog_kaitomodel_changelist"),
        {"action": "reseed_catalog", "_selected_action": [any_row.pk]},
        follow=True,
    )
    assert "Catalog reload queued" in response.content.decode()
    # the worker, in another process, takes the task from the broker and writes the database
    wait_for(
        lambda: GpuVmSize.objects.filter(sku="Standard_NC24ads_A100_v4").exists(),
        what="the worker to re-create the deleted VM size",
    )
    edited.refresh_from_db()
    assert str(edited.price_per_hour) == "2.9000"  # the admin's edit survives the re-seed
    assert "catalog reload: VM sizes: 1 created" in celery_worker_process.read_text()
