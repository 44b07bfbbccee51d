import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import stripe


def test_signed_event_verifies_with_stripe(fake, client, customer):
    client.v1.invoice_items.create(
        {"customer": customer.id, "amount": 100, "currency": "usd"}
    )
    event = fake.events[-1]

    body, header = fake.signed(event)
    verified = stripe.Webhook.construct_event(body, header, fake.webhook_secret)

    assert verified.id == event["id"]
    assert verified.type == "invoiceitem.created"
    assert verified.data.object.amount == 100


def test_signature_verifies_with_client(fake, client, customer):
    client.v1.invoice_items.create(
        {"customer": customer.id, "amount": 100, "currency": "usd"}
    )

    body, header = fake.signed(fake.events[-1])
    event = client.construct_event(body, header, fake.webhook_secret)

    assert event.type == "invoiceitem.created"


def test_wrong_secret_fails_verification(fake):
    body, header = fake.signed({"id": "evt_1", "object": "event"}, secret="whsec_other")

    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, header, fake.webhook_secret)


def test_old_timestamp_fails_verification(fake):
    body, header = fake.signed({"id": "evt_1", "object": "event"}, timestamp=1_000_000)

    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(
            body.decode(), header, fake.webhook_secret, tolerance=300
        )


def test_header_has_stripe_scheme(fake):
    _, header = fake.signed({"id": "evt_1"}, timestamp=1_767_225_600)

    timestamp, signature = header.split(",")
    assert timestamp == "t=1767225600"
    assert signature.startswith("v1=")
    assert len(signature) == len("v1=") + 64


def test_listener_receives_signed_events(fake, client, customer, hybrid_prices):
    received = []
    fake.add_webhook_listener(lambda body, header: received.append((body, header)))
    flat, _ = hybrid_prices

    client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": flat.id}]}
    )

    types = [json.loads(body)["type"] for body, _ in received]
    assert types[0] == "customer.subscription.created"
    assert "invoice.paid" in types
    for body, header in received:
        stripe.Webhook.construct_event(body, header, fake.webhook_secret)


def test_loopback_endpoint_receives_events(fake, client, customer):
    bodies = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers["Content-Length"])
            bodies.append((self.rfile.read(length), self.headers["Stripe-Signature"]))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        fake.add_webhook_endpoint(
            f"http://127.0.0.1:{server.server_address[1]}/stripe/webhook"
        )
        client.v1.invoice_items.create(
            {"customer": customer.id, "amount": 5, "currency": "usd"}
        )
    finally:
        server.shutdown()
        server.server_close()

    body, header = bodies[0]
    assert stripe.Webhook.construct_event(body, header, fake.webhook_secret).type == (
        "invoiceitem.created"
    )
    assert fake.webhook_deliveries[-1]["result"] == 200


def test_endpoint_must_be_loopback(fake, client, customer):
    fake.add_webhook_endpoint("http://example.com/hook")

    client.v1.invoice_items.create(
        {"customer": customer.id, "amount": 5, "currency": "usd"}
    )

    assert "not a loopback address" in fake.webhook_deliveries[-1]["error"]


def test_event_records_request(fake, client, customer):
    client.v1.invoice_items.create(
        {"customer": customer.id, "amount": 5, "currency": "usd"},
        {"idempotency_key": "fee-1"},
    )

    request = fake.events[-1]["request"]
    assert request["idempotency_key"] == "fee-1"
    assert request["id"] == fake.requests[-1].request_id
