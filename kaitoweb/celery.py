"""The Celery app: configured from Django settings (CELERY_* names), tasks found in apps."""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kaitoweb.settings")

app = Celery("kaitoweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_configure.connect
def _make_broker_folders(sender: Celery, **kwargs: object) -> None:
    """The serverless default broker keeps messages in folders; make sure they exist.

    Reads Django's settings, not `sender.conf`: touching the app's configuration while it is
    being configured would configure it again, recursively.
    """
    from django.conf import settings

    if str(settings.CELERY_BROKER_URL).startswith("filesystem://"):
        options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
        for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
            if options.get(key):
                Path(str(options[key])).mkdir(parents=True, exist_ok=True)
