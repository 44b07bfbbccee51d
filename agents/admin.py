from django.contrib import admin

from agents.models import ApiMessage, Execution, ModelPrice, Workflow
from agents.pricing.reprice import reprice_unpriced
from agents.selectors import decimal_text


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = (
        "model",
        "valid_from",
        "input_per_mtok",
        "output_per_mtok",
        "cache_write_5m_per_mtok",
        "cache_write_1h_per_mtok",
        "cache_read_per_mtok",
        "web_search_per_thousand",
        "long_context_threshold_tokens",
        "note",
    )
    list_filter = ("model", "valid_from")
    search_fields = ("model",)
    date_hierarchy = "valid_from"
    actions = ("reprice_unpriced_history",)
    readonly_fields = ("created_at",)
    fieldsets = (
        (
            None,
            {
                "description": (
                    "A row applies from its start until the next row for the same "
                    "model id. Running workers pick up a change within 30 seconds."
                ),
                "fields": ("model", "valid_from", "note", "created_at"),
            },
        ),
        (
            "Rates in USD per million tokens, web search per thousand requests",
            {
                "fields": (
                    "input_per_mtok",
                    "output_per_mtok",
                    "cache_write_5m_per_mtok",
                    "cache_write_1h_per_mtok",
                    "cache_read_per_mtok",
                    "web_search_per_thousand",
                )
            },
        ),
        (
            "Long context",
            {
                "description": (
                    "When the prompt (input, cache reads and cache writes) is longer "
                    "than the threshold, every token of the request is priced at "
                    "these rates. An empty rate keeps the standard rate."
                ),
                "fields": (
                    "long_context_threshold_tokens",
                    "long_context_input_per_mtok",
                    "long_context_output_per_mtok",
                    "long_context_cache_write_5m_per_mtok",
                    "long_context_cache_write_1h_per_mtok",
                    "long_context_cache_read_per_mtok",
                ),
            },
        ),
    )

    @admin.action(
        description="Re-price unpriced messages of the selected models",
        permissions=["change"],
    )
    def reprice_unpriced_history(self, request, queryset):
        models = sorted(set(queryset.values_list("model", flat=True)))
        for model in models:
            result = reprice_unpriced(model=model)
            self.message_user(request, reprice_summary(model, result))


def reprice_summary(model: str, result) -> str:
    """Return one line on what re-pricing `model` did, for staff."""
    text = (
        f"{model}: {result.messages_repriced} messages priced, "
        f"{result.executions_updated} executions updated"
    )
    if result.messages_still_unpriced:
        text += f", {result.messages_still_unpriced} still unpriced"
    if result.executions_running:
        text += (
            f", {result.executions_running} running executions left for the next run"
        )
    return text + "."


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = [
        "slug",
        "name",
        "model",
        "fallback_model",
        "max_turns",
        "per_run_budget_usd",
        "is_active",
    ]
    list_filter = ["is_active", "model"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}


class ApiMessageInline(admin.TabularInline):
    model = ApiMessage
    extra = 0
    can_delete = False
    show_change_link = False
    fields = [
        "sequence",
        "message_id",
        "model",
        "parent_tool_use_id",
        "input_tokens",
        "output_tokens",
        "cache_write_5m_tokens",
        "cache_write_1h_tokens",
        "cache_read_tokens",
        "web_search_requests",
        "cost_display",
        "output_final",
        "estimated",
        "price_source",
        "price_version",
        "arrived_at",
    ]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="cost (USD)")
    def cost_display(self, message):
        return (
            "unpriced" if message.cost_usd is None else decimal_text(message.cost_usd)
        )


@admin.register(Execution)
class ExecutionAdmin(admin.ModelAdmin):
    """Executions are recorded by the runner; the admin shows them read-only."""

    list_display = [
        "id",
        "customer",
        "workflow",
        "status",
        "requested_model",
        "api_message_count",
        "cost_display",
        "reported_cost_display",
        "difference_display",
        "simulated",
        "created_at",
    ]
    list_filter = [
        "status",
        ("requested_model", admin.AllValuesFieldListFilter),
        "simulated",
        "unpriced",
        "estimated",
        "source",
        "workflow",
        "customer",
    ]
    search_fields = ["id", "sdk_session_id", "customer__slug", "prompt"]
    date_hierarchy = "created_at"
    list_select_related = ["customer", "workflow"]
    inlines = [ApiMessageInline]
    readonly_fields = [
        field.name
        for field in Execution._meta.fields
        if field.name != "outcome_value_usd"
    ]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="SDK-reported (USD)", ordering="reported_cost_usd")
    def reported_cost_display(self, execution):
        return decimal_text(execution.reported_cost_usd) or "-"

    @admin.display(description="ours minus SDK's (USD)", ordering="cost_difference_usd")
    def difference_display(self, execution):
        if execution.cost_difference_usd is None:
            return "-"
        return decimal_text(execution.cost_difference_usd)

    @admin.display(description="our cost (USD)", ordering="cost_usd")
    def cost_display(self, execution):
        text = decimal_text(execution.cost_usd)
        if execution.unpriced:
            return f"{text} + unpriced"
        return text
