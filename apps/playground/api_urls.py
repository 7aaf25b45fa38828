"""The experiments API for pipelines (token-authenticated; see experiment_views)."""

from __future__ import annotations

from django.urls import path

from apps.playground import experiment_views

app_name = "api"
urlpatterns = [
    path("experiments/", experiment_views.api_experiments, name="experiments"),
    path("experiments/<int:pk>/", experiment_views.api_experiment_detail, name="experiment"),
]
