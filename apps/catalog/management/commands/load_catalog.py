from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.catalog.reference import ReferenceError
from apps.catalog.services import catalog_load


class Command(BaseCommand):
    help = (
        "Seed the catalog (families, KAITO models, Foundry models, GPU VM sizes) from the "
        "shipped reference data. Idempotent; keeps values an admin changed unless --force."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--reference-dir",
            type=Path,
            default=settings.REFERENCE_DIR,
            help="folder holding kaito/, azure/ and families.yaml (default: %(default)s)",
        )
        parser.add_argument(
            "--force", action="store_true", help="overwrite values an admin changed"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = catalog_load(reference_dir=options["reference_dir"], force=options["force"])
        except ReferenceError as exc:
            raise CommandError(f"catalog not loaded, nothing changed: {exc}") from exc
        for line in report.lines():
            self.stdout.write(line)
