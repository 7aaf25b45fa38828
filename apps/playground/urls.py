from __future__ import annotations

from django.urls import path

from apps.playground import views

app_name = "playground"
urlpatterns = [
    path("", views.home, name="home"),
    path("runs/", views.run_list, name="run_list"),
    path("runs/new/", views.run_create, name="run_create"),
    path("runs/<int:pk>/", views.run_detail, name="run_detail"),
    path("runs/<int:pk>/again/", views.run_again, name="run_again"),
    path("runs/<int:pk>/note/", views.run_note, name="run_note"),
    path("targets/", views.targets, name="targets"),
    path("targets/new/", views.target_create, name="target_create"),
    path("targets/<int:pk>/", views.target_edit, name="target_edit"),
    path("targets/<int:pk>/delete/", views.target_delete, name="target_delete"),
]
