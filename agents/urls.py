from django.urls import path

from agents import views

app_name = "agents"

urlpatterns = [
    path(
        "<int:execution_id>/events",
        views.execution_events,
        name="execution-events",
    ),
    path("<int:execution_id>/live", views.execution_live, name="execution-live"),
]
