from datetime import UTC
from decimal import Decimal

from django.contrib import admin
from django.db.models import DecimalField, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from agents.admin import ExecutionAdmin
from agents.models import Execution
from agents.selectors import decimal_text
from billing.invoicing import invoice_preview
from billing.margins import customer_period, margin_percent
from billing.models import (
    COST_DIGITS,
    Alert,
    CustomerMargin,
    DailyUsage,
    MonthlyUsage,
    PeriodStatement,
    Plan,
    Subscription,
    SubscriptionChange,
)
from billing.services import alert_acknowledge, alert_resolve, subscription_create

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


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = (
        "kind",
        "severity",
        "customer",
        "execution",
        "created_at",
        "acknowledged_at",
        "resolved_at",
    )
    list_filter = (
        "kind",
        "severity",
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
        "created_at",
        "acknowledged_at",
        "acknowledged_by",
        "resolved_at",
        "resolved_by",
    )

    def has_add_permission(self, request):
        return False

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


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    """Plans, validated by `Plan.clean()` through the admin's model form."""

    list_display = ("name", "slug", "billing_model", "currency", "is_active")
    list_filter = ("billing_model", "is_active")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    fieldsets = (
        (None, {"fields": ("name", "slug", "currency", "is_active", "billing_model")}),
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

    Plan and dates are read-only once created, because a plan change must
    go through `subscription_change_plan` to keep its history and proration.
    """

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
        )

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return (
            "customer",
            "plan",
            "started_on",
            "current_period_start",
            "current_period_end",
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


def current_month_cost() -> Coalesce:
    """Return an expression for the customer's rolled-up cost this UTC month."""
    month = timezone.now().astimezone(UTC).date().replace(day=1)
    costs = (
        MonthlyUsage.objects.filter(customer=OuterRef("pk"), month=month)
        .order_by()
        .values("customer")
        .annotate(total=Sum("cost_usd"))
        .values("total")
    )
    output = DecimalField(**COST_DIGITS)
    return Coalesce(Subquery(costs, output_field=output), Value(0), output_field=output)


def period_revenue(customer) -> Decimal:
    """Return the invoice preview total of the customer's billing period today."""
    today = timezone.now().astimezone(UTC).date()
    start, end = customer_period(customer, today)
    return invoice_preview(customer=customer, period_start=start, period_end=end).total


class UnprofitableFilter(admin.SimpleListFilter):
    title = "profitability"
    parameter_name = "unprofitable"

    def lookups(self, request, model_admin):
        return (("yes", "Unprofitable (margin below 0)"), ("no", "Margin 0 or more"))

    def queryset(self, request, queryset):
        if self.value() not in ("yes", "no"):
            return queryset
        # Revenue comes from the invoice preview in Python, so the margin
        # cannot be filtered in SQL.
        unprofitable = [
            customer.pk
            for customer in queryset
            if period_revenue(customer) - customer.month_cost < 0
        ]
        if self.value() == "yes":
            return queryset.filter(pk__in=unprofitable)
        return queryset.exclude(pk__in=unprofitable)


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


@admin.register(CustomerMargin)
class CustomerMarginAdmin(admin.ModelAdmin):
    """Read-only revenue, cost and margin of each customer now.

    Cost is the rolled-up cost of the current UTC calendar month, annotated
    so that it sorts. Revenue is the invoice preview total of the billing
    period containing today, computed per row.
    """

    # NOTE: the two figures cover the same days only for subscriptions that
    # start on the first of a month. The pricing_report command matches
    # each customer's cost to its own billing period.
    list_display = ("name", "slug", "revenue", "cost", "margin", "margin_percent")
    list_filter = (UnprofitableFilter, PlanFilter)
    search_fields = ("name", "slug")
    ordering = ("name",)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(month_cost=current_month_cost())

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Period revenue")
    def revenue(self, customer):
        return period_revenue(customer)

    @admin.display(description="Cost this month (USD)", ordering="month_cost")
    def cost(self, customer):
        return decimal_text(customer.month_cost)

    @admin.display(description="Margin")
    def margin(self, customer):
        margin = period_revenue(customer) - customer.month_cost
        text = decimal_text(margin)
        if margin < 0:
            return format_html('<span style="color: #ba2121;">{}</span>', text)
        return text

    @admin.display(description="Margin %")
    def margin_percent(self, customer):
        revenue = period_revenue(customer)
        percent = margin_percent(revenue - customer.month_cost, revenue)
        if percent is None:
            return "-"
        text = f"{percent}%"
        if percent < 0:
            return format_html('<span style="color: #ba2121;">{}</span>', text)
        return text


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
