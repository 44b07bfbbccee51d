"""The endpoints the fake serves, each with the stripe.params TypedDict it checks."""

import re
from dataclasses import dataclass

import stripe.params as p
import stripe.params.billing as billing
import stripe.params.v2.billing as v2_billing

from . import (
    catalog,
    invoice_items,
    invoicing,
    metering,
    prices,
    subscriptions,
    webhooks,
)
from .wire import FakeStripeError, unsupported


@dataclass
class Route:
    method: str
    template: str
    handler: object
    params_class: type
    auth: str = "api_key"
    host: str = "api"
    supported: frozenset | None = None

    def __post_init__(self):
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.template)
        self.pattern = re.compile(f"^{pattern}$")

    def call(self, fake, context, params, path_args):
        if self.supported is not None:
            for name in params:
                if name not in self.supported:
                    raise unsupported(name, f"{self.method} {self.template}")
        result = self.handler(fake, context, params, **path_args)
        if isinstance(result, tuple):
            return result
        return 200, result


SUBSCRIPTION_CREATE = frozenset(
    {
        "customer",
        "items",
        "metadata",
        "payment_behavior",
        "collection_method",
        "days_until_due",
        "expand",
        "backdate_start_date",
        "billing_cycle_anchor",
        "proration_behavior",
        "cancel_at_period_end",
        "description",
        "default_payment_method",
        "off_session",
    }
)
SUBSCRIPTION_UPDATE = frozenset(
    {
        "items",
        "metadata",
        "cancel_at_period_end",
        "description",
        "collection_method",
        "days_until_due",
        "proration_behavior",
        "proration_date",
        "payment_behavior",
        "expand",
        "default_payment_method",
        "off_session",
    }
)
SUBSCRIPTION_ITEM_WRITE = frozenset(
    {
        "subscription",
        "price",
        "quantity",
        "metadata",
        "proration_behavior",
        "proration_date",
        "payment_behavior",
        "expand",
    }
)
PRICE_CREATE = frozenset(
    {
        "currency",
        "product",
        "product_data",
        "unit_amount",
        "unit_amount_decimal",
        "recurring",
        "billing_scheme",
        "tiers",
        "tiers_mode",
        "lookup_key",
        "transfer_lookup_key",
        "nickname",
        "metadata",
        "active",
        "tax_behavior",
        "transform_quantity",
        "expand",
    }
)
INVOICE_ITEM_CREATE = frozenset(
    {
        "customer",
        "amount",
        "currency",
        "description",
        "subscription",
        "metadata",
        "period",
        "pricing",
        "quantity",
        "unit_amount_decimal",
        "discountable",
        "expand",
    }
)

ROUTES = [
    Route("POST", "/v1/customers", catalog.create_customer, p.CustomerCreateParams),
    Route(
        "GET", "/v1/customers/search", catalog.search_customers, p.CustomerSearchParams
    ),
    Route("GET", "/v1/customers", catalog.list_customers, p.CustomerListParams),
    Route(
        "GET", "/v1/customers/{id}", catalog.retrieve_customer, p.CustomerRetrieveParams
    ),
    Route(
        "POST", "/v1/customers/{id}", catalog.update_customer, p.CustomerUpdateParams
    ),
    Route(
        "DELETE", "/v1/customers/{id}", catalog.delete_customer, p.CustomerDeleteParams
    ),
    Route("POST", "/v1/products", catalog.create_product, p.ProductCreateParams),
    Route("GET", "/v1/products/search", catalog.search_products, p.ProductSearchParams),
    Route("GET", "/v1/products", catalog.list_products, p.ProductListParams),
    Route(
        "GET", "/v1/products/{id}", catalog.retrieve_product, p.ProductRetrieveParams
    ),
    Route("POST", "/v1/products/{id}", catalog.update_product, p.ProductUpdateParams),
    Route("DELETE", "/v1/products/{id}", catalog.delete_product, p.ProductDeleteParams),
    Route(
        "POST",
        "/v1/prices",
        prices.create_price,
        p.PriceCreateParams,
        supported=PRICE_CREATE,
    ),
    Route("GET", "/v1/prices/search", prices.search_prices, p.PriceSearchParams),
    Route("GET", "/v1/prices", prices.list_prices, p.PriceListParams),
    Route("GET", "/v1/prices/{id}", prices.retrieve_price, p.PriceRetrieveParams),
    Route("POST", "/v1/prices/{id}", prices.update_price, p.PriceUpdateParams),
    Route(
        "POST", "/v1/billing/meters", metering.create_meter, billing.MeterCreateParams
    ),
    Route("GET", "/v1/billing/meters", metering.list_meters, billing.MeterListParams),
    Route(
        "GET",
        "/v1/billing/meters/{id}",
        metering.retrieve_meter,
        billing.MeterRetrieveParams,
    ),
    Route(
        "POST",
        "/v1/billing/meters/{id}",
        metering.update_meter,
        billing.MeterUpdateParams,
    ),
    Route(
        "POST",
        "/v1/billing/meters/{id}/deactivate",
        metering.deactivate_meter,
        billing.MeterDeactivateParams,
    ),
    Route(
        "POST",
        "/v1/billing/meters/{id}/reactivate",
        metering.reactivate_meter,
        billing.MeterReactivateParams,
    ),
    Route(
        "GET",
        "/v1/billing/meters/{id}/event_summaries",
        metering.list_event_summaries,
        billing.MeterEventSummaryListParams,
    ),
    Route(
        "POST",
        "/v1/billing/meter_events",
        metering.create_meter_event_v1,
        billing.MeterEventCreateParams,
    ),
    Route(
        "POST",
        "/v2/billing/meter_events",
        metering.create_meter_event_v2,
        v2_billing.MeterEventCreateParams,
    ),
    Route(
        "POST",
        "/v2/billing/meter_event_session",
        metering.create_session,
        v2_billing.MeterEventSessionCreateParams,
    ),
    Route(
        "POST",
        "/v2/billing/meter_event_stream",
        metering.create_stream_events,
        v2_billing.MeterEventStreamCreateParams,
        auth="session",
        host="meter_events",
    ),
    Route(
        "POST",
        "/v1/subscriptions",
        subscriptions.create_subscription,
        p.SubscriptionCreateParams,
        supported=SUBSCRIPTION_CREATE,
    ),
    Route(
        "GET",
        "/v1/subscriptions/search",
        subscriptions.search_subscriptions,
        p.SubscriptionSearchParams,
    ),
    Route(
        "GET",
        "/v1/subscriptions",
        subscriptions.list_subscriptions,
        p.SubscriptionListParams,
    ),
    Route(
        "GET",
        "/v1/subscriptions/{id}",
        subscriptions.retrieve_subscription,
        p.SubscriptionRetrieveParams,
    ),
    Route(
        "POST",
        "/v1/subscriptions/{id}",
        subscriptions.update_subscription,
        p.SubscriptionUpdateParams,
        supported=SUBSCRIPTION_UPDATE,
    ),
    Route(
        "DELETE",
        "/v1/subscriptions/{id}",
        subscriptions.cancel_subscription,
        p.SubscriptionCancelParams,
    ),
    Route(
        "POST",
        "/v1/subscription_items",
        subscriptions.create_item,
        p.SubscriptionItemCreateParams,
        supported=SUBSCRIPTION_ITEM_WRITE,
    ),
    Route(
        "GET",
        "/v1/subscription_items",
        subscriptions.list_items,
        p.SubscriptionItemListParams,
    ),
    Route(
        "GET",
        "/v1/subscription_items/{id}",
        subscriptions.retrieve_item,
        p.SubscriptionItemRetrieveParams,
    ),
    Route(
        "POST",
        "/v1/subscription_items/{id}",
        subscriptions.update_item,
        p.SubscriptionItemUpdateParams,
        supported=SUBSCRIPTION_ITEM_WRITE,
    ),
    Route(
        "DELETE",
        "/v1/subscription_items/{id}",
        subscriptions.delete_item,
        p.SubscriptionItemDeleteParams,
    ),
    Route(
        "POST",
        "/v1/invoiceitems",
        invoice_items.create_invoice_item,
        p.InvoiceItemCreateParams,
        supported=INVOICE_ITEM_CREATE,
    ),
    Route(
        "GET",
        "/v1/invoiceitems",
        invoice_items.list_invoice_items,
        p.InvoiceItemListParams,
    ),
    Route(
        "GET",
        "/v1/invoiceitems/{id}",
        invoice_items.retrieve_invoice_item,
        p.InvoiceItemRetrieveParams,
    ),
    Route(
        "POST",
        "/v1/invoiceitems/{id}",
        invoice_items.update_invoice_item,
        p.InvoiceItemUpdateParams,
    ),
    Route(
        "DELETE",
        "/v1/invoiceitems/{id}",
        invoice_items.delete_invoice_item,
        p.InvoiceItemDeleteParams,
    ),
    Route(
        "POST",
        "/v1/invoices/create_preview",
        invoicing.create_preview,
        p.InvoiceCreatePreviewParams,
    ),
    Route("GET", "/v1/invoices", invoicing.list_invoices, p.InvoiceListParams),
    Route(
        "GET",
        "/v1/invoices/{id}/lines",
        invoicing.list_invoice_lines,
        p.InvoiceLineItemListParams,
    ),
    Route(
        "GET", "/v1/invoices/{id}", invoicing.retrieve_invoice, p.InvoiceRetrieveParams
    ),
    Route("POST", "/v1/invoices/{id}/pay", invoicing.pay_invoice, p.InvoicePayParams),
    Route("GET", "/v1/events", webhooks.list_events, p.EventListParams),
    Route("GET", "/v1/events/{id}", webhooks.retrieve_event, p.EventRetrieveParams),
]


def resolve(method, path):
    for route in ROUTES:
        if route.method != method:
            continue
        match = route.pattern.match(path)
        if match:
            return route, match.groupdict()
    raise FakeStripeError(
        f"Unrecognized request URL ({method}: {path}). Please see "
        "https://stripe.com/docs or we can help at https://support.stripe.com/.",
        status=404,
    )


def check_host(route, host):
    """Reject a request sent to the wrong Stripe host.

    Only Stripe's own host names are checked: a loopback server serves both
    hosts' paths on one address.
    """
    expected = {"api": "api.stripe.com", "meter_events": "meter-events.stripe.com"}
    if host in expected.values() and host != expected[route.host]:
        raise FakeStripeError(
            f"Unrecognized request URL (POST: {route.template}) on {host}; "
            f"this endpoint is served by {expected[route.host]}.",
            status=404,
        )


def authenticate(fake, route, headers):
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise FakeStripeError(
            "You did not provide an API key. You need to provide your API key "
            "in the Authorization header, using Bearer auth.",
            status=401,
        )
    if route.auth == "session":
        metering.check_session_token(fake, token)
        return
    if token != fake.api_key:
        raise FakeStripeError(
            f"Invalid API Key provided: {token[:8]}{'*' * 8}{token[-4:]}",
            status=401,
        )
