from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from billing.admin_views import (
    margin_overview_view,
    pricing_analysis_view,
    record_outcome_view,
)
from billing.stripe.views import stripe_webhook

admin.site.site_header = "AgentMargin"
admin.site.site_title = "AgentMargin"
admin.site.index_title = "Costs, customers and agent runs"

urlpatterns = [
    path("", RedirectView.as_view(url="/portal/", permanent=False)),
    # Mounted before the admin site, whose catch-all would otherwise take
    # these paths. admin_view lets only active staff in.
    path(
        "admin/billing/pricing-analysis/",
        admin.site.admin_view(pricing_analysis_view),
        name="billing-pricing-analysis",
    ),
    path(
        "admin/billing/margin-overview/",
        admin.site.admin_view(margin_overview_view),
        name="billing-margin-overview",
    ),
    path(
        "admin/billing/record-outcome/",
        admin.site.admin_view(record_outcome_view),
        name="billing-record-outcome",
    ),
    path("admin/", admin.site.urls),
    path("executions/", include("agents.urls")),
    path("", include("api.urls")),
    path("portal/", include("portal.urls")),
    path("stripe/webhook/", stripe_webhook, name="stripe-webhook"),
]
