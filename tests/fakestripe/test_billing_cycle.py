import pytest
import stripe

from tests.fakestripe.conftest import NEW_YEAR

FEBRUARY_1 = 1_769_904_000


def subscribe(client, customer, hybrid_prices, **extra):
    flat, metered = hybrid_prices
    params = {
        "customer": customer.id,
        "items": [{"price": flat.id}, {"price": metered.id}],
    }
    params.update(extra)
    return client.v1.subscriptions.create(
        params, {"idempotency_key": f"sub-{customer.id}"}
    )


def record_executions(client, customer, count, prefix="exec"):
    for n in range(count):
        client.v1.billing.meter_events.create(
            {
                "event_name": "agent_executions",
                "identifier": f"{prefix}-{n}",
                "payload": {"stripe_customer_id": customer.id, "value": "1"},
            }
        )


def test_subscription_has_flat_and_metered_items(client, customer, hybrid_prices):
    flat, metered = hybrid_prices

    subscription = subscribe(client, customer, hybrid_prices)

    items = subscription["items"].data
    assert subscription.status == "active"
    assert [item.price.id for item in items] == [flat.id, metered.id]
    assert items[0].quantity == 1
    assert "quantity" not in items[1]
    assert items[0].current_period_start == NEW_YEAR
    assert items[0].current_period_end == FEBRUARY_1


def test_subscription_create_idempotent(client, fake, customer, hybrid_prices):
    first = subscribe(client, customer, hybrid_prices)
    second = subscribe(client, customer, hybrid_prices)

    assert second.id == first.id
    assert len(fake.store["subscription"]) == 1
    assert len(fake.store["subscription_item"]) == 2


def test_first_invoice_bills_flat_fee(client, fake, customer, hybrid_prices):
    subscription = subscribe(client, customer, hybrid_prices, expand=["latest_invoice"])

    invoice = subscription.latest_invoice
    assert invoice.billing_reason == "subscription_create"
    assert invoice.total == 4900
    assert invoice.status == "paid"


def test_metered_item_rejects_quantity(client, customer, hybrid_prices):
    _, metered = hybrid_prices

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscriptions.create(
            {"customer": customer.id, "items": [{"price": metered.id, "quantity": 3}]}
        )

    assert caught.value.param == "items[0][quantity]"


def test_close_period_under_included(client, fake, customer, hybrid_prices):
    subscription = subscribe(client, customer, hybrid_prices)
    fake.advance(3600)
    record_executions(client, customer, 10)

    invoice = fake.close_period(subscription.id)

    assert invoice["total"] == 4900
    assert invoice["amount_paid"] == 4900
    assert invoice["status"] == "paid"
    assert invoice["billing_reason"] == "subscription_cycle"
    assert (invoice["period_start"], invoice["period_end"]) == (NEW_YEAR, FEBRUARY_1)


def test_close_period_with_overage(client, fake, customer, hybrid_prices):
    subscription = subscribe(client, customer, hybrid_prices)
    fake.advance(3600)
    record_executions(client, customer, 100)

    invoice = fake.close_period(subscription.id)

    amounts = [line["amount"] for line in invoice["lines"]["data"]]
    assert invoice["total"] == 7400
    assert amounts == [4900, 2500]
    assert invoice["lines"]["data"][1]["quantity"] == 100


def test_close_period_moves_period_on(client, fake, customer, hybrid_prices):
    subscription = subscribe(client, customer, hybrid_prices)

    fake.close_period(subscription.id)

    renewed = client.v1.subscriptions.retrieve(subscription.id)
    assert fake.now == FEBRUARY_1
    assert renewed["items"].data[0].current_period_start == FEBRUARY_1
    assert renewed["items"].data[0].current_period_end == 1_772_323_200


def test_usage_of_next_period_not_billed(client, fake, customer, hybrid_prices):
    subscription = subscribe(client, customer, hybrid_prices)
    fake.set_time(FEBRUARY_1 + 60)
    record_executions(client, customer, 100)

    invoice = fake.close_period(subscription.id)

    assert invoice["total"] == 4900


def test_volume_tiers(client, fake, customer, meter):
    product = client.v1.products.create({"name": "Volume"})
    price = client.v1.prices.create(
        {
            "currency": "usd",
            "product": product.id,
            "billing_scheme": "tiered",
            "tiers_mode": "volume",
            "tiers": [
                {"up_to": 10, "unit_amount": 100},
                {"up_to": "inf", "unit_amount": 80, "flat_amount": 500},
            ],
            "recurring": {
                "interval": "month",
                "usage_type": "metered",
                "meter": meter.id,
            },
        }
    )
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}]}
    )
    fake.advance(60)
    record_executions(client, customer, 20)

    invoice = fake.close_period(subscription.id)

    assert invoice["total"] == 20 * 80 + 500


def test_pending_invoice_items_on_period_invoice(client, fake, customer, hybrid_prices):
    subscription = subscribe(client, customer, hybrid_prices)
    item = client.v1.invoice_items.create(
        {
            "customer": customer.id,
            "amount": 1234,
            "currency": "usd",
            "description": "Success fees",
            "subscription": subscription.id,
        }
    )

    invoice = fake.close_period(subscription.id)

    assert invoice["total"] == 4900 + 1234
    assert client.v1.invoice_items.retrieve(item.id).invoice == invoice["id"]


def test_failed_payment_marks_past_due(client, fake, customer, hybrid_prices):
    subscription = subscribe(client, customer, hybrid_prices)
    fake.fail_next_payment(customer.id)

    invoice = fake.close_period(subscription.id)

    assert invoice["status"] == "open"
    assert invoice["attempt_count"] == 1
    assert "invoice.payment_failed" in fake.event_types()
    assert client.v1.subscriptions.retrieve(subscription.id).status == "past_due"


def test_paying_failed_invoice_reactivates(client, fake, customer, hybrid_prices):
    subscription = subscribe(client, customer, hybrid_prices)
    fake.fail_next_payment(customer.id)
    invoice = fake.close_period(subscription.id)

    paid = client.v1.invoices.pay(invoice["id"])

    assert paid.status == "paid"
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"


def test_cancel_at_period_end(client, fake, customer, hybrid_prices):
    subscription = subscribe(client, customer, hybrid_prices)
    client.v1.subscriptions.update(subscription.id, {"cancel_at_period_end": True})
    record_executions(client, customer, 60)

    invoice = fake.close_period(subscription.id)

    assert invoice["total"] == 500
    assert fake.store["subscription"][subscription.id]["status"] == "canceled"
    assert fake.event_types()[-5] == "customer.subscription.deleted"


def test_cancel_now_emits_deleted(client, fake, customer, hybrid_prices):
    subscription = subscribe(client, customer, hybrid_prices)

    canceled = client.v1.subscriptions.cancel(subscription.id)

    assert canceled.status == "canceled"
    assert fake.events[-1]["type"] == "customer.subscription.deleted"
    assert fake.events[-1]["data"]["object"]["id"] == subscription.id


def test_update_adds_and_removes_items(client, fake, customer, hybrid_prices, meter):
    subscription = subscribe(client, customer, hybrid_prices)
    flat_item = subscription["items"].data[0]
    product = client.v1.products.create({"name": "Seats"})
    seats = client.v1.prices.create(
        {
            "currency": "usd",
            "product": product.id,
            "unit_amount": 1000,
            "recurring": {"interval": "month"},
        }
    )

    updated = client.v1.subscriptions.update(
        subscription.id,
        {
            "items": [
                {"id": flat_item.id, "deleted": True},
                {"price": seats.id, "quantity": 3},
            ],
            "metadata": {"plan": "seats"},
        },
    )

    updates = [e for e in fake.events if e["type"] == "customer.subscription.updated"]
    assert [item.price.id for item in updated["items"].data][-1] == seats.id
    assert len(updated["items"].data) == 2
    assert updates[-1]["data"]["previous_attributes"]["metadata"] == {}


def upgrade_flat_price(client, fake, subscription, **extra):
    """Swap the $49 fee for $99 exactly halfway through January."""
    flat_item = subscription["items"].data[0]
    product = client.v1.products.create({"name": "Hybrid plus"})
    bigger = client.v1.prices.create(
        {
            "currency": "usd",
            "product": product.id,
            "unit_amount": 9900,
            "recurring": {"interval": "month"},
        }
    )
    fake.set_time(NEW_YEAR + 31 * 86_400 // 2)
    params = {"items": [{"id": flat_item.id, "price": bigger.id}]}
    params.update(extra)
    return client.v1.subscriptions.update(subscription.id, params)


def test_upgrade_creates_prorations(client, fake, customer, hybrid_prices):
    subscription = subscribe(client, customer, hybrid_prices)

    upgrade_flat_price(client, fake, subscription)

    prorations = sorted(i["amount"] for i in fake.store["invoiceitem"].values())
    assert prorations == [-2450, 4950]
    assert all(i["proration"] for i in fake.store["invoiceitem"].values())
    invoice = fake.close_period(subscription.id)
    assert invoice["total"] == 9900 + 4950 - 2450


def test_proration_behavior_none(client, fake, customer, hybrid_prices):
    subscription = subscribe(client, customer, hybrid_prices)

    upgrade_flat_price(client, fake, subscription, proration_behavior="none")

    assert fake.store["invoiceitem"] == {}


def test_always_invoice_bills_prorations_now(client, fake, customer, hybrid_prices):
    subscription = subscribe(client, customer, hybrid_prices)

    updated = upgrade_flat_price(
        client, fake, subscription, proration_behavior="always_invoice"
    )

    invoice = fake.store["invoice"][updated.latest_invoice]
    assert invoice["billing_reason"] == "subscription_update"
    assert invoice["total"] == 2500
    assert invoice["status"] == "paid"


def test_unsupported_parameter_rejected(client, customer, hybrid_prices):
    flat, _ = hybrid_prices

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscriptions.create(
            {
                "customer": customer.id,
                "items": [{"price": flat.id}],
                "trial_period_days": 7,
            }
        )

    assert caught.value.code == "fake_parameter_not_implemented"
    assert caught.value.param == "trial_period_days"


def test_period_on_31st_clamps(client, fake, customer, hybrid_prices):
    fake.set_time(1_769_817_600)  # 2026-01-31T00:00:00Z
    subscription = subscribe(client, customer, hybrid_prices)

    first_end = subscription["items"].data[0].current_period_end
    fake.close_period(subscription.id)
    second_end = fake.store["subscription_item"][subscription["items"].data[0].id][
        "current_period_end"
    ]

    assert first_end == 1_772_236_800  # 2026-02-28
    assert second_end == 1_774_915_200  # 2026-03-31


def test_backdated_subscription_period(client, fake, customer, hybrid_prices):
    fake.set_time(NEW_YEAR + 10 * 86_400)

    subscription = subscribe(
        client, customer, hybrid_prices, backdate_start_date=NEW_YEAR
    )

    item = subscription["items"].data[0]
    assert subscription.start_date == NEW_YEAR
    assert (item.current_period_start, item.current_period_end) == (
        NEW_YEAR,
        FEBRUARY_1,
    )


def test_create_preview_includes_usage_so_far(client, fake, customer, hybrid_prices):
    subscription = subscribe(client, customer, hybrid_prices)
    fake.advance(60)
    record_executions(client, customer, 60)

    preview = client.v1.invoices.create_preview({"subscription": subscription.id})

    assert preview.total == 4900 + 500
    assert preview.id.startswith("upcoming_in_")
    assert preview.id not in fake.store["invoice"]


def test_upcoming_event(fake, client, customer, hybrid_prices):
    subscription = subscribe(client, customer, hybrid_prices)

    event = fake.send_upcoming(subscription.id)

    assert event["type"] == "invoice.upcoming"
    assert event["data"]["object"]["total"] == 4900


def test_event_retrievable_through_api(client, fake, customer, hybrid_prices):
    subscribe(client, customer, hybrid_prices)
    emitted = fake.events[0]

    event = client.v1.events.retrieve(emitted["id"])
    listed = client.v1.events.list({"type": "invoice.*"})

    assert event.type == "customer.subscription.created"
    assert {e.type for e in listed.data} >= {"invoice.created", "invoice.paid"}


def test_renewal_event_order(client, fake, customer, hybrid_prices):
    subscription = subscribe(client, customer, hybrid_prices)
    start = len(fake.events)

    fake.close_period(subscription.id)

    assert fake.event_types()[start:] == [
        "customer.subscription.updated",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
    ]
    assert fake.events[start + 1]["data"]["object"]["status"] == "draft"
    assert fake.events[start + 3]["data"]["object"]["status"] == "paid"


def test_deleting_customer_cancels_subscription(client, fake, customer, hybrid_prices):
    subscription = subscribe(client, customer, hybrid_prices)

    client.v1.customers.delete(customer.id)

    assert fake.store["subscription"][subscription.id]["status"] == "canceled"
    assert fake.events[-1]["type"] == "customer.subscription.deleted"


def test_invoice_lines_listed_in_order(client, fake, customer, hybrid_prices):
    subscription = subscribe(client, customer, hybrid_prices)
    record_executions(client, customer, 60)
    invoice = fake.close_period(subscription.id)

    lines = client.v1.invoices.line_items.list(invoice["id"], {"limit": 1})
    every = [line.amount for line in lines.auto_paging_iter()]

    assert lines.has_more is True
    assert every == [4900, 500]


def test_invoice_list_by_subscription(client, fake, customer, hybrid_prices):
    subscription = subscribe(client, customer, hybrid_prices)
    fake.close_period(subscription.id)

    invoices = client.v1.invoices.list({"subscription": subscription.id})

    reasons = [invoice.billing_reason for invoice in invoices.data]
    assert reasons == ["subscription_cycle", "subscription_create"]


def test_default_incomplete_waits_for_payment(client, fake, customer, hybrid_prices):
    subscription = subscribe(
        client, customer, hybrid_prices, payment_behavior="default_incomplete"
    )
    created = fake.events[0]

    invoice = client.v1.invoices.retrieve(subscription.latest_invoice)
    client.v1.invoices.pay(invoice.id)

    assert subscription.status == "incomplete"
    assert created["data"]["object"]["status"] == "incomplete"
    assert invoice.status == "open"
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"


def test_send_invoice_left_open(client, fake, customer, hybrid_prices):
    subscription = subscribe(
        client,
        customer,
        hybrid_prices,
        collection_method="send_invoice",
        days_until_due=30,
    )

    invoice = fake.close_period(subscription.id)

    assert invoice["status"] == "open"
    assert invoice["due_date"] == FEBRUARY_1 + 30 * 86_400
    assert "invoice.paid" not in fake.event_types()[-3:]
