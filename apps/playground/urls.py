from __future__ import annotations

from django.urls import path

from apps.playground import experiment_views, views

app_name = "playground"
urlpatterns = [
    path("", views.home, name="home"),
    path("runs/", views.run_list, name="run_list"),
    path("runs/new/", views.run_create, name="run_create"),
    path("runs/<int:pk>/", views.run_detail, name="run_detail"),
    path("runs/<int:pk>/again/", views.run_again, name="run_again"),
    path("runs/<int:pk>/note/", views.run_note, name="run_note"),
    path("experiments/", experiment_views.experiment_list, name="experiment_list"),
    path("experiments/<int:pk>/", experiment_views.experiment_detail, name="experiment_detail"),
    path(
        "experiments/<int:pk>/cancel/", experiment_views.experiment_stop, name="experiment_cancel"
    ),
    path("experiments/<int:pk>/vote/", experiment_views.experiment_vote, name="experiment_vote"),
    path(
        "experiments/<int:pk>/<str:what>.<str:fmt>",
        experiment_views.experiment_export,
        name="experiment_export",
    ),
    path("targets/", views.targets, name="targets"),
    path("targets/new/", views.target_create, name="target_create"),
    path("targets/<int:pk>/", views.target_edit, name="target_edit"),
    path("targets/<int:pk>/delete/", views.target_delete, name="target_delete"),
]
