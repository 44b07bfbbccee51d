from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

admin.site.site_header = "AgentMargin"
admin.site.site_title = "AgentMargin"
admin.site.index_title = "Costs, customers and agent runs"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("executions/", include("agents.urls")),
]
