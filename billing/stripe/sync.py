"""Mirror our plans in Stripe: a Product per plan, its Prices and, for metered
plans, a Billing Meter.

Running the sync again creates nothing new. Each created object's id is
stored on the plan, and a price is replaced only when what it charges
changed. Stripe prices cannot change their amounts, so a new price takes
over the old one's lookup key and the old one is archived. Each create
sends an idempotency key derived from the plan id and the price's
parameters, so a retried request never creates a second object.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from decimal import Decimal

import stripe

from billing import plans as plan_rules
from billing.models import Plan
from billing.stripe.client import stripe_client
from billing.stripe.money import plain_decimal, to_minor_decimal, to_minor_units
from billing.stripe.retry import call_with_retries

logger = logging.getLogger(__name__)

METERED_MODELS = (Plan.BillingModel.HYBRID, Plan.BillingModel.USAGE)
# Meter event payload keys; Stripe's defaults, written out so events match.
CUSTOMER_PAYLOAD_KEY = "stripe_customer_id"
VALUE_PAYLOAD_KEY = "value"


@dataclasses.dataclass
class SyncResult:
    """Counts of Stripe objects created, updated or left as they were."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0

    def add(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)


def is_metered(plan: Plan) -> bool:
    """Return whether the plan bills usage through a Stripe meter."""
    return plan.billing_model in METERED_MODELS


def meter_event_name(plan: Plan) -> str:
    """Return the plan's meter event name: the stored one, or a new one from its id."""
    return plan.stripe_meter_event_name or f"agentmargin_plan_{plan.pk}"


def plans_sync(*, client: stripe.StripeClient | None = None) -> SyncResult:
    """Create or update the Stripe objects of every plan, in plan id order."""
    client = client or stripe_client()
    result = SyncResult()
    for plan in Plan.objects.order_by("pk"):
        plan_sync(plan, client=client, result=result)
    return result


def plan_sync(
    plan: Plan, *, client: stripe.StripeClient, result: SyncResult | None = None
) -> SyncResult:
    """Create or update the plan's Product, Prices and Meter, storing their ids."""
    result = result if result is not None else SyncResult()
    _sync_product(client, plan, result)
    flat = flat_price_params(plan)
    if flat is not None:
        plan.stripe_price_id = _sync_price(
            client, plan, plan.stripe_price_id, flat, "monthly", result
        )
    if is_metered(plan):
        _sync_meter(client, plan, result)
        plan.stripe_metered_price_id = _sync_price(
            client,
            plan,
            plan.stripe_metered_price_id,
            metered_price_params(plan),
            "usage",
            result,
        )
    plan.save(
        update_fields=[
            "stripe_product_id",
            "stripe_price_id",
            "stripe_meter_id",
            "stripe_meter_event_name",
            "stripe_metered_price_id",
        ]
    )
    logger.info(
        "Plan %s: synced to Stripe product %s", plan.slug, plan.stripe_product_id
    )
    return result


def flat_price_params(plan: Plan) -> dict | None:
    """Return the monthly price's parameters, or None for usage-based plans.

    A success-fee plan gets a monthly price of 0, so its subscription has
    an item to invoice the fees with.
    """
    if plan.billing_model == Plan.BillingModel.USAGE:
        return None
    amount = plan.monthly_price or Decimal(0)
    return {
        "currency": plan.currency,
        "unit_amount": to_minor_units(amount, plan.currency),
        "recurring": {"interval": "month"},
    }


def metered_price_params(plan: Plan) -> dict:
    """Return the usage price's parameters, without the product and the meter.

    Hybrid plans charge graduated tiers: the included executions at 0,
    then the overage price or tiers. Per-execution plans charge each
    unit. Cost-plus meter events carry our token cost in cents, so the
    price of one unit is the markup in cents.
    """
    recurring = {"interval": "month", "usage_type": "metered"}
    if plan.billing_model == Plan.BillingModel.HYBRID:
        return {
            "currency": plan.currency,
            "recurring": recurring,
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": _hybrid_tiers(plan),
        }
    if plan.usage_pricing == Plan.UsagePricing.COST_PLUS:
        # NOTE: our token cost is in USD, so this is right for usd plans only.
        unit = plain_decimal(plan.cost_markup)
    else:
        unit = to_minor_decimal(plan.price_per_execution, plan.currency)
    return {
        "currency": plan.currency,
        "recurring": recurring,
        "billing_scheme": "per_unit",
        "unit_amount_decimal": unit,
    }


def _hybrid_tiers(plan: Plan) -> list[dict]:
    included = plan.included_executions or 0
    tiers = []
    if included:
        tiers.append({"up_to": included, "unit_amount": 0})
    if plan.overage_tiers:
        for tier in plan_rules.parse_tiers(plan.overage_tiers):
            up_to = "inf" if tier.up_to is None else included + tier.up_to
            price = to_minor_decimal(tier.unit_price, plan.currency)
            tiers.append({"up_to": up_to, "unit_amount_decimal": price})
    else:
        price = to_minor_decimal(plan.overage_price, plan.currency)
        tiers.append({"up_to": "inf", "unit_amount_decimal": price})
    return tiers


def _spec_digest(params: dict) -> str:
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _sync_product(client: stripe.StripeClient, plan: Plan, result: SyncResult) -> None:
    params = {
        "name": plan.name,
        "active": plan.is_active,
        "metadata": {
            "agentmargin_plan_id": str(plan.pk),
            "agentmargin_plan": plan.slug,
        },
    }
    if not plan.stripe_product_id:
        product = call_with_retries(
            lambda: client.v1.products.create(
                params, {"idempotency_key": f"agentmargin-plan-{plan.pk}-product"}
            ),
            description=f"Plan {plan.slug}: create product",
        )
        plan.stripe_product_id = product.id
        result.add("created")
        return
    product = call_with_retries(
        lambda: client.v1.products.retrieve(plan.stripe_product_id),
        description=f"Plan {plan.slug}: retrieve product",
    )
    if product.name == plan.name and product.active == plan.is_active:
        result.add("unchanged")
        return
    call_with_retries(
        lambda: client.v1.products.update(
            plan.stripe_product_id, {"name": plan.name, "active": plan.is_active}
        ),
        description=f"Plan {plan.slug}: update product",
    )
    result.add("updated")


def _sync_meter(client: stripe.StripeClient, plan: Plan, result: SyncResult) -> None:
    plan.stripe_meter_event_name = meter_event_name(plan)
    if plan.stripe_meter_id:
        # A meter's event name and aggregation never change in Stripe.
        result.add("unchanged")
        return
    params = {
        "display_name": f"{plan.name}: {_meter_unit(plan)}",
        "event_name": plan.stripe_meter_event_name,
        "default_aggregation": {"formula": "sum"},
        "customer_mapping": {
            "type": "by_id",
            "event_payload_key": CUSTOMER_PAYLOAD_KEY,
        },
        "value_settings": {"event_payload_key": VALUE_PAYLOAD_KEY},
    }
    meter = call_with_retries(
        lambda: client.v1.billing.meters.create(
            params, {"idempotency_key": f"agentmargin-plan-{plan.pk}-meter"}
        ),
        description=f"Plan {plan.slug}: create meter",
    )
    plan.stripe_meter_id = meter.id
    result.add("created")


def _meter_unit(plan: Plan) -> str:
    if plan.usage_pricing == Plan.UsagePricing.COST_PLUS:
        return "token cost in cents"
    return "succeeded executions"


def _sync_price(
    client: stripe.StripeClient,
    plan: Plan,
    price_id: str,
    params: dict,
    role: str,
    result: SyncResult,
) -> str:
    """Return the id of a Stripe price that matches `params`, creating one if needed.

    The parameters' digest is stored in the price's metadata, so a stored
    price matches when its digest does and it is still active.
    """
    params = dict(params, product=plan.stripe_product_id)
    if role == "usage":
        params["recurring"] = dict(params["recurring"], meter=plan.stripe_meter_id)
    digest = _spec_digest(params)
    if price_id:
        price = call_with_retries(
            lambda: client.v1.prices.retrieve(price_id),
            description=f"Plan {plan.slug}: retrieve {role} price",
        )
        metadata = price.metadata.to_dict() if price.metadata else {}
        if price.active and metadata.get("agentmargin_spec") == digest:
            result.add("unchanged")
            return price_id
    create_params = dict(
        params,
        lookup_key=f"agentmargin_plan_{plan.pk}_{role}",
        transfer_lookup_key=True,
        metadata={"agentmargin_plan_id": str(plan.pk), "agentmargin_spec": digest},
    )
    price = call_with_retries(
        lambda: client.v1.prices.create(
            create_params,
            {"idempotency_key": f"agentmargin-plan-{plan.pk}-{role}-{digest}"},
        ),
        description=f"Plan {plan.slug}: create {role} price",
    )
    if price_id:
        call_with_retries(
            lambda: client.v1.prices.update(price_id, {"active": False}),
            description=f"Plan {plan.slug}: archive {role} price {price_id}",
        )
        logger.info(
            "Plan %s: replaced %s price %s with %s", plan.slug, role, price_id, price.id
        )
        result.add("updated")
    else:
        result.add("created")
    return price.id
