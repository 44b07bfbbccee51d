import pytest

from tests.fakestripe import FakeStripe

# 2026-01-01T00:00:00Z
NEW_YEAR = 1_767_225_600


@pytest.fixture
def fake():
    return FakeStripe(now=NEW_YEAR)


@pytest.fixture
def client(fake):
    return fake.client(max_network_retries=0)


@pytest.fixture
def customer(client):
    return client.v1.customers.create({"name": "Acme", "email": "billing@acme.test"})


@pytest.fixture
def meter(client):
    return client.v1.billing.meters.create(
        {
            "display_name": "Executions",
            "event_name": "agent_executions",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {
                "type": "by_id",
                "event_payload_key": "stripe_customer_id",
            },
            "value_settings": {"event_payload_key": "value"},
        }
    )


@pytest.fixture
def hybrid_prices(client, meter):
    """A $49 monthly fee plus a metered price: 50 executions free, then $0.50."""
    product = client.v1.products.create({"name": "Hybrid plan"})
    flat = client.v1.prices.create(
        {
            "currency": "usd",
            "product": product.id,
            "unit_amount": 4900,
            "recurring": {"interval": "month"},
        }
    )
    metered = client.v1.prices.create(
        {
            "currency": "usd",
            "product": product.id,
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": [
                {"up_to": 50, "unit_amount": 0},
                {"up_to": "inf", "unit_amount": 50},
            ],
            "recurring": {
                "interval": "month",
                "usage_type": "metered",
                "meter": meter.id,
            },
        }
    )
    return flat, metered
