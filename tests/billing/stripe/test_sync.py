from decimal import Decimal

import pytest
from django.core.management import call_command

from billing.models import Plan
from billing.stripe import sync
from billing.stripe.client import stripe_client
from tests.billing.stripe.conftest import make_plan

pytestmark = pytest.mark.django_db

CREATE_PATHS = ("/v1/products", "/v1/prices", "/v1/billing/meters")


def creates(fake) -> list:
    return [
        request
        for request in fake.requests
        if request.method == "POST" and request.path in CREATE_PATHS
    ]


@pytest.fixture
def every_kind_of_plan(hybrid_plan, cost_plus_plan):
    make_plan("basic", "subscription", monthly_price=Decimal("19.00"))
    make_plan(
        "metered",
        "usage",
        usage_pricing="per_execution",
        price_per_execution=Decimal("0.25"),
    )
    make_plan(
        "fixed-fee",
        "success_fee",
        success_fee_kind="fixed_fee",
        fee_per_success=Decimal("3"),
    )


def test_sync_twice_creates_nothing_new(stripe_backend, every_kind_of_plan):
    first = sync.plans_sync()
    ids = list(
        Plan.objects.order_by("pk").values_list(
            "stripe_product_id",
            "stripe_price_id",
            "stripe_meter_id",
            "stripe_metered_price_id",
        )
    )
    stored = {
        kind: len(stripe_backend.store[kind])
        for kind in ("product", "price", "billing.meter")
    }
    creates_before = len(creates(stripe_backend))

    second = sync.plans_sync()

    # 5 products, 3 monthly prices, 3 meters and 3 usage prices.
    assert first.created == 14
    assert second.created == 0
    assert second.updated == 0
    assert len(creates(stripe_backend)) == creates_before
    assert stored == {"product": 5, "price": 6, "billing.meter": 3}
    assert {
        kind: len(stripe_backend.store[kind])
        for kind in ("product", "price", "billing.meter")
    } == stored
    assert (
        list(
            Plan.objects.order_by("pk").values_list(
                "stripe_product_id",
                "stripe_price_id",
                "stripe_meter_id",
                "stripe_metered_price_id",
            )
        )
        == ids
    )


def test_hybrid_usage_price_has_graduated_tiers(stripe_backend, hybrid_plan):
    sync.plans_sync()
    hybrid_plan.refresh_from_db()

    price = stripe_backend.store["price"][hybrid_plan.stripe_metered_price_id]
    meter = stripe_backend.store["billing.meter"][hybrid_plan.stripe_meter_id]
    flat = stripe_backend.store["price"][hybrid_plan.stripe_price_id]

    assert flat["unit_amount"] == 4900
    assert price["billing_scheme"] == "tiered"
    assert price["tiers_mode"] == "graduated"
    assert price["recurring"]["meter"] == hybrid_plan.stripe_meter_id
    assert price["recurring"]["usage_type"] == "metered"
    assert [tier["up_to"] for tier in price["tiers"]] == [50, None]
    assert price["tiers"][0]["unit_amount"] == 0
    assert Decimal(price["tiers"][1]["unit_amount_decimal"]) == Decimal("50")
    assert meter["event_name"] == hybrid_plan.stripe_meter_event_name
    assert meter["default_aggregation"]["formula"] == "sum"
    assert meter["customer_mapping"]["event_payload_key"] == "stripe_customer_id"


def test_changed_price_replaces_the_old_one(stripe_backend, hybrid_plan):
    sync.plans_sync()
    hybrid_plan.refresh_from_db()
    old_price = hybrid_plan.stripe_price_id
    hybrid_plan.monthly_price = Decimal("59.00")
    hybrid_plan.save()

    result = sync.plans_sync()
    hybrid_plan.refresh_from_db()

    assert result.updated == 1
    assert hybrid_plan.stripe_price_id != old_price
    assert stripe_backend.store["price"][old_price]["active"] is False
    assert (
        stripe_backend.store["price"][hybrid_plan.stripe_price_id]["unit_amount"]
        == 5900
    )
    assert (
        stripe_backend.store["price"][hybrid_plan.stripe_price_id]["lookup_key"]
        == f"agentmargin_plan_{hybrid_plan.pk}_monthly"
    )


def test_cost_plus_price_charges_markup_per_cent(stripe_backend, cost_plus_plan):
    sync.plans_sync()
    cost_plus_plan.refresh_from_db()

    price = stripe_backend.store["price"][cost_plus_plan.stripe_metered_price_id]

    assert cost_plus_plan.stripe_price_id == ""
    assert price["billing_scheme"] == "per_unit"
    assert Decimal(price["unit_amount_decimal"]) == Decimal("1.5")


def test_sync_command_without_stripe_does_nothing(hybrid_plan, capsys):
    call_command("stripe_sync_plans")

    hybrid_plan.refresh_from_db()
    assert "Stripe is off" in capsys.readouterr().out
    assert hybrid_plan.stripe_product_id == ""


def test_sync_command_reports_counts(stripe_backend, hybrid_plan, capsys):
    call_command("stripe_sync_plans")
    call_command("stripe_sync_plans")

    output = capsys.readouterr().out.splitlines()
    assert output[0] == "Stripe objects: 4 created, 0 updated, 0 unchanged."
    assert output[1] == "Stripe objects: 0 created, 0 updated, 4 unchanged."


@pytest.mark.stripe_live
def test_sync_twice_live(stripe_backend, hybrid_plan):
    sync.plans_sync()
    hybrid_plan.refresh_from_db()
    first = (hybrid_plan.stripe_product_id, hybrid_plan.stripe_metered_price_id)

    result = sync.plans_sync()
    hybrid_plan.refresh_from_db()

    assert result.created == 0
    assert (hybrid_plan.stripe_product_id, hybrid_plan.stripe_metered_price_id) == first
    product = stripe_client().v1.products.retrieve(hybrid_plan.stripe_product_id)
    assert product.name == hybrid_plan.name


def test_subscribing_without_stripe_keeps_our_subscription(hybrid_plan):
    from django.utils import timezone

    from billing.stripe.subscriptions import customer_subscribe
    from tests.billing.stripe.conftest import new_customer

    customer = new_customer("acme")

    subscription = customer_subscribe(
        customer=customer, plan=hybrid_plan, start=timezone.now().date()
    )

    assert subscription.pk is not None
    assert subscription.stripe_subscription_id == ""


def test_subscribing_creates_customer_and_both_items(stripe_backend, hybrid_plan):
    from django.utils import timezone

    from billing.stripe.subscriptions import customer_subscribe
    from tests.billing.stripe.conftest import new_customer

    sync.plans_sync()
    hybrid_plan.refresh_from_db()
    customer = new_customer("acme")

    subscription = customer_subscribe(
        customer=customer, plan=hybrid_plan, start=timezone.now().date()
    )

    customer.refresh_from_db()
    remote = stripe_backend.store["subscription"][subscription.stripe_subscription_id]
    prices = {
        item["price"]["id"] if isinstance(item["price"], dict) else item["price"]
        for item in stripe_backend.store["subscription_item"].values()
        if item["subscription"] == subscription.stripe_subscription_id
    }
    create = next(r for r in stripe_backend.requests if r.path == "/v1/subscriptions")
    assert remote["customer"] == customer.stripe_customer_id
    assert prices == {hybrid_plan.stripe_price_id, hybrid_plan.stripe_metered_price_id}
    assert create.idempotency_key == (
        f"agentmargin-subscription-{subscription.pk}-plan-{hybrid_plan.pk}"
    )
    assert subscription.stripe_status == "active"


@pytest.mark.stripe_live
def test_subscribing_live(stripe_backend, hybrid_plan):
    from django.utils import timezone

    from billing.stripe.subscriptions import customer_subscribe
    from tests.billing.stripe.conftest import new_customer

    sync.plans_sync()
    hybrid_plan.refresh_from_db()
    customer = new_customer("acme")

    subscription = customer_subscribe(
        customer=customer, plan=hybrid_plan, start=timezone.now().date()
    )

    remote = stripe_client().v1.subscriptions.retrieve(
        subscription.stripe_subscription_id
    )
    prices = {item.price.id for item in remote["items"].data}
    assert prices == {hybrid_plan.stripe_price_id, hybrid_plan.stripe_metered_price_id}
