"""The same fake over a loopback socket, with stripe-python's own HTTP client."""

import pytest
import stripe

from tests.fakestripe import FakeStripeServer


@pytest.fixture
def server(fake):
    with FakeStripeServer(fake) as running:
        yield running


@pytest.fixture
def socket_client(fake, server):
    return fake.client_for(server, max_network_retries=0)


def test_server_url_is_loopback(server):
    assert server.url.startswith("http://127.0.0.1:")


def test_customer_over_socket(socket_client, fake):
    created = socket_client.v1.customers.create({"name": "Acme"})
    fetched = socket_client.v1.customers.retrieve(created.id)

    assert fetched.name == "Acme"
    assert created.last_response.request_id.startswith("req_")
    assert fake.requests[-1].host == "127.0.0.1"


def test_default_http_client_is_real(socket_client):
    http_client = socket_client._requestor._get_http_client()

    assert isinstance(http_client, stripe.RequestsClient)


def test_validation_error_over_socket(socket_client):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        socket_client.v1.customers.create({"nmae": "typo"})

    assert caught.value.user_message == "Received unknown parameter: nmae"


def test_retry_of_500_over_socket(fake, server):
    client = fake.client_for(server, max_network_retries=1)
    fake.inject(method="POST", path="/v1/customers", status=500)

    customer = client.v1.customers.create({"name": "Acme"})

    assert customer.name == "Acme"
    assert [request.status for request in fake.requests] == [500, 200]


def test_dropped_connection_retried(fake, server):
    client = fake.client_for(server, max_network_retries=1)
    fake.inject(method="POST", path="/v1/customers", connection_error=True)

    customer = client.v1.customers.create({"name": "Acme"})

    assert customer.name == "Acme"
    assert len(fake.store["customer"]) == 1


def test_dropped_connection_raises(socket_client, fake):
    fake.inject(path="/v1/customers", connection_error=True)

    with pytest.raises(stripe.APIConnectionError):
        socket_client.v1.customers.create({"name": "Acme"})


def test_urllib_client_over_socket(fake, server):
    client = fake.client_for(
        server, http_client=stripe.UrllibClient(), max_network_retries=0
    )

    customer = client.v1.customers.create({"name": "Acme"})

    assert client.v1.customers.retrieve(customer.id).name == "Acme"


def test_meter_event_stream_over_socket(fake, socket_client, customer, meter):
    session = socket_client.v2.billing.meter_event_session.create()
    stream = fake.client_for(
        server_of(socket_client), api_key=session.authentication_token
    )

    stream.v2.billing.meter_event_stream.create(
        {
            "events": [
                {
                    "event_name": "agent_executions",
                    "identifier": "exec-1",
                    "payload": {"stripe_customer_id": customer.id, "value": "4"},
                }
            ]
        }
    )

    assert fake.meter_events[0]["payload"]["value"] == "4"


def test_expired_session_over_socket(fake, socket_client, customer, meter):
    session = socket_client.v2.billing.meter_event_session.create()
    stream = fake.client_for(
        server_of(socket_client), api_key=session.authentication_token
    )
    fake.advance(16 * 60)

    with pytest.raises(stripe.TemporarySessionExpiredError):
        stream.v2.billing.meter_event_stream.create({"events": []})


class _Address:
    def __init__(self, url):
        self.url = url


def server_of(client):
    return _Address(client._requestor._options.base_addresses["api"])
