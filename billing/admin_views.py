"""Staff pages of the billing admin that are not a model's change list.

`config/urls.py` mounts them under /admin/billing/, each wrapped in
`admin.site.admin_view`, which lets only active staff in.
"""

import logging
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from agents.models import Execution, Workflow
from billing.analysis import (
    MONTH_DAYS,
    check_target_margin,
    plan_earnings,
    rounded_text,
    suggested_price_row,
    workflow_cost_stats,
)
from billing.charts import grouped_bars, stacked_bars, top_series
from billing.margins import customer_margin, margin_report
from billing.models import Alert, PeriodStatement
from billing.plans import add_months
from billing.revenue import customers_with_margin
from billing.rollups import month_start
from billing.selectors import daily_cost_by, monthly_trend, usage_rolled_up_until
from billing.services import execution_record_outcome
from customers.models import Customer

logger = logging.getLogger(__name__)

DEFAULT_DAYS = 30
DEFAULT_TARGET_MARGIN = Decimal("0.70")


# Pricing analysis ----------------------------------------------------------


class PricingAnalysisForm(forms.Form):
    start = forms.DateField(
        label="Start date", help_text="First UTC day counted, YYYY-MM-DD."
    )
    end = forms.DateField(
        label="End date", help_text="Last UTC day counted, included, YYYY-MM-DD."
    )
    target_margin = forms.DecimalField(
        label="Target margin",
        max_digits=5,
        decimal_places=4,
        help_text="Gross margin to reach, at least 0 and below 1: 0.7 is 70%.",
    )
    workflow = forms.ModelChoiceField(
        queryset=Workflow.objects.order_by("slug"),
        to_field_name="slug",
        required=False,
        empty_label="All workflows",
    )

    def clean_target_margin(self):
        margin = self.cleaned_data["target_margin"]
        try:
            return check_target_margin(margin)
        except ValueError:
            raise ValidationError(
                f"Invalid target margin {margin}: expected at least 0 and below 1, "
                "for example 0.7 for 70%."
            ) from None

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("start"), cleaned.get("end")
        if start and end and end < start:
            raise ValidationError(
                f"Invalid window: the end date {end} is before the start date {start}."
            )
        return cleaned


def default_analysis_data() -> dict:
    """Return form data for the last 30 UTC days, today included, at margin 0.70."""
    today = timezone.now().astimezone(UTC).date()
    return {
        "start": (today - timedelta(days=DEFAULT_DAYS - 1)).isoformat(),
        "end": today.isoformat(),
        "target_margin": str(DEFAULT_TARGET_MARGIN),
        "workflow": "",
    }


def pricing_analysis_view(request):
    """Show cost per execution and suggested prices per workflow and model."""
    if not request.user.has_perm("billing.view_plan"):
        raise PermissionDenied
    form = PricingAnalysisForm(request.GET or default_analysis_data())
    rows = None
    if form.is_valid():
        start = form.cleaned_data["start"]
        end = form.cleaned_data["end"]
        workflow = form.cleaned_data["workflow"]
        days = (end - start).days + 1
        stats = workflow_cost_stats(
            start=datetime.combine(start, time.min, tzinfo=UTC),
            end=datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC),
            workflow=workflow.slug if workflow else None,
        )
        margin = form.cleaned_data["target_margin"]
        rows = [suggested_price_row(row, margin, days) for row in stats]
    context = {
        **admin.site.each_context(request),
        "title": "Pricing analysis",
        "form": form,
        "rows": rows,
        "month_days": MONTH_DAYS,
    }
    return TemplateResponse(request, "admin/billing/pricing_analysis.html", context)


# Outcome values ------------------------------------------------------------


class OutcomeValueForm(forms.Form):
    value = forms.DecimalField(
        label="Outcome value (USD)",
        min_value=Decimal(0),
        max_digits=14,
        decimal_places=2,
        help_text="Business value of each selected execution's outcome, in USD.",
    )


def parse_ids(text: str) -> list[int] | None:
    """Return the comma-separated execution ids in `text`, or None if any is invalid."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not all(part.isdigit() for part in parts):
        return None
    return list(dict.fromkeys(int(part) for part in parts))


def record_outcome_view(request):
    """Ask for an outcome value and record it on each execution in `?ids=`."""
    if not request.user.has_perm("agents.change_execution"):
        raise PermissionDenied
    changelist = reverse("admin:agents_execution_changelist")
    ids = parse_ids(request.GET.get("ids", ""))
    if ids is None:
        messages.error(
            request,
            f"Invalid execution ids {request.GET.get('ids', '')!r}: expected "
            "comma-separated numbers. Select executions in the list first.",
        )
        return redirect(changelist)
    executions = Execution.objects.filter(pk__in=ids).select_related("workflow")
    found = {execution.pk: execution for execution in executions}
    form = OutcomeValueForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        record_outcomes(request, ids, found, form.cleaned_data["value"])
        return redirect(changelist)
    context = {
        **admin.site.each_context(request),
        "title": "Record outcome value",
        "form": form,
        "executions": [found[pk] for pk in ids if pk in found],
        "missing": [pk for pk in ids if pk not in found],
    }
    return TemplateResponse(request, "admin/billing/record_outcome.html", context)


def record_outcomes(request, ids: list[int], found: dict, value: Decimal) -> None:
    """Record `value` on each execution, with one message per failure."""
    recorded = 0
    for pk in ids:
        execution = found.get(pk)
        if execution is None:
            messages.error(request, f"Execution {pk} not found.")
            continue
        try:
            execution_record_outcome(execution=execution, value_usd=value)
        except ValidationError as error:
            logger.warning(
                "Outcome value %s USD not recorded on execution %s: %s",
                value,
                pk,
                "; ".join(error.messages),
            )
            messages.error(
                request,
                f"Execution {pk}: outcome not recorded. {' '.join(error.messages)}",
            )
            continue
        recorded += 1
    if recorded:
        messages.success(
            request, f"Outcome value {value} USD recorded on {recorded} executions."
        )


# Customer margin page --------------------------------------------------------

RECENT_ROWS = 20


def customer_margin_page(request, customer):
    """Show one customer's period margin, cost charts, alerts, statements and runs."""
    now = timezone.now()
    today = now.astimezone(UTC).date()
    figures = customer_margin(customer=customer, day=today, now=now)
    charts = {}
    for group, label in (("model", "model"), ("workflow", "workflow")):
        days, series = daily_cost_by(
            customer=customer,
            start=figures.period_start,
            end=figures.period_end,
            group=group,
        )
        charts[group] = stacked_bars(
            [day.isoformat() for day in days],
            top_series(series),
            title=f"Daily cost by {label}, {figures.period_start} to {days[-1]}",
            empty="No cost rolled up in this period yet.",
        )
    context = {
        **admin.site.each_context(request),
        "title": f"{customer.name}: margin",
        "customer": customer,
        "figures": figures,
        "period_last_day": figures.period_end - timedelta(days=1),
        "charts": charts,
        "alerts": Alert.objects.filter(customer=customer).order_by("-created_at")[
            :RECENT_ROWS
        ],
        "statements": PeriodStatement.objects.filter(customer=customer).order_by(
            "-period_start"
        ),
        "executions": Execution.objects.filter(customer=customer)
        .select_related("workflow")
        .order_by("-created_at")[:RECENT_ROWS],
        "recent_rows": RECENT_ROWS,
        "rolled_up_until": usage_rolled_up_until(),
    }
    return TemplateResponse(request, "admin/billing/customer_margin.html", context)


# Margin overview -------------------------------------------------------------

OVERVIEW_ROWS = 5
TREND_MONTHS = 6


def margin_overview_view(request):
    """Show the best and worst customers, workflow and model margins, and the trend."""
    if not request.user.has_perm("billing.view_customermargin"):
        raise PermissionDenied
    now = timezone.now()
    today = now.astimezone(UTC).date()
    ranked = customers_with_margin(Customer.objects.all(), today=today)
    report = margin_report(day=today, now=now)
    this_month = month_start(today)
    months = [
        add_months(this_month, -offset) for offset in range(TREND_MONTHS - 1, -1, -1)
    ]
    trend = monthly_trend(months=months)
    context = {
        **admin.site.each_context(request),
        "title": "Margin overview",
        "customer_tables": [
            (
                "Lowest margins",
                ranked.order_by("period_margin", "name")[:OVERVIEW_ROWS],
                "bottom-customers",
            ),
            (
                "Highest margins",
                ranked.order_by("-period_margin", "name")[:OVERVIEW_ROWS],
                "top-customers",
            ),
        ],
        "allocation_tables": [
            (
                "Workflow",
                sorted(report.workflows, key=lambda row: row.margin),
                "workflow-margins",
            ),
            (
                "Model",
                sorted(report.models, key=lambda row: row.margin),
                "model-margins",
            ),
        ],
        "trend": trend,
        "trend_chart": grouped_bars(
            [row["month"].strftime("%Y-%m") for row in trend],
            {
                "Revenue": [row["revenue"] for row in trend],
                "Cost": [row["cost"] for row in trend],
                "Margin": [row["margin"] for row in trend],
            },
            title=f"Revenue, cost and margin over the last {TREND_MONTHS} months",
            empty="No revenue or cost in these months yet.",
        ),
        "rolled_up_until": usage_rolled_up_until(),
    }
    return TemplateResponse(request, "admin/billing/margin_overview.html", context)


# Plan page -------------------------------------------------------------------


def plan_analysis_context(plan) -> dict:
    """Return the figures the plan's admin page shows beside its form.

    For each workflow and model that finished executions in the last 30
    UTC days: the cost per execution, what this plan charges against it
    and the margin, and the prices suggested for the default target margin.
    """
    today = timezone.now().astimezone(UTC).date()
    start = today - timedelta(days=DEFAULT_DAYS - 1)
    stats = workflow_cost_stats(
        start=datetime.combine(start, time.min, tzinfo=UTC),
        end=datetime.combine(today + timedelta(days=1), time.min, tzinfo=UTC),
    )
    rows = []
    for row in stats:
        earnings = plan_earnings(plan, row, DEFAULT_DAYS)
        rows.append(
            {
                **suggested_price_row(row, DEFAULT_TARGET_MARGIN, DEFAULT_DAYS),
                "basis": earnings.basis,
                "plan_revenue": rounded_text(earnings.revenue, "0.000001"),
                "compared_cost": rounded_text(earnings.cost, "0.000001"),
                "plan_margin_percent": earnings.margin_percent,
            }
        )
    return {
        "analysis_rows": rows,
        "analysis_start": start,
        "analysis_end": today,
        "analysis_target_margin": DEFAULT_TARGET_MARGIN,
    }
