import logging
from datetime import UTC, timedelta
from decimal import Decimal

import stripe
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Exists, OuterRef
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from agents.admin import ExecutionAdmin
from agents.models import Execution
from agents.selectors import decimal_text
from billing.admin_views import customer_margin_page, plan_analysis_context
from billing.models import (
    Alert,
    AlertRule,
    BudgetReservation,
    CustomerMargin,
    DailyUsage,
    MonthlyUsage,
    PeriodStatement,
    Plan,
    Subscription,
    SubscriptionChange,
)
from billing.revenue import customers_with_margin, period_revenue_refresh
from billing.services import alert_acknowledge, alert_resolve, subscription_create
from billing.stripe.subscriptions import customer_unsubscribe

USAGE_COLUMNS = (
    "customer",
    "workflow",
    "model",
    "cost",
    "unpriced_messages",
    "api_messages",
    "input_tokens",
    "output_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "web_search_requests",
    "executions",
    "succeeded",
    "failed",
    "interrupted",
    "max_turns_reached",
    "budget_exceeded",
    "updated_at",
)

logger = logging.getLogger(__name__)


class UsageAdmin(admin.ModelAdmin):
    """Read-only view of rollup rows, which only a rollup run writes."""

    list_filter = (
        ("customer", admin.RelatedOnlyFieldListFilter),
        ("workflow", admin.RelatedOnlyFieldListFilter),
        "model",
    )
    list_select_related = ("customer", "workflow")
    search_fields = ("customer__slug", "workflow__slug", "model")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Cost (USD)", ordering="cost_usd")
    def cost(self, row):
        text = decimal_text(row.cost_usd)
        # The priced part only: an unpriced message has no known cost.
        return text if row.cost_complete else f"{text} + unpriced"


@admin.register(DailyUsage)
class DailyUsageAdmin(UsageAdmin):
    list_display = ("day", *USAGE_COLUMNS)
    date_hierarchy = "day"


@admin.register(MonthlyUsage)
class MonthlyUsageAdmin(UsageAdmin):
    list_display = ("month", *USAGE_COLUMNS)
    date_hierarchy = "month"


SEVERITY_COLORS = {
    Alert.Severity.WARNING: "#b36b00",
    Alert.Severity.CRITICAL: "#ba2121",
}


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = (
        "kind",
        "severity_text",
        "customer",
        "execution",
        "message_start",
        "created_at",
        "email_status",
        "webhook_status",
        "acknowledged_at",
        "resolved_at",
    )
    list_filter = (
        "kind",
        "severity",
        "email_status",
        "webhook_status",
        ("acknowledged_at", admin.EmptyFieldListFilter),
        ("resolved_at", admin.EmptyFieldListFilter),
        ("customer", admin.RelatedOnlyFieldListFilter),
    )
    list_select_related = ("customer", "execution__workflow")
    search_fields = ("message", "dedupe_key", "customer__slug")
    date_hierarchy = "created_at"
    actions = ("acknowledge", "resolve")
    # Alerts change only through the actions, which record who acted.
    readonly_fields = (
        "kind",
        "severity",
        "customer",
        "execution",
        "message",
        "dedupe_key",
        "rule",
        "period_start",
        "created_at",
        "acknowledged_at",
        "acknowledged_by",
        "resolved_at",
        "resolved_by",
        "email_status",
        "webhook_status",
        "delivery_attempts",
        "last_delivery_error",
    )

    def has_add_permission(self, request):
        return False

    @admin.display(description="Severity", ordering="severity")
    def severity_text(self, alert):
        color = SEVERITY_COLORS.get(alert.severity)
        if color is None:
            return alert.get_severity_display()
        return format_html(
            '<strong style="color: {};">{}</strong>',
            color,
            alert.get_severity_display(),
        )

    @admin.display(description="Message")
    def message_start(self, alert):
        return alert.message if len(alert.message) <= 80 else f"{alert.message[:79]}…"

    @admin.action(description="Acknowledge selected alerts", permissions=["change"])
    def acknowledge(self, request, queryset):
        alerts = list(queryset.filter(acknowledged_at__isnull=True))
        for alert in alerts:
            alert_acknowledge(alert=alert, user=request.user)
        self.message_user(request, f"Alerts acknowledged: {len(alerts)}.")

    @admin.action(description="Resolve selected alerts", permissions=["change"])
    def resolve(self, request, queryset):
        alerts = list(queryset.filter(resolved_at__isnull=True))
        for alert in alerts:
            alert_resolve(alert=alert, user=request.user)
        self.message_user(request, f"Alerts resolved: {len(alerts)}.")


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    """Alert rules: global defaults, and per-customer rules that replace them by kind."""

    list_display = ("kind", "customer", "threshold", "severity", "is_active")
    list_filter = (
        "kind",
        "severity",
        "is_active",
        ("customer", admin.EmptyFieldListFilter),
    )
    list_select_related = ("customer",)
    search_fields = ("customer__slug", "customer__name")
    autocomplete_fields = ("customer",)


@admin.register(BudgetReservation)
class BudgetReservationAdmin(admin.ModelAdmin):
    """Read-only: reservations are taken at admission and released when runs end."""

    list_display = (
        "execution",
        "customer",
        "amount_usd",
        "budget_usd",
        "period_start",
        "created_at",
        "released_at",
        "actual_cost_usd",
    )
    list_filter = (
        ("released_at", admin.EmptyFieldListFilter),
        ("customer", admin.RelatedOnlyFieldListFilter),
    )
    list_select_related = ("customer", "execution__workflow")
    search_fields = ("customer__slug",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    """Plans, validated by `Plan.clean()` through the admin's model form.

    A plan's page shows, under the form, what the plan earns against each
    workflow's recent cost per execution (`plan_analysis_context`).
    """

    def change_view(self, request, object_id, form_url="", extra_context=None):
        plan = self.get_object(request, object_id)
        if plan is not None:
            extra_context = {**(extra_context or {}), **plan_analysis_context(plan)}
        return super().change_view(request, object_id, form_url, extra_context)

    list_display = ("name", "slug", "billing_model", "currency", "is_active")
    list_filter = ("billing_model", "is_active")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    fieldsets = (
        (None, {"fields": ("name", "slug", "currency", "is_active", "billing_model")}),
        ("Budget", {"fields": ("default_monthly_budget_usd",)}),
        ("Subscription and hybrid", {"fields": ("monthly_price",)}),
        (
            "Usage-based",
            {"fields": ("usage_pricing", "price_per_execution", "cost_markup")},
        ),
        (
            "Success fee",
            {
                "fields": (
                    "success_fee_kind",
                    "commission_percent",
                    "fee_per_success",
                    "minimum_monthly_fee",
                )
            },
        ),
        (
            "Hybrid",
            {"fields": ("included_executions", "overage_price", "overage_tiers")},
        ),
    )


class SubscriptionChangeInline(admin.TabularInline):
    model = SubscriptionChange
    fk_name = "subscription"
    extra = 0
    can_delete = False
    fields = readonly_fields = (
        "from_plan",
        "to_plan",
        "prorate",
        "effective_on",
        "remaining_days",
        "proration_credit",
        "proration_charge",
        "created_at",
    )

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    """Subscriptions, each created through `subscription_create`.

    Plan, status and dates are read-only once created, because a plan
    change must go through `subscription_change_plan` to keep its history
    and proration, and a cancellation through the cancel actions, which
    set the end day and cancel the Stripe subscription too.
    """

    actions = ("cancel_at_period_end", "cancel_now")

    list_display = (
        "customer",
        "plan",
        "status",
        "started_on",
        "current_period_start",
        "current_period_end",
    )
    list_filter = ("status", ("plan", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("customer", "plan")
    search_fields = ("customer__slug", "customer__name", "plan__slug")
    inlines = (SubscriptionChangeInline,)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("customer", "plan", "started_on")
        return (
            "customer",
            "plan",
            "status",
            "started_on",
            "current_period_start",
            "current_period_end",
            "cancel_at_period_end",
            "ended_on",
        )

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return self.get_fields(request, obj)

    @admin.action(description="Cancel at the period end", permissions=["change"])
    def cancel_at_period_end(self, request, queryset):
        self._cancel(request, queryset, at_period_end=True)

    @admin.action(description="Cancel now", permissions=["change"])
    def cancel_now(self, request, queryset):
        self._cancel(request, queryset, at_period_end=False)

    def _cancel(self, request, queryset, *, at_period_end: bool) -> None:
        today = timezone.now().astimezone(UTC).date()
        for subscription in queryset.select_related("customer"):
            try:
                customer_unsubscribe(
                    subscription=subscription, at=today, at_period_end=at_period_end
                )
            except (ValidationError, stripe.StripeError) as error:
                logger.warning(
                    "Subscription %s: cancel from the admin failed: %s",
                    subscription.pk,
                    error,
                )
                self.message_user(
                    request,
                    f"Subscription {subscription.pk} ({subscription.customer}): "
                    f"not canceled in full: {error}",
                    level=messages.ERROR,
                )
                continue
            subscription.refresh_from_db()
            self.message_user(
                request,
                f"Subscription {subscription.pk} ({subscription.customer}) ends on "
                f"{subscription.ended_on}.",
            )

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is None:
            form.base_fields["plan"].queryset = Plan.objects.filter(is_active=True)
        return form

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        created = subscription_create(
            customer=obj.customer, plan=obj.plan, start=obj.started_on
        )
        # The admin goes on to log and redirect with this object.
        obj.pk = created.pk
        obj.refresh_from_db()


@admin.register(PeriodStatement)
class PeriodStatementAdmin(admin.ModelAdmin):
    """Read-only: statements are written once, when a period closes."""

    list_display = (
        "customer",
        "period_start",
        "period_end",
        "revenue_total",
        "cost",
        "margin_text",
        "margin_percent",
        "created_at",
    )
    list_filter = (("customer", admin.RelatedOnlyFieldListFilter),)
    list_select_related = ("customer",)
    search_fields = ("customer__slug", "customer__name")
    date_hierarchy = "period_start"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Cost (USD)", ordering="cost_total")
    def cost(self, statement):
        return decimal_text(statement.cost_total)

    @admin.display(description="Margin (USD)", ordering="margin")
    def margin_text(self, statement):
        return decimal_text(statement.margin)


# Customer margins ---------------------------------------------------------


class UnprofitableFilter(admin.SimpleListFilter):
    title = "profitability"
    parameter_name = "unprofitable"

    def lookups(self, request, model_admin):
        return (("yes", "Unprofitable (margin below 0)"), ("no", "Margin 0 or more"))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(period_margin__lt=0)
        if self.value() == "no":
            return queryset.filter(period_margin__gte=0)
        return queryset


class PlanFilter(admin.SimpleListFilter):
    title = "plan"
    parameter_name = "plan"

    def lookups(self, request, model_admin):
        return [(plan.pk, plan.name) for plan in Plan.objects.order_by("name")]

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        return queryset.filter(
            subscriptions__plan=self.value(),
            subscriptions__status__in=[
                Subscription.Status.ACTIVE,
                Subscription.Status.PAST_DUE,
            ],
        )


class AlertingFilter(admin.SimpleListFilter):
    title = "alerts"
    parameter_name = "alerting"

    def lookups(self, request, model_admin):
        return (("yes", "With open alerts"), ("no", "Without open alerts"))

    def queryset(self, request, queryset):
        open_alerts = Alert.objects.filter(
            customer=OuterRef("pk"), resolved_at__isnull=True
        )
        if self.value() == "yes":
            return queryset.filter(Exists(open_alerts))
        if self.value() == "no":
            return queryset.exclude(Exists(open_alerts))
        return queryset


def _money_cell(amount: Decimal) -> str:
    text = decimal_text(amount)
    if amount < 0:
        return format_html('<span style="color: #ba2121;">{}</span>', text)
    return text


@admin.register(CustomerMargin)
class CustomerMarginAdmin(admin.ModelAdmin):
    """Read-only revenue, cost and margin of each customer's current billing period.

    Every column is annotated in SQL (`billing.revenue.customers_with_margin`),
    so each one sorts and the profitability filter runs in the database.
    Revenue is as fresh as its "computed" time; the recompute action
    refreshes it for the selected customers.
    """

    list_display = (
        "name",
        "slug",
        "period",
        "revenue",
        "cost",
        "margin",
        "margin_percent",
        "revenue_computed",
    )
    list_filter = (UnprofitableFilter, PlanFilter, AlertingFilter)
    search_fields = ("name", "slug")
    ordering = ("name",)
    actions = ("recompute_revenue",)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """Show the customer's margin page in place of a change form."""
        customer = self.get_object(request, object_id)
        if customer is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_permission(request, customer):
            raise PermissionDenied
        return customer_margin_page(request, customer)

    def get_queryset(self, request):
        return customers_with_margin(super().get_queryset(request))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Billing period", ordering="period_start")
    def period(self, customer):
        last_day = customer.period_end - timedelta(days=1)
        return f"{customer.period_start} to {last_day}"

    @admin.display(description="Period revenue", ordering="period_revenue")
    def revenue(self, customer):
        return f"{customer.period_revenue:.2f}"

    @admin.display(description="Period cost (USD)", ordering="period_cost")
    def cost(self, customer):
        return decimal_text(customer.period_cost)

    @admin.display(description="Margin", ordering="period_margin")
    def margin(self, customer):
        return _money_cell(customer.period_margin)

    @admin.display(description="Margin %", ordering="period_margin_percent")
    def margin_percent(self, customer):
        percent = customer.period_margin_percent
        if percent is None:
            return "-"
        percent = percent.quantize(Decimal("0.01"))
        text = f"{percent}%"
        if percent < 0:
            return format_html('<span style="color: #ba2121;">{}</span>', text)
        return text

    @admin.display(description="Revenue computed", ordering="revenue_computed_at")
    def revenue_computed(self, customer):
        return customer.revenue_computed_at or "never"

    @admin.action(description="Recompute period revenue", permissions=["view"])
    def recompute_revenue(self, request, queryset):
        written = period_revenue_refresh(customers=list(queryset.order_by("pk")))
        self.message_user(
            request, f"Recomputed the period revenue of {written} customers."
        )


# Executions ---------------------------------------------------------------


# agents cannot import billing, so billing replaces the agents app's
# Execution admin with a subclass that adds billing's actions.
admin.site.unregister(Execution)


@admin.register(Execution)
class BillingExecutionAdmin(ExecutionAdmin):
    actions = ("record_outcome",)

    @admin.action(description="Record outcome value", permissions=["change"])
    def record_outcome(self, request, queryset):
        ids = ",".join(
            str(pk) for pk in queryset.order_by("pk").values_list("pk", flat=True)
        )
        return HttpResponseRedirect(f"{reverse('billing-record-outcome')}?ids={ids}")


# Stripe and Anthropic -------------------------------------------------------
# The pages of Stripe data and of the Anthropic reconciliation live in their
# own modules.
import billing.anthropic.admin  # noqa: E402, F401
import billing.stripe.admin  # noqa: E402, F401
