from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path
from django.views.generic import RedirectView

from kaitoweb.observability import views as observability

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="catalog:model_list", permanent=False)),
    path("accounts/", include("apps.accounts.urls")),
    # One sign-in page, the rate-limited one (apps/accounts), for the admin too.
    path(
        "admin/login/",
        login_not_required(RedirectView.as_view(pattern_name="login", query_string=True)),
    ),
    # One password change page too (audited): Django admin's link leads to it.
    path("admin/password_change/", RedirectView.as_view(pattern_name="password_change")),
    path("admin/", admin.site.urls),
    path("catalog/", include("apps.catalog.urls")),
    path("clusters/", include("apps.clusters.urls")),
    path("deployments/", include("apps.deployments.urls")),
    path("audit/", include("apps.audit.urls")),
    path("playground/", include("apps.playground.urls")),
    path("api/", include("apps.playground.api_urls")),
    path("healthz", observability.healthz, name="healthz"),
    path("readyz", observability.readyz, name="readyz"),
    path("metrics", observability.metrics_view, name="metrics"),
]
