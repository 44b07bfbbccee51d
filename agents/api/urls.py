from django.urls import path

from agents.api import views

urlpatterns = [
    path("executions", views.ExecutionListView.as_view(), name="api-execution-list"),
    path(
        "executions/<int:execution_id>",
        views.ExecutionDetailView.as_view(),
        name="api-execution-detail",
    ),
    path(
        "executions/<int:execution_id>/events",
        views.ExecutionEventsView.as_view(),
        name="api-execution-events",
    ),
    path(
        "executions/<int:execution_id>/cancel",
        views.ExecutionCancelView.as_view(),
        name="api-execution-cancel",
    ),
]
