"""Admin pages of the reconciliation with Anthropic's reports.

`billing.admin` imports this module, which registers the pages.
"""

from django.contrib import admin, messages

from agents.selectors import decimal_text
from billing.anthropic.client import AnthropicNotConfigured
from billing.anthropic.reconcile import anthropic_day_reprice, anthropic_reconcile
from billing.anthropic.report import ReportError
from billing.models import AnthropicAccount, AnthropicComparison


@admin.register(AnthropicAccount)
class AnthropicAccountAdmin(admin.ModelAdmin):
    list_display = ("customer", "api_key_id", "workspace_id", "note", "created_at")
    list_select_related = ("customer",)
    search_fields = ("customer__slug", "api_key_id", "workspace_id", "note")
    autocomplete_fields = ("customer",)


@admin.register(AnthropicComparison)
class AnthropicComparisonAdmin(admin.ModelAdmin):
    """Comparisons are written by the reconciliation only; staff act on days."""

    list_display = (
        "day",
        "customer_text",
        "model",
        "our_cost",
        "their_cost",
        "difference",
        "difference_percent",
        "our_output_tokens",
        "their_output_tokens",
        "our_unpriced_messages",
        "above_threshold",
    )
    list_filter = (
        "above_threshold",
        "model",
        ("customer", admin.RelatedOnlyFieldListFilter),
    )
    list_select_related = ("customer",)
    date_hierarchy = "day"
    search_fields = ("customer__slug", "model")
    actions = ("reprice_days", "reconcile_days")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_reprice_permission(self, request):
        # Repricing rewrites recorded message costs.
        return request.user.has_perm("agents.change_apimessage")

    def has_reconcile_permission(self, request):
        return request.user.is_staff

    @admin.display(description="Customer", ordering="customer__slug")
    def customer_text(self, comparison):
        return comparison.customer or "(unmapped)"

    @admin.display(description="Our cost (USD)", ordering="our_cost_usd")
    def our_cost(self, comparison):
        return decimal_text(comparison.our_cost_usd)

    @admin.display(description="Anthropic's cost (USD)", ordering="their_cost_usd")
    def their_cost(self, comparison):
        return decimal_text(comparison.their_cost_usd)

    @admin.display(description="Difference (USD)", ordering="difference_usd")
    def difference(self, comparison):
        return decimal_text(comparison.difference_usd)

    @admin.action(
        description="Re-price the selected days from the current price table",
        permissions=["reprice"],
    )
    def reprice_days(self, request, queryset):
        for day in _days(queryset):
            repriced, result = anthropic_day_reprice(day=day)
            self.message_user(
                request,
                f"{day}: {repriced.messages_changed} of {repriced.messages_checked} "
                f"messages repriced, {repriced.executions_running} running "
                f"executions left alone; our cost now "
                f"{decimal_text(result.our_cost_usd)} USD, Anthropic's "
                f"{decimal_text(result.their_cost_usd)} USD.",
            )

    @admin.action(
        description="Compare the selected days with Anthropic's report again",
        permissions=["reconcile"],
    )
    def reconcile_days(self, request, queryset):
        for day in _days(queryset):
            try:
                result = anthropic_reconcile(day=day)
            except (AnthropicNotConfigured, ReportError) as exc:
                self.message_user(request, f"{day}: {exc}", level=messages.ERROR)
                return
            self.message_user(
                request,
                f"{day}: {len(result.comparisons)} comparisons, "
                f"{result.alerts_raised} alerts raised.",
            )


def _days(queryset):
    return sorted(set(queryset.values_list("day", flat=True)))
