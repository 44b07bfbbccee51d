"""Success fees of closed periods, sent to Stripe as invoice items.

A success fee depends on outcome values that staff record after the
runs, so it is billed from the period's frozen statement rather than
through a meter. Each fee line becomes one invoice item on the
customer's Stripe subscription, which Stripe adds to its next invoice.
"""

from __future__ import annotations

import logging
from decimal import Decimal

import stripe
from django.db import IntegrityError, transaction

from billing.models import PeriodStatement, StripeInvoiceItem, Subscription
from billing.stripe.client import stripe_client
from billing.stripe.money import to_minor_units
from billing.stripe.retry import call_with_retries

logger = logging.getLogger(__name__)

# Statement line kinds billed as invoice items: the fees and the top-up to
# the monthly minimum.
INVOICE_ITEM_KINDS = ("success_fee", "minimum_fee")


def success_fees_invoice(*, client: stripe.StripeClient | None = None) -> int:
    """Send the success fee lines of every closed statement not sent yet; return how many."""
    client = client or stripe_client()
    sent = 0
    statements = (
        PeriodStatement.objects.exclude(customer__stripe_customer_id="")
        .select_related("customer")
        .order_by("pk")
    )
    for statement in statements:
        if not any(line.get("kind") in INVOICE_ITEM_KINDS for line in statement.lines):
            continue
        sent += statement_invoice_items(statement, client=client)
    return sent


def statement_invoice_items(
    statement: PeriodStatement, *, client: stripe.StripeClient
) -> int:
    """Create the Stripe invoice items of one statement's fee lines, once each."""
    done = set(
        statement.stripe_invoice_items.exclude(stripe_invoice_item_id="").values_list(
            "line_kind", flat=True
        )
    )
    subscription = (
        Subscription.objects.filter(customer=statement.customer)
        .exclude(stripe_subscription_id="")
        .order_by("-started_on")
        .first()
    )
    sent = 0
    for line in statement.lines:
        kind = line.get("kind")
        if kind not in INVOICE_ITEM_KINDS or kind in done:
            continue
        amount = Decimal(line["amount"])
        if amount <= 0:
            continue
        _create_item(statement, subscription, kind, line["description"], amount, client)
        sent += 1
    return sent


def _create_item(
    statement: PeriodStatement,
    subscription: Subscription | None,
    kind: str,
    description: str,
    amount: Decimal,
    client: stripe.StripeClient,
) -> None:
    period = f"{statement.period_start} to {statement.period_end}"
    params = {
        "customer": statement.customer.stripe_customer_id,
        "amount": to_minor_units(amount, statement.currency),
        "currency": statement.currency,
        "description": f"{description} ({period})",
        "metadata": {
            "agentmargin_statement_id": str(statement.pk),
            "agentmargin_line": kind,
        },
    }
    if subscription is not None:
        params["subscription"] = subscription.stripe_subscription_id
    item = call_with_retries(
        lambda: client.v1.invoice_items.create(
            params,
            {"idempotency_key": f"agentmargin-statement-{statement.pk}-{kind}"},
        ),
        description=f"Statement {statement.pk}: invoice item {kind}",
    )
    try:
        with transaction.atomic():
            StripeInvoiceItem.objects.update_or_create(
                statement=statement,
                line_kind=kind,
                defaults={
                    "description": params["description"][:300],
                    "amount": amount,
                    "currency": statement.currency,
                    "stripe_invoice_item_id": item.id,
                },
            )
    except IntegrityError:
        # Another run recorded the same line at the same moment; the
        # idempotency key made both requests return the same item.
        pass
    logger.info(
        "Customer %s: invoice item %s of %s %s for %s",
        statement.customer.slug,
        item.id,
        amount,
        statement.currency,
        period,
    )
