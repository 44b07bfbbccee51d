from datetime import UTC, datetime

import pytest
import stripe

from tests.fakestripe.conftest import NEW_YEAR

DAY = 86_400


def iso(timestamp):
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def send_v1(client, customer, identifier, value="1", timestamp=None):
    params = {
        "event_name": "agent_executions",
        "identifier": identifier,
        "payload": {"stripe_customer_id": customer.id, "value": value},
    }
    if timestamp is not None:
        params["timestamp"] = timestamp
    return client.v1.billing.meter_events.create(params)


def test_v1_meter_event_recorded(client, fake, customer, meter):
    event = send_v1(client, customer, "exec-1", value="3", timestamp=NEW_YEAR - 60)

    assert event.identifier == "exec-1"
    assert event.timestamp == NEW_YEAR - 60
    assert fake.meter_events[0]["payload"]["value"] == "3"
    assert fake.meter_usage(meter.id, customer.id, NEW_YEAR - DAY, NEW_YEAR) == 3


def test_duplicate_identifier_rejected(client, fake, customer, meter):
    send_v1(client, customer, "exec-1")

    with pytest.raises(stripe.InvalidRequestError) as caught:
        send_v1(client, customer, "exec-1")

    assert caught.value.http_status == 400
    assert (
        caught.value.user_message == "An event already exists with identifier exec-1."
    )
    assert caught.value.headers["Stripe-Should-Retry"] == "false"
    assert len(fake.meter_events) == 1


def test_identifier_reusable_after_a_day(client, fake, customer, meter):
    send_v1(client, customer, "exec-1")
    fake.advance(DAY)

    send_v1(client, customer, "exec-1")

    assert len(fake.meter_events) == 2


def test_same_key_replays_instead_of_duplicate(client, fake, customer, meter):
    params = {
        "event_name": "agent_executions",
        "identifier": "exec-1",
        "payload": {"stripe_customer_id": customer.id, "value": "1"},
    }

    client.v1.billing.meter_events.create(params, {"idempotency_key": "meter-exec-1"})
    replay = client.v1.billing.meter_events.create(
        params, {"idempotency_key": "meter-exec-1"}
    )

    assert replay.identifier == "exec-1"
    assert len(fake.meter_events) == 1


def test_stale_timestamp_rejected(client, fake, customer, meter):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        send_v1(client, customer, "old", timestamp=NEW_YEAR - 35 * DAY - 1)

    assert caught.value.param == "timestamp"
    assert fake.meter_events == []


def test_timestamp_at_35_days_accepted(client, fake, customer, meter):
    send_v1(client, customer, "edge", timestamp=NEW_YEAR - 35 * DAY)

    assert len(fake.meter_events) == 1


def test_future_timestamp_rejected(client, customer, meter):
    send_v1(client, customer, "soon", timestamp=NEW_YEAR + 300)

    with pytest.raises(stripe.InvalidRequestError) as caught:
        send_v1(client, customer, "later", timestamp=NEW_YEAR + 301)

    assert caught.value.param == "timestamp"


def test_unknown_event_name_rejected(client, customer, meter):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.billing.meter_events.create(
            {
                "event_name": "no_such_meter",
                "payload": {"stripe_customer_id": customer.id, "value": "1"},
            }
        )

    assert caught.value.param == "event_name"


def test_payload_needs_customer_key(client, meter):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.billing.meter_events.create(
            {"event_name": "agent_executions", "payload": {"value": "1"}}
        )

    assert caught.value.param == "payload[stripe_customer_id]"


def test_payload_value_must_be_number(client, customer, meter):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        send_v1(client, customer, "bad", value="one")

    assert caught.value.param == "payload[value]"


def test_duplicate_meter_event_name_rejected(client, meter):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.billing.meters.create(
            {
                "display_name": "Again",
                "event_name": "agent_executions",
                "default_aggregation": {"formula": "sum"},
            }
        )

    assert caught.value.param == "event_name"


def test_v2_meter_event_recorded(client, fake, customer, meter):
    event = client.v2.billing.meter_events.create(
        {
            "event_name": "agent_executions",
            "identifier": "exec-9",
            "payload": {"stripe_customer_id": customer.id, "value": "2"},
            "timestamp": iso(NEW_YEAR - 3600),
        }
    )

    assert event.identifier == "exec-9"
    assert fake.meter_events[0]["timestamp"] == NEW_YEAR - 3600
    assert fake.meter_events[0]["source"] == "v2"


def test_v2_duplicate_identifier_rejected(client, customer, meter):
    params = {
        "event_name": "agent_executions",
        "identifier": "exec-9",
        "payload": {"stripe_customer_id": customer.id, "value": "2"},
    }
    client.v2.billing.meter_events.create(params)

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v2.billing.meter_events.create(params)

    assert "exec-9" in caught.value.user_message
    assert caught.value.json_body["error"]["type"] == "invalid_request_error"


def test_v2_payload_values_must_be_strings(client, customer, meter):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v2.billing.meter_events.create(
            {
                "event_name": "agent_executions",
                "payload": {"stripe_customer_id": customer.id, "value": 2},
            }
        )

    assert caught.value.param == "payload[value]"


def test_event_summary_for_period(client, customer, meter):
    send_v1(client, customer, "a", value="2", timestamp=NEW_YEAR - 2 * DAY)
    send_v1(client, customer, "b", value="5", timestamp=NEW_YEAR - DAY + 10)
    send_v1(client, customer, "c", value="7", timestamp=NEW_YEAR - 40 * 60)

    summaries = client.v1.billing.meters.event_summaries.list(
        meter.id,
        {"customer": customer.id, "start_time": NEW_YEAR - DAY, "end_time": NEW_YEAR},
    )

    assert len(summaries.data) == 1
    assert summaries.data[0].aggregated_value == 12
    assert summaries.data[0].meter == meter.id


def test_event_summaries_by_day(client, customer, meter):
    send_v1(client, customer, "a", value="2", timestamp=NEW_YEAR - 2 * DAY)
    send_v1(client, customer, "b", value="5", timestamp=NEW_YEAR - DAY + 10)

    summaries = client.v1.billing.meters.event_summaries.list(
        meter.id,
        {
            "customer": customer.id,
            "start_time": NEW_YEAR - 2 * DAY,
            "end_time": NEW_YEAR,
            "value_grouping_window": "day",
        },
    )

    by_start = {s.start_time: s.aggregated_value for s in summaries.data}
    assert by_start == {NEW_YEAR - 2 * DAY: 2, NEW_YEAR - DAY: 5}


def test_event_summary_needs_aligned_times(client, customer, meter):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.billing.meters.event_summaries.list(
            meter.id,
            {
                "customer": customer.id,
                "start_time": NEW_YEAR - 30,
                "end_time": NEW_YEAR,
            },
        )

    assert caught.value.param == "start_time"


def test_count_meter_counts_events(client, fake, customer):
    counter = client.v1.billing.meters.create(
        {
            "display_name": "Runs",
            "event_name": "runs",
            "default_aggregation": {"formula": "count"},
        }
    )
    for identifier in ("r1", "r2", "r3"):
        client.v1.billing.meter_events.create(
            {
                "event_name": "runs",
                "identifier": identifier,
                "payload": {"stripe_customer_id": customer.id},
            }
        )

    assert fake.meter_usage(counter.id, customer.id, NEW_YEAR - DAY, NEW_YEAR + 1) == 3


def test_stream_session_accepts_batch(client, fake, customer, meter):
    session = client.v2.billing.meter_event_session.create()
    stream = fake.client(api_key=session.authentication_token, max_network_retries=0)

    stream.v2.billing.meter_event_stream.create(
        {
            "events": [
                {
                    "event_name": "agent_executions",
                    "identifier": f"exec-{n}",
                    "payload": {"stripe_customer_id": customer.id, "value": "1"},
                    "timestamp": iso(NEW_YEAR - 60),
                }
                for n in range(3)
            ]
        }
    )

    assert [event["source"] for event in fake.meter_events] == ["stream"] * 3
    assert fake.requests[-1].host == "meter-events.stripe.com"


def test_stream_reports_invalid_events(client, fake, customer, meter):
    session = client.v2.billing.meter_event_session.create()
    stream = fake.client(api_key=session.authentication_token, max_network_retries=0)
    event = {
        "event_name": "agent_executions",
        "identifier": "exec-1",
        "payload": {"stripe_customer_id": customer.id, "value": "1"},
    }

    stream.v2.billing.meter_event_stream.create({"events": [event, event]})

    assert len(fake.meter_events) == 1
    assert fake.meter_event_errors[0]["identifier"] == "exec-1"


def test_stream_session_expires_after_15_minutes(client, fake, customer, meter):
    session = client.v2.billing.meter_event_session.create()
    stream = fake.client(api_key=session.authentication_token, max_network_retries=0)
    fake.advance(15 * 60)

    with pytest.raises(stripe.TemporarySessionExpiredError) as caught:
        stream.v2.billing.meter_event_stream.create(
            {
                "events": [
                    {
                        "event_name": "agent_executions",
                        "payload": {"stripe_customer_id": customer.id, "value": "1"},
                    }
                ]
            }
        )

    assert caught.value.http_status == 401
    assert caught.value.code == "billing_meter_event_session_expired"
    assert fake.meter_events == []


def test_session_expiry_is_15_minutes(client, fake):
    session = client.v2.billing.meter_event_session.create()

    assert session.expires_at == iso(NEW_YEAR + 15 * 60).replace("Z", ".000Z")


def test_stream_rejects_api_key(fake, client, customer, meter):
    with pytest.raises(stripe.AuthenticationError):
        client.v2.billing.meter_event_stream.create(
            {
                "events": [
                    {
                        "event_name": "agent_executions",
                        "payload": {"stripe_customer_id": customer.id, "value": "1"},
                    }
                ]
            }
        )


def test_stream_on_api_host_is_404(fake, client):
    session = client.v2.billing.meter_event_session.create()
    misdirected = fake.client(
        api_key=session.authentication_token,
        max_network_retries=0,
        http_client=fake.http_client(),
        base_addresses={"meter_events": "https://api.stripe.com"},
    )

    with pytest.raises(stripe.InvalidRequestError) as caught:
        misdirected.v2.billing.meter_event_stream.create({"events": []})

    assert caught.value.http_status == 404
