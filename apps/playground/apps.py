from __future__ import annotations

from django.apps import AppConfig


class PlaygroundConfig(AppConfig):
    name = "apps.playground"
    label = "playground"
    verbose_name = "A/B playground"
