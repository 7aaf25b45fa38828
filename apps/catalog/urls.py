from __future__ import annotations

from django.urls import path

from apps.catalog import views

app_name = "catalog"
urlpatterns = [
    path("", views.model_list, name="model_list"),
    path("kaito/<path:model_id>/", views.kaito_detail, name="kaito_detail"),
    path("foundry/<str:name>/", views.foundry_detail, name="foundry_detail"),
]
