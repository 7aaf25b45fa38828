from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="catalog:model_list", permanent=False)),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("catalog/", include("apps.catalog.urls")),
    path("clusters/", include("apps.clusters.urls")),
    path("deployments/", include("apps.deployments.urls")),
    path("audit/", include("apps.audit.urls")),
    path("playground/", include("apps.playground.urls")),
    path("api/", include("apps.playground.api_urls")),
]
