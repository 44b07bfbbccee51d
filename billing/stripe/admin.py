"""Read-only admin pages of the data mirrored from or sent to Stripe.

`billing.admin` imports this module, which registers the pages.
"""

from django.contrib import admin

from billing.models import (
    MeterEventDelivery,
    MeteringException,
    ReconciliationDifference,
    StripeInvoice,
    StripeInvoiceItem,
    StripeWebhookEvent,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows that only Stripe or a Stripe job writes."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(StripeInvoice)
class StripeInvoiceAdmin(ReadOnlyAdmin):
    list_display = (
        "__str__",
        "customer",
        "status",
        "total",
        "amount_due",
        "amount_paid",
        "currency",
        "period_start",
        "period_end",
    )
    list_filter = ("status", ("customer", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("customer",)
    search_fields = ("stripe_id", "number", "stripe_customer_id", "customer__slug")


@admin.register(StripeWebhookEvent)
class StripeWebhookEventAdmin(ReadOnlyAdmin):
    list_display = ("event_id", "type", "status", "created", "received_at")
    list_filter = ("status", "type")
    search_fields = ("event_id", "type")


@admin.register(MeterEventDelivery)
class MeterEventDeliveryAdmin(ReadOnlyAdmin):
    list_display = (
        "identifier",
        "customer",
        "event_name",
        "value",
        "timestamp",
        "status",
        "attempts",
    )
    list_filter = ("status", ("customer", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("customer",)
    search_fields = ("identifier", "customer__slug", "execution__id")


@admin.register(MeteringException)
class MeteringExceptionAdmin(MeterEventDeliveryAdmin):
    """Usage that Stripe will not take, to bill by hand."""

    list_display = ("identifier", "customer", "value", "timestamp", "last_error")

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .filter(status=MeterEventDelivery.Status.EXCEPTION)
        )


@admin.register(ReconciliationDifference)
class ReconciliationDifferenceAdmin(ReadOnlyAdmin):
    list_display = (
        "customer",
        "stripe_meter_id",
        "period_start",
        "expected",
        "stripe_value",
        "difference",
        "checked_at",
        "resolved_at",
    )
    list_filter = (("customer", admin.RelatedOnlyFieldListFilter),)
    list_select_related = ("customer",)


@admin.register(StripeInvoiceItem)
class StripeInvoiceItemAdmin(ReadOnlyAdmin):
    list_display = (
        "statement",
        "line_kind",
        "amount",
        "currency",
        "stripe_invoice_item_id",
        "created_at",
    )
    list_select_related = ("statement__customer",)
