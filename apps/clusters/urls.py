from __future__ import annotations

from django.urls import path

from apps.clusters import views

app_name = "clusters"
urlpatterns = [
    path("", views.cluster_list, name="list"),
    path("new/", views.cluster_new, name="new"),
    path("new/simulator/", views.cluster_add_simulator, name="add_simulator"),
    path("<slug:name>/", views.cluster_detail, name="detail"),
    path("<slug:name>/check/", views.cluster_check_view, name="check"),
    path("<slug:name>/scan/", views.cluster_scan_view, name="scan"),
    path("<slug:name>/edit/", views.cluster_edit, name="edit"),
    path("<slug:name>/delete/", views.cluster_delete_view, name="delete"),
]
