from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from apps.catalog.services import catalog_load

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, soft_time_limit=120, time_limit=150)
def catalog_reload(*, force: bool = False) -> list[str]:
    """Re-seed the catalog from the shipped reference data (idempotent; keeps admin edits)."""
    report = catalog_load(reference_dir=settings.REFERENCE_DIR, force=force)
    for line in report.lines():
        logger.info("catalog reload: %s", line)
    return report.lines()
