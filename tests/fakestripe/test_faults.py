import pytest
import stripe


def test_injected_500_without_retries(client, fake):
    fake.inject(method="POST", path="/v1/customers", status=500)

    with pytest.raises(stripe.APIError) as caught:
        client.v1.customers.create({"name": "Acme"})

    assert caught.value.http_status == 500
    assert fake.store["customer"] == {}
    assert fake.requests[-1].injected is True


def test_client_retries_500_itself(fake):
    client = fake.client(max_network_retries=2)
    fake.inject(method="POST", path="/v1/customers", status=500, times=2)

    customer = client.v1.customers.create({"name": "Acme"})

    keys = {request.idempotency_key for request in fake.requests}
    assert customer.name == "Acme"
    assert [request.status for request in fake.requests] == [500, 500, 200]
    assert len(keys) == 1
    assert len(fake.retry_sleeps) == 2


def test_retries_exhausted_raise_api_error(fake):
    client = fake.client(max_network_retries=1)
    fake.inject(path="/v1/customers", status=503, times=5)

    with pytest.raises(stripe.APIError):
        client.v1.customers.create({"name": "Acme"})

    assert len(fake.requests) == 2


def test_429_not_retried_by_client(fake):
    client = fake.client(max_network_retries=2)
    fake.inject(method="POST", path="/v1/billing/meter_events", status=429)

    with pytest.raises(stripe.RateLimitError) as caught:
        client.v1.billing.meter_events.create(
            {
                "event_name": "x",
                "payload": {"stripe_customer_id": "cus_x", "value": "1"},
            }
        )

    assert caught.value.http_status == 429
    assert caught.value.json_body["error"]["code"] == "rate_limit"
    assert len(fake.requests) == 1


def test_v2_429_is_rate_limit_error(client, fake, customer, meter):
    fake.inject(method="POST", path="/v2/billing/meter_events", status=429)

    with pytest.raises(stripe.RateLimitError):
        client.v2.billing.meter_events.create(
            {
                "event_name": "agent_executions",
                "payload": {"stripe_customer_id": customer.id, "value": "1"},
            }
        )

    assert fake.meter_events == []


def test_connection_error_without_retries(client, fake):
    fake.inject(path="/v1/customers", connection_error=True)

    with pytest.raises(stripe.APIConnectionError):
        client.v1.customers.create({"name": "Acme"})

    assert fake.requests[-1].status is None


def test_client_retries_connection_error(fake):
    client = fake.client(max_network_retries=1)
    fake.inject(path="/v1/customers", connection_error=True)

    customer = client.v1.customers.create({"name": "Acme"})

    assert customer.name == "Acme"
    assert len(fake.requests) == 2


def test_lost_response_replayed_by_key(fake):
    """Stripe created the customer but the response was lost, so the retry replays it."""
    client = fake.client(max_network_retries=1)
    fake.inject(path="/v1/customers", status=500, after=True)

    customer = client.v1.customers.create({"name": "Acme"})

    assert list(fake.store["customer"]) == [customer.id]
    assert fake.requests[-1].replayed is True


def test_path_prefix_matches(client, fake, customer):
    fake.inject(path="/v1/customers/", status=500, times=1)

    with pytest.raises(stripe.APIError):
        client.v1.customers.retrieve(customer.id)
    fetched = client.v1.customers.retrieve(customer.id)

    assert fetched.id == customer.id


def test_injection_needs_status_or_connection_error(fake):
    with pytest.raises(ValueError):
        fake.inject(path="/v1/customers")


def test_injection_picks_requests_by_params(client, fake):
    fake.inject(
        path="/v1/customers",
        status=500,
        when=lambda request: request.params.get("name") == "Globex",
    )

    acme = client.v1.customers.create({"name": "Acme"})
    with pytest.raises(stripe.APIError):
        client.v1.customers.create({"name": "Globex"})

    assert acme.name == "Acme"
    assert [c["name"] for c in fake.store["customer"].values()] == ["Acme"]
