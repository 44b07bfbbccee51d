from django.contrib import admin

from agents.selectors import decimal_text
from billing.models import Alert, DailyUsage, MonthlyUsage
from billing.services import alert_acknowledge, alert_resolve

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
