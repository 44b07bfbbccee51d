import json
import time
from datetime import UTC, date, datetime

import pytest
from django.db import OperationalError
from django.utils import timezone

from billing.models import (
    Alert,
    PeriodStatement,
    StripeInvoice,
    StripeWebhookEvent,
    Subscription,
)
from billing.services import statements_close_ended_periods, subscription_create
from billing.stripe import webhooks
from tests.billing.stripe.conftest import new_customer
from tests.fakestripe.webhooks import sign

pytestmark = pytest.mark.django_db

URL = "/stripe/webhook/"


@pytest.fixture
def signing(fake_stripe, settings):
    """The fake signs events with the secret our endpoint checks."""
    settings.STRIPE_WEBHOOK_SECRET = fake_stripe.webhook_secret
    return fake_stripe


@pytest.fixture
def subscription(db):
    customer = new_customer("acme")
    customer.stripe_customer_id = "cus_acme"
    customer.save()
    subscription = subscription_create(
        customer=customer, plan=_plan(), start=timezone.now().date()
    )
    subscription.stripe_subscription_id = "sub_acme"
    subscription.save()
    return subscription


def _plan():
    from tests.billing.stripe.conftest import make_plan

    return make_plan("basic", "subscription", monthly_price="19.00")


def event(event_id, event_type, obj, created):
    return {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created": created,
        "livemode": False,
        "api_version": "2026-10-28.endive",
        "pending_webhooks": 1,
        "data": {"object": obj},
    }


def subscription_event(event_id, event_type, status, created):
    obj = {
        "id": "sub_acme",
        "object": "subscription",
        "status": status,
        "customer": "cus_acme",
    }
    return event(event_id, event_type, obj, created)


def invoice_event(event_id, event_type, status, created, **fields):
    obj = {
        "id": "in_acme",
        "object": "invoice",
        "customer": "cus_acme",
        "status": status,
        "currency": "usd",
        "total": 4900,
        "amount_due": 4900,
        "amount_paid": 4900 if status == "paid" else 0,
        "amount_remaining": 0 if status == "paid" else 4900,
        "created": created,
        "number": "ACME-0001",
        **fields,
    }
    return event(event_id, event_type, obj, created)


def post(client, body: bytes, header: str):
    return client.post(
        URL, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
    )


def deliver(client, fake, payload, **signing):
    body, header = fake.signed(payload, **signing)
    return post(client, body, header)


# Signatures ---------------------------------------------------------------------


def test_wrong_secret_is_rejected(client, signing, subscription):
    payload = subscription_event(
        "evt_1", "customer.subscription.updated", "past_due", 1
    )

    response = deliver(client, signing, payload, secret="whsec_not_ours")

    assert response.status_code == 400
    assert StripeWebhookEvent.objects.count() == 0
    subscription.refresh_from_db()
    assert subscription.stripe_status == ""


def test_stale_timestamp_is_rejected(client, signing, subscription):
    payload = subscription_event(
        "evt_1", "customer.subscription.updated", "past_due", 1
    )

    response = deliver(client, signing, payload, timestamp=int(time.time()) - 301)

    assert response.status_code == 400
    assert StripeWebhookEvent.objects.count() == 0


def test_tampered_body_is_rejected(client, signing, subscription):
    payload = subscription_event("evt_1", "customer.subscription.updated", "active", 1)
    body, header = signing.signed(payload)
    tampered = body.replace(b'"active"', b'"canceled"')

    response = post(client, tampered, header)

    assert tampered != body
    assert response.status_code == 400
    assert StripeWebhookEvent.objects.count() == 0
    subscription.refresh_from_db()
    assert subscription.status == Subscription.Status.ACTIVE


def test_missing_signature_is_rejected(client, signing):
    body = json.dumps(invoice_event("evt_1", "invoice.paid", "paid", 1)).encode()

    response = client.post(URL, data=body, content_type="application/json")

    assert response.status_code == 400
    assert StripeWebhookEvent.objects.count() == 0


def test_unset_secret_rejects_every_event(client, fake_stripe, settings):
    settings.STRIPE_WEBHOOK_SECRET = ""

    response = deliver(
        client, fake_stripe, invoice_event("evt_1", "invoice.paid", "paid", 1)
    )

    assert response.status_code == 400
    assert StripeWebhookEvent.objects.count() == 0


def test_recent_timestamp_is_accepted(client, signing, subscription):
    payload = subscription_event("evt_1", "customer.subscription.updated", "active", 1)

    response = deliver(client, signing, payload, timestamp=int(time.time()) - 290)

    assert response.status_code == 200


# Duplicates and order -------------------------------------------------------------


def test_duplicate_event_is_processed_once(client, signing, subscription, monkeypatch):
    calls = []
    handler = webhooks.HANDLERS["customer.subscription.updated"]
    monkeypatch.setitem(
        webhooks.HANDLERS,
        "customer.subscription.updated",
        lambda payload, stored: (
            calls.append(stored.event_id) or handler(payload, stored)
        ),
    )
    payload = subscription_event(
        "evt_1", "customer.subscription.updated", "past_due", 1
    )
    body, header = signing.signed(payload)

    first = post(client, body, header)
    second = post(client, body, header)

    stored = StripeWebhookEvent.objects.get()
    assert first.status_code == 200
    assert second.status_code == 200
    assert second.content == b"Duplicate event."
    assert calls == ["evt_1"]
    assert stored.status == StripeWebhookEvent.Status.PROCESSED
    assert stored.payload == payload


def test_out_of_order_subscription_events_keep_latest_status(
    client, signing, subscription
):
    updated = subscription_event(
        "evt_2", "customer.subscription.updated", "active", 1623979266
    )
    created = subscription_event(
        "evt_1", "customer.subscription.created", "incomplete", 1623979265
    )

    assert deliver(client, signing, updated).status_code == 200
    assert deliver(client, signing, created).status_code == 200

    subscription.refresh_from_db()
    assert subscription.stripe_status == "active"
    assert subscription.stripe_event_created == 1623979266
    assert StripeWebhookEvent.objects.filter(status="processed").count() == 2


def test_subscription_deleted_cancels_ours(client, signing, subscription):
    payload = subscription_event(
        "evt_1", "customer.subscription.deleted", "canceled", 5
    )

    deliver(client, signing, payload)

    subscription.refresh_from_db()
    assert subscription.status == Subscription.Status.CANCELED
    assert subscription.stripe_status == "canceled"


def test_invoice_status_never_moves_back(client, signing, subscription):
    paid = invoice_event("evt_2", "invoice.paid", "paid", 200)
    finalized = invoice_event("evt_1", "invoice.finalized", "open", 100)

    deliver(client, signing, paid)
    deliver(client, signing, finalized)

    invoice = StripeInvoice.objects.get(stripe_id="in_acme")
    assert invoice.status == "paid"
    assert invoice.amount_paid == 4900
    assert invoice.customer == subscription.customer


def test_unknown_event_type_is_stored_and_ignored(client, signing):
    payload = event("evt_1", "charge.refunded", {"id": "ch_1", "object": "charge"}, 1)

    response = deliver(client, signing, payload)

    assert response.status_code == 200
    assert StripeWebhookEvent.objects.get().status == StripeWebhookEvent.Status.IGNORED


def test_failed_handler_answers_500_and_retries(
    client, signing, subscription, monkeypatch
):
    handler = webhooks.HANDLERS["customer.subscription.updated"]
    failures = [RuntimeError("handler bug")]

    def fails_once(payload, stored):
        if failures:
            raise failures.pop()
        return handler(payload, stored)

    monkeypatch.setitem(webhooks.HANDLERS, "customer.subscription.updated", fails_once)
    payload = subscription_event(
        "evt_1", "customer.subscription.updated", "past_due", 1
    )
    body, header = signing.signed(payload)

    failed = post(client, body, header)
    stored = StripeWebhookEvent.objects.get()
    retried = post(client, body, header)

    subscription.refresh_from_db()
    assert failed.status_code == 500
    assert stored.status == StripeWebhookEvent.Status.FAILED
    assert "RuntimeError: handler bug" in stored.error
    assert retried.status_code == 200
    assert subscription.stripe_status == "past_due"
    assert subscription.status == Subscription.Status.PAST_DUE


def test_upcoming_invoice_is_logged(client, signing):
    obj = {
        "object": "invoice",
        "customer": "cus_acme",
        "amount_due": 4900,
        "currency": "usd",
    }

    response = deliver(client, signing, event("evt_1", "invoice.upcoming", obj, 1))

    assert response.status_code == 200
    assert (
        StripeWebhookEvent.objects.get().status == StripeWebhookEvent.Status.PROCESSED
    )
    assert StripeInvoice.objects.count() == 0


def test_payment_failed_marks_customer_past_due(client, signing, subscription):
    payload = invoice_event(
        "evt_1", "invoice.payment_failed", "open", 100, amount_paid=0
    )

    deliver(client, signing, payload)

    customer = subscription.customer
    customer.refresh_from_db()
    alert = Alert.objects.get(kind=Alert.Kind.STRIPE_PAYMENT_FAILED)
    assert customer.status == "past_due"
    assert alert.customer_id == customer.pk
    assert alert.severity == Alert.Severity.CRITICAL


def test_paid_invoice_makes_customer_active_again(client, signing, subscription):
    deliver(
        client, signing, invoice_event("evt_1", "invoice.payment_failed", "open", 100)
    )
    deliver(client, signing, invoice_event("evt_2", "invoice.paid", "paid", 200))

    customer = subscription.customer
    customer.refresh_from_db()
    assert customer.status == "active"


def test_same_second_event_refetches_subscription(client, stripe_backend, hybrid_plan):
    from tests.billing.stripe.test_metering import subscribed

    customer = subscribed(hybrid_plan)
    ours = customer.subscriptions.get()
    Subscription.objects.filter(pk=ours.pk).update(stripe_event_created=500)
    stale = subscription_event(
        "evt_1", "customer.subscription.updated", "incomplete", 500
    )
    stale["data"]["object"]["id"] = ours.stripe_subscription_id

    response = deliver(client, stripe_backend, stale)

    ours.refresh_from_db()
    assert response.status_code == 200
    assert ours.stripe_status == "active"
    assert any(
        request.method == "GET"
        and request.path == f"/v1/subscriptions/{ours.stripe_subscription_id}"
        for request in stripe_backend.requests
    )


# Cancellation by Stripe ---------------------------------------------------------


def _utc_seconds(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp())


@pytest.fixture
def february_subscription(db):
    customer = new_customer("initech")
    subscription = subscription_create(
        customer=customer, plan=_plan(), start=date(2025, 2, 1)
    )
    subscription.stripe_subscription_id = "sub_initech"
    subscription.save()
    return subscription


def deleted_event(event_id, created, **times):
    obj = {"id": "sub_initech", "object": "subscription", "status": "canceled", **times}
    return event(event_id, "customer.subscription.deleted", obj, created)


def test_deleted_sets_ended_on_from_ended_at(client, signing, february_subscription):
    ended_at = _utc_seconds(2025, 3, 15, 23, 30)
    canceled_at = _utc_seconds(2025, 3, 10, 9, 0)
    payload = deleted_event(
        "evt_1", ended_at + 5, ended_at=ended_at, canceled_at=canceled_at
    )

    response = deliver(client, signing, payload)

    february_subscription.refresh_from_db()
    assert response.status_code == 200
    assert february_subscription.status == Subscription.Status.CANCELED
    assert february_subscription.ended_on == date(2025, 3, 15)


def test_deleted_closes_last_periods(client, signing, february_subscription):
    ended_at = _utc_seconds(2025, 3, 15, 12, 0)
    deliver(client, signing, deleted_event("evt_1", ended_at, ended_at=ended_at))

    closed = statements_close_ended_periods(today=date(2025, 4, 2))

    starts = sorted(
        PeriodStatement.objects.filter(
            customer=february_subscription.customer
        ).values_list("period_start", flat=True)
    )
    assert closed == 2
    assert starts == [date(2025, 2, 1), date(2025, 3, 1)]


def test_deleted_falls_back_to_canceled_at(client, signing, february_subscription):
    canceled_at = _utc_seconds(2025, 3, 10, 0, 0, 1)
    payload = deleted_event(
        "evt_1", canceled_at, ended_at=None, canceled_at=canceled_at
    )

    deliver(client, signing, payload)

    february_subscription.refresh_from_db()
    assert february_subscription.ended_on == date(2025, 3, 10)


def test_deleted_falls_back_to_event_time(client, signing, february_subscription):
    created = _utc_seconds(2025, 3, 20, 8, 0)

    deliver(client, signing, deleted_event("evt_1", created))

    february_subscription.refresh_from_db()
    assert february_subscription.ended_on == date(2025, 3, 20)


def test_deleted_keeps_earlier_ended_on(client, signing, february_subscription):
    Subscription.objects.filter(pk=february_subscription.pk).update(
        ended_on=date(2025, 3, 1)
    )
    ended_at = _utc_seconds(2025, 3, 25, 12, 0)

    deliver(client, signing, deleted_event("evt_1", ended_at, ended_at=ended_at))

    february_subscription.refresh_from_db()
    assert february_subscription.status == Subscription.Status.CANCELED
    assert february_subscription.ended_on == date(2025, 3, 1)


def test_deleted_never_ends_before_start(client, signing, february_subscription):
    ended_at = _utc_seconds(2025, 1, 20, 12, 0)

    deliver(client, signing, deleted_event("evt_1", ended_at, ended_at=ended_at))

    february_subscription.refresh_from_db()
    assert february_subscription.ended_on == date(2025, 2, 1)


# Payment failures out of order ------------------------------------------------------


def test_older_payment_failure_after_paid(client, signing, subscription):
    paid = invoice_event("evt_paid", "invoice.paid", "paid", 2000000000)
    failed = invoice_event(
        "evt_failed", "invoice.payment_failed", "open", 1000000000, amount_paid=0
    )

    first = deliver(client, signing, paid)
    second = deliver(client, signing, failed)

    customer = subscription.customer
    customer.refresh_from_db()
    invoice = StripeInvoice.objects.get(stripe_id="in_acme")
    assert first.status_code == 200
    assert second.status_code == 200
    assert customer.status == "active"
    assert invoice.status == "paid"
    assert not Alert.objects.filter(kind=Alert.Kind.STRIPE_PAYMENT_FAILED).exists()
    assert StripeWebhookEvent.objects.get(event_id="evt_failed").status == "processed"


def test_payment_failure_then_later_paid(client, signing, subscription):
    failed = invoice_event(
        "evt_failed", "invoice.payment_failed", "open", 1000000000, amount_paid=0
    )
    paid = invoice_event("evt_paid", "invoice.paid", "paid", 2000000000)
    customer = subscription.customer

    deliver(client, signing, failed)
    customer.refresh_from_db()
    status_after_failure = customer.status
    deliver(client, signing, paid)
    customer.refresh_from_db()

    assert status_after_failure == "past_due"
    assert Alert.objects.filter(kind=Alert.Kind.STRIPE_PAYMENT_FAILED).count() == 1
    assert customer.status == "active"


def test_same_second_failure_after_paid(client, signing, subscription):
    paid = invoice_event("evt_paid", "invoice.paid", "paid", 1500000000)
    failed = invoice_event(
        "evt_failed", "invoice.payment_failed", "open", 1500000000, amount_paid=0
    )

    deliver(client, signing, paid)
    deliver(client, signing, failed)

    customer = subscription.customer
    customer.refresh_from_db()
    assert customer.status == "active"
    assert not Alert.objects.filter(kind=Alert.Kind.STRIPE_PAYMENT_FAILED).exists()


# Malformed events ---------------------------------------------------------------


def _assert_stored_as_failed(response, event_id, reason):
    stored = StripeWebhookEvent.objects.get(event_id=event_id)
    alert = Alert.objects.get(dedupe_key=f"stripe_webhook_failed:{event_id}")
    assert response.status_code == 200
    assert response.content.startswith(b"Malformed event")
    assert stored.status == StripeWebhookEvent.Status.FAILED
    assert stored.error.startswith("Malformed event: ")
    assert reason in stored.error
    assert alert.severity == Alert.Severity.CRITICAL
    assert event_id in alert.message
    return stored


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda p: p.update(created="abc"), "created is 'abc'"),
        (lambda p: p.update(created=True), "created is True"),
        (lambda p: p.update(type=["customer.subscription.updated"]), "type is missing"),
        (lambda p: p.update(data=[]), "data.object is missing"),
        (lambda p: p.pop("data"), "data.object is missing"),
        (lambda p: p["data"].update(object="sub_acme"), "data.object is missing"),
        (lambda p: p["data"]["object"].pop("id"), "data.object.id is None"),
        (lambda p: p["data"]["object"].update(status=3), "data.object.status is 3"),
        (
            lambda p: p["data"]["object"].update(
                id="sub_unknown", metadata={"agentmargin_subscription_id": 7}
            ),
            "agentmargin_subscription_id is 7",
        ),
        (
            lambda p: p["data"]["object"].update(id="sub_unknown", metadata="7"),
            "metadata is '7'",
        ),
    ],
)
def test_malformed_subscription_event_stored_failed(
    client, signing, subscription, change, reason
):
    payload = subscription_event(
        "evt_bad", "customer.subscription.updated", "past_due", 100
    )
    change(payload)

    response = deliver(client, signing, payload)

    _assert_stored_as_failed(response, "evt_bad", reason)
    subscription.refresh_from_db()
    assert subscription.stripe_status == ""
    assert subscription.status == Subscription.Status.ACTIVE


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"id": None}, "data.object.id is None"),
        ({"total": "4900"}, "data.object.total is '4900'"),
        ({"period_start": 1.5}, "data.object.period_start is 1.5"),
        ({"customer": ["cus_acme"]}, "data.object.customer is ['cus_acme']"),
        ({"parent": {"subscription_details": "sub_acme"}}, "subscription_details"),
    ],
)
def test_malformed_invoice_event_stored_failed(
    client, signing, subscription, fields, reason
):
    payload = invoice_event("evt_bad", "invoice.payment_failed", "open", 100, **fields)

    response = deliver(client, signing, payload)

    _assert_stored_as_failed(response, "evt_bad", reason)
    subscription.customer.refresh_from_db()
    assert subscription.customer.status == "active"
    assert StripeInvoice.objects.count() == 0
    assert not Alert.objects.filter(kind=Alert.Kind.STRIPE_PAYMENT_FAILED).exists()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
        (b'["evt_1"]', "not a JSON object"),
        (b'{"type": "invoice.paid"}', "id is None"),
        (b'{"id": 12, "type": "invoice.paid"}', "id is 12"),
        (json.dumps({"id": "evt_" + "x" * 70}).encode(), "at most 64 characters"),
    ],
)
def test_unreadable_body_stored_failed(client, signing, body, reason):
    header = sign(body, signing.webhook_secret, int(time.time()))

    response = post(client, body, header)
    again = post(client, body, header)

    stored = StripeWebhookEvent.objects.get()
    assert stored.event_id.startswith("malformed_")
    _assert_stored_as_failed(response, stored.event_id, reason)
    assert again.status_code == 200
    assert Alert.objects.count() == 1


def test_nul_character_stored_failed(client, signing):
    payload = event("evt_nul", "invoice.paid", {"id": "in_1", "number": "A\x00B"}, 1)

    response = deliver(client, signing, payload)

    stored = _assert_stored_as_failed(response, "evt_nul", "database rejected")
    assert "\x00" not in stored.payload["unreadable_body"]


def test_malformed_event_delivered_twice_alerts_once(client, signing, subscription):
    payload = subscription_event(
        "evt_bad", "customer.subscription.updated", "past_due", 100
    )
    payload["created"] = "abc"
    body, header = signing.signed(payload)

    first = post(client, body, header)
    second = post(client, body, header)

    assert first.status_code == 200
    assert second.status_code == 200
    assert StripeWebhookEvent.objects.get().status == StripeWebhookEvent.Status.FAILED
    assert Alert.objects.count() == 1


def test_database_error_answers_500_and_retries(
    client, signing, subscription, monkeypatch
):
    handler = webhooks.HANDLERS["customer.subscription.updated"]
    failures = [OperationalError("server closed the connection unexpectedly")]

    def fails_once(payload, stored):
        if failures:
            raise failures.pop()
        return handler(payload, stored)

    monkeypatch.setitem(webhooks.HANDLERS, "customer.subscription.updated", fails_once)
    payload = subscription_event(
        "evt_1", "customer.subscription.updated", "past_due", 1
    )
    body, header = signing.signed(payload)

    failed = post(client, body, header)
    stored = StripeWebhookEvent.objects.get()
    retried = post(client, body, header)

    subscription.refresh_from_db()
    assert failed.status_code == 500
    assert stored.status == StripeWebhookEvent.Status.FAILED
    assert "OperationalError" in stored.error
    assert not stored.error.startswith("Malformed event")
    assert not Alert.objects.exists()
    assert retried.status_code == 200
    assert subscription.status == Subscription.Status.PAST_DUE
