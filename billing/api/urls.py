from django.urls import path

from billing.api import views

urlpatterns = [
    path(
        "executions/<int:execution_id>/outcome",
        views.ExecutionOutcomeView.as_view(),
        name="api-execution-outcome",
    ),
    path("usage", views.UsageView.as_view(), name="api-usage"),
    path("plans", views.PlanListView.as_view(), name="api-plans"),
    path("invoices", views.InvoiceListView.as_view(), name="api-invoices"),
    path("staff/margins", views.StaffMarginsView.as_view(), name="api-staff-margins"),
    path(
        "staff/pricing-analysis",
        views.StaffPricingAnalysisView.as_view(),
        name="api-staff-pricing-analysis",
    ),
    path("staff/alerts", views.StaffAlertListView.as_view(), name="api-staff-alerts"),
]
