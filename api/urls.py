"""The API's URLs: version 1 under /api/v1/, the schema and the docs."""

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from api import schema  # noqa: F401 - registers the API key scheme
from api.views import unknown_endpoint

v1 = [
    path("", include("customers.api.urls")),
    path("", include("agents.api.urls")),
    path("", include("billing.api.urls")),
    # Anything else under /api/v1/ gets the API's 404, not an HTML page.
    re_path(r"^.*$", unknown_endpoint),
]

urlpatterns = [
    path("api/v1/", include(v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(url_name="api-schema"),
        name="api-docs",
    ),
]
