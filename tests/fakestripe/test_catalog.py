import pytest
import stripe


def test_customer_create_and_retrieve(client, fake):
    created = client.v1.customers.create(
        {
            "name": "Acme",
            "email": "billing@acme.test",
            "metadata": {"agentmargin_id": "7"},
        }
    )

    fetched = client.v1.customers.retrieve(created.id)

    assert created.id.startswith("cus_")
    assert fetched.id == created.id
    assert fetched.email == "billing@acme.test"
    assert fetched.metadata.to_dict() == {"agentmargin_id": "7"}
    assert fake.store["customer"][created.id]["name"] == "Acme"


def test_customer_update_merges_metadata(client):
    customer = client.v1.customers.create({"metadata": {"a": "1", "b": "2"}})

    updated = client.v1.customers.update(customer.id, {"metadata": {"a": "", "c": "3"}})

    assert updated.metadata.to_dict() == {"b": "2", "c": "3"}


def test_missing_customer_is_404(client):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.retrieve("cus_missing")

    assert caught.value.http_status == 404
    assert caught.value.code == "resource_missing"
    assert "No such customer: 'cus_missing'" in caught.value.user_message


def test_unknown_parameter_rejected(client, fake):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.create({"nmae": "typo"})

    assert caught.value.http_status == 400
    assert caught.value.user_message == "Received unknown parameter: nmae"
    assert caught.value.param == "nmae"
    assert fake.store["customer"] == {}


def test_unknown_nested_parameter_rejected(client):
    product = client.v1.products.create({"name": "Plan"})

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.prices.create(
            {
                "currency": "usd",
                "product": product.id,
                "unit_amount": 100,
                "recurring": {"interval": "month", "aggregate_usage": "sum"},
            }
        )

    assert caught.value.param == "recurring[aggregate_usage]"


def test_missing_required_parameter_rejected(client):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.prices.create({"unit_amount": 100, "product": "prod_x"})

    assert caught.value.code == "parameter_missing"
    assert caught.value.param == "currency"


def test_invalid_enum_value_rejected(client):
    product = client.v1.products.create({"name": "Plan"})

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.prices.create(
            {
                "currency": "usd",
                "product": product.id,
                "unit_amount": 100,
                "recurring": {"interval": "fortnight"},
            }
        )

    assert caught.value.param == "recurring[interval]"


def test_metered_price_needs_meter(client):
    product = client.v1.products.create({"name": "Plan"})

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.prices.create(
            {
                "currency": "usd",
                "product": product.id,
                "unit_amount": 50,
                "recurring": {"interval": "month", "usage_type": "metered"},
            }
        )

    assert caught.value.param == "recurring[meter]"


def test_metered_price_with_unknown_meter(client):
    product = client.v1.products.create({"name": "Plan"})

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.prices.create(
            {
                "currency": "usd",
                "product": product.id,
                "unit_amount": 50,
                "recurring": {
                    "interval": "month",
                    "usage_type": "metered",
                    "meter": "mtr_x",
                },
            }
        )

    assert caught.value.http_status == 404
    assert caught.value.param == "recurring[meter]"


def test_tiers_need_tiered_billing_scheme(client):
    product = client.v1.products.create({"name": "Plan"})

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.prices.create(
            {
                "currency": "usd",
                "product": product.id,
                "tiers_mode": "graduated",
                "tiers": [{"up_to": "inf", "unit_amount": 50}],
                "recurring": {"interval": "month"},
            }
        )

    assert caught.value.param == "billing_scheme"


def test_last_tier_must_be_inf(client):
    product = client.v1.products.create({"name": "Plan"})

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.prices.create(
            {
                "currency": "usd",
                "product": product.id,
                "billing_scheme": "tiered",
                "tiers_mode": "graduated",
                "tiers": [
                    {"up_to": 50, "unit_amount": 0},
                    {"up_to": 100, "unit_amount": 50},
                ],
                "recurring": {"interval": "month"},
            }
        )

    assert caught.value.param == "tiers[1][up_to]"


def test_tiers_only_sent_when_expanded(client, hybrid_prices):
    _, metered = hybrid_prices

    plain = client.v1.prices.retrieve(metered.id)
    expanded = client.v1.prices.retrieve(metered.id, {"expand": ["tiers"]})

    assert "tiers" not in plain
    assert [tier.up_to for tier in expanded.tiers] == [50, None]
    assert expanded.tiers[1].unit_amount == 50
    assert expanded.recurring.meter == metered.recurring.meter


def test_price_list_by_lookup_key(client):
    product = client.v1.products.create({"name": "Plan"})
    client.v1.prices.create(
        {
            "currency": "usd",
            "product": product.id,
            "unit_amount": 100,
            "lookup_key": "basic",
        }
    )
    wanted = client.v1.prices.create(
        {
            "currency": "usd",
            "product": product.id,
            "unit_amount": 200,
            "lookup_key": "pro",
        }
    )

    found = client.v1.prices.list({"lookup_keys": ["pro"]})

    assert [price.id for price in found.data] == [wanted.id]


def test_lookup_key_taken_without_transfer(client):
    product = client.v1.products.create({"name": "Plan"})
    params = {
        "currency": "usd",
        "product": product.id,
        "unit_amount": 100,
        "lookup_key": "k",
    }
    first = client.v1.prices.create(params)

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.prices.create(dict(params, unit_amount=150))
    moved = client.v1.prices.create(
        dict(params, unit_amount=150, transfer_lookup_key=True)
    )

    assert caught.value.param == "lookup_key"
    assert client.v1.prices.retrieve(first.id).lookup_key is None
    assert moved.lookup_key == "k"


def test_unit_amount_decimal_round_trip(client):
    product = client.v1.products.create({"name": "Plan"})

    price = client.v1.prices.create(
        {"currency": "usd", "product": product.id, "unit_amount_decimal": "0.5"}
    )

    assert str(price.unit_amount_decimal) == "0.5"
    assert price.unit_amount is None


def test_product_search_by_metadata(client):
    client.v1.products.create({"name": "Basic", "metadata": {"plan_id": "1"}})
    wanted = client.v1.products.create({"name": "Pro", "metadata": {"plan_id": "2"}})

    found = client.v1.products.search({"query": "metadata['plan_id']:'2'"})

    assert [product.id for product in found.data] == [wanted.id]


def test_product_with_custom_id(client):
    product = client.v1.products.create({"id": "plan_hybrid", "name": "Hybrid"})

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.products.create({"id": "plan_hybrid", "name": "Again"})

    assert product.id == "plan_hybrid"
    assert caught.value.code == "resource_already_exists"


def test_list_pages_with_auto_paging(client):
    created = [client.v1.customers.create({"name": f"c{n}"}).id for n in range(25)]

    page = client.v1.customers.list({"limit": 10})
    every = [customer.id for customer in page.auto_paging_iter()]

    assert page.has_more is True
    assert len(page.data) == 10
    assert every == list(reversed(created))


def test_idempotent_replay_returns_same_object(client, fake):
    params = {"name": "Acme"}

    first = client.v1.customers.create(params, {"idempotency_key": "customer-7"})
    second = client.v1.customers.create(params, {"idempotency_key": "customer-7"})

    assert second.id == first.id
    assert len(fake.store["customer"]) == 1
    assert second.last_response.headers["Idempotent-Replayed"] == "true"
    assert fake.requests[-1].replayed is True


def test_idempotency_key_with_other_params(client):
    client.v1.customers.create({"name": "Acme"}, {"idempotency_key": "customer-7"})

    with pytest.raises(stripe.IdempotencyError) as caught:
        client.v1.customers.create(
            {"name": "Globex"}, {"idempotency_key": "customer-7"}
        )

    assert caught.value.http_status == 400
    assert "customer-7" in caught.value.user_message


def test_validation_error_not_stored_for_key(client):
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.create({"nmae": "typo"}, {"idempotency_key": "k1"})

    customer = client.v1.customers.create({"name": "fixed"}, {"idempotency_key": "k1"})

    assert customer.name == "fixed"


def test_wrong_api_key_rejected(fake):
    other = fake.client(api_key="sk_test_someone_else", max_network_retries=0)

    with pytest.raises(stripe.AuthenticationError) as caught:
        other.v1.customers.list()

    assert caught.value.http_status == 401


def test_request_id_header_and_record(client, fake):
    customer = client.v1.customers.create({"name": "Acme"})

    recorded = fake.requests[-1]

    assert customer.last_response.request_id.startswith("req_")
    assert recorded.method == "POST"
    assert recorded.path == "/v1/customers"
    assert recorded.params == {"name": "Acme"}
    assert recorded.status == 200
    assert recorded.idempotency_key


def test_unrecognized_url_is_404(client):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.raw_request("get", "/v1/not_a_resource")

    assert caught.value.http_status == 404


def test_customer_fields_copied(client):
    customer = client.v1.customers.create(
        {"name": "Acme", "phone": "+1 555 0100", "address": {"country": "US"}}
    )

    assert customer.phone == "+1 555 0100"
    assert customer.address.country == "US"


def test_customer_parameter_without_field_rejected(client):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.create({"name": "Acme", "payment_method": "pm_card_visa"})

    assert caught.value.code == "fake_parameter_not_implemented"


def test_deleted_customer_retrievable_as_deleted(client, customer):
    removed = client.v1.customers.delete(customer.id)
    fetched = client.v1.customers.retrieve(customer.id)

    assert removed.deleted is True
    assert fetched.deleted is True


def test_async_client_methods(fake):
    import asyncio

    client = fake.client(max_network_retries=0)

    async def create_and_fetch():
        created = await client.v1.customers.create_async({"name": "Async"})
        return await client.v1.customers.retrieve_async(created.id)

    fetched = asyncio.run(create_and_fetch())

    assert fetched.name == "Async"
