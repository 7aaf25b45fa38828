from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.accounts.services import admin_create


class Command(BaseCommand):
    help = (
        "Create the first admin (idempotent). Prints a generated password when the user is new "
        "and no --password or KAITOWEB_ADMIN_PASSWORD is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default=os.environ.get("KAITOWEB_ADMIN_USER", "admin"))
        parser.add_argument("--email", default="")
        parser.add_argument(
            "--password",
            default=os.environ.get("KAITOWEB_ADMIN_PASSWORD"),
            help="set this password (also for an existing user)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user, generated = admin_create(
            username=options["username"], email=options["email"], password=options["password"]
        )
        if generated:
            self.stdout.write(
                self.style.SUCCESS(f"Admin created: {user.username} / password: {generated}")
            )
        elif options["password"] is not None:
            self.stdout.write(f"Admin ready: {user.username} (password set as given)")
        else:
            self.stdout.write(f"Admin ready: {user.username} (existing password kept)")
