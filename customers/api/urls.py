from django.urls import path

from customers.api import views

urlpatterns = [
    path("api-keys", views.ApiKeyListView.as_view(), name="api-key-list"),
    path(
        "api-keys/<int:key_id>/revoke",
        views.ApiKeyRevokeView.as_view(),
        name="api-key-revoke",
    ),
]
