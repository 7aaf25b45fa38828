from __future__ import annotations

from django.urls import path

from apps.deployments import views

app_name = "deployments"
urlpatterns = [
    path("", views.deployment_list, name="list"),
    path("new/", views.deployment_launch, name="launch"),
    path("new/manifest/", views.deployment_launch_manifest, name="launch_manifest"),
    path("new/custom/", views.deployment_launch_custom, name="launch_custom"),
    path("<int:pk>/", views.deployment_detail, name="detail"),
    path("<int:pk>/teardown/", views.deployment_teardown, name="teardown"),
    path("<int:pk>/take-over/", views.deployment_take_over, name="take_over"),
    path("<int:pk>/chat/", views.deployment_chat_view, name="chat"),
]
