"""Billing meters, meter events (v1, v2 and the v2 stream) and event summaries."""

import hashlib
from decimal import Decimal, InvalidOperation

from .listing import paginate
from .objects import build, iso_timestamp, list_object, parse_iso_timestamp
from .wire import FakeStripeError, invalid, new_id

MAX_EVENT_AGE_SECONDS = 35 * 24 * 60 * 60
MAX_EVENT_LEAD_SECONDS = 5 * 60
IDENTIFIER_WINDOW_SECONDS = 24 * 60 * 60
SESSION_SECONDS = 15 * 60
MAX_STREAM_EVENTS = 100
_WINDOWS = {None: 60, "hour": 3600, "day": 86400}


# Meters.


def create_meter(fake, context, params):
    event_name = params["event_name"]
    for meter in fake.store["billing.meter"].values():
        if meter["event_name"] == event_name and meter["status"] == "active":
            raise invalid(
                f"An active meter with event_name '{event_name}' already exists "
                f"({meter['id']}).",
                "event_name",
            )
    mapping = params.get("customer_mapping", {})
    meter = build(
        "billing.meter",
        id=fake.next_id("billing.meter"),
        created=fake.now,
        updated=fake.now,
        livemode=False,
        display_name=params["display_name"],
        event_name=event_name,
        event_time_window=params.get("event_time_window"),
        default_aggregation={"formula": params["default_aggregation"]["formula"]},
        customer_mapping={
            "event_payload_key": mapping.get("event_payload_key", "stripe_customer_id"),
            "type": mapping.get("type", "by_id"),
        },
        value_settings={
            "event_payload_key": params.get("value_settings", {}).get(
                "event_payload_key", "value"
            )
        },
        status="active",
        status_transitions={"deactivated_at": None},
    )
    return fake.put("billing.meter", meter)


def retrieve_meter(fake, context, params, id):
    return fake.get("billing.meter", id, label="billing meter")


def update_meter(fake, context, params, id):
    meter = fake.get("billing.meter", id, label="billing meter")
    if "display_name" in params:
        meter["display_name"] = params["display_name"]
    meter["updated"] = fake.now
    return meter


def deactivate_meter(fake, context, params, id):
    meter = fake.get("billing.meter", id, label="billing meter")
    meter["status"] = "inactive"
    meter["status_transitions"] = {"deactivated_at": fake.now}
    meter["updated"] = fake.now
    return meter


def reactivate_meter(fake, context, params, id):
    meter = fake.get("billing.meter", id, label="billing meter")
    meter["status"] = "active"
    meter["status_transitions"] = {"deactivated_at": None}
    meter["updated"] = fake.now
    return meter


def list_meters(fake, context, params):
    meters = list(fake.store["billing.meter"].values())
    if "status" in params:
        meters = [m for m in meters if m["status"] == params["status"]]
    return paginate(meters, params, "/v1/billing/meters")


# Meter events.


def create_meter_event_v1(fake, context, params):
    event = accept_event(
        fake,
        params["event_name"],
        params["payload"],
        params.get("identifier"),
        params.get("timestamp", fake.now),
        source="v1",
    )
    return build(
        "billing.meter_event",
        created=event["created"],
        event_name=event["event_name"],
        identifier=event["identifier"],
        livemode=False,
        payload=event["payload"],
        timestamp=event["timestamp"],
    )


def create_meter_event_v2(fake, context, params):
    event = accept_event(
        fake,
        params["event_name"],
        params["payload"],
        params.get("identifier"),
        _v2_timestamp(fake, params.get("timestamp"), "timestamp"),
        source="v2",
    )
    return _v2_event_object(event)


def _v2_event_object(event):
    return {
        "object": "v2.billing.meter_event",
        "created": iso_timestamp(event["created"]),
        "event_name": event["event_name"],
        "identifier": event["identifier"],
        "livemode": False,
        "payload": event["payload"],
        "timestamp": iso_timestamp(event["timestamp"]),
    }


def _v2_timestamp(fake, text, param):
    if text is None:
        return fake.now
    timestamp = parse_iso_timestamp(text)
    if timestamp is None:
        raise invalid(
            f"Invalid timestamp: {text!r} is not an ISO 8601 date-time with a "
            "time zone.",
            param,
        )
    return timestamp


def accept_event(fake, event_name, payload, identifier, timestamp, *, source):
    """Validate one meter event and record it, or raise FakeStripeError."""
    meter = _active_meter(fake, event_name)

    customer_key = meter["customer_mapping"]["event_payload_key"]
    value_key = meter["value_settings"]["event_payload_key"]
    customer_id = payload.get(customer_key)
    if not customer_id:
        raise invalid(
            f"Missing required payload key '{customer_key}' (the meter's "
            "customer_mapping.event_payload_key).",
            f"payload[{customer_key}]",
        )
    fake.get("customer", customer_id, param=f"payload[{customer_key}]")

    if meter["default_aggregation"]["formula"] != "count":
        _payload_value(payload, value_key)
    _check_timestamp(fake, timestamp)

    identifier = identifier or new_id("mtrevt_", 20)
    seen_at = fake.identifiers.get(identifier)
    if seen_at is not None and fake.now - seen_at < IDENTIFIER_WINDOW_SECONDS:
        # Public integrations that handle the error Stripe returns for a reused
        # identifier match this message, and none of them reads an error
        # code. NOTE: the v2 endpoints are assumed to send the same message.
        raise FakeStripeError(
            f"An event already exists with identifier {identifier}.",
            headers={"Stripe-Should-Retry": "false"},
        )
    fake.identifiers[identifier] = fake.now

    event = {
        "event_name": event_name,
        "identifier": identifier,
        "payload": dict(payload),
        "timestamp": int(timestamp),
        "created": fake.now,
        "source": source,
    }
    fake.meter_events.append(event)
    return event


def _active_meter(fake, event_name):
    for meter in fake.store["billing.meter"].values():
        if meter["event_name"] == event_name and meter["status"] == "active":
            return meter
    raise invalid(f"No active meter found for event_name '{event_name}'.", "event_name")


def _payload_value(payload, value_key):
    raw = payload.get(value_key)
    if raw is None:
        raise invalid(
            f"Missing required payload key '{value_key}' (the meter's "
            "value_settings.event_payload_key).",
            f"payload[{value_key}]",
        )
    try:
        return Decimal(str(raw))
    except InvalidOperation:
        raise invalid(
            f"Invalid payload value {raw!r}: must be a number.", f"payload[{value_key}]"
        ) from None


def _check_timestamp(fake, timestamp):
    if timestamp < fake.now - MAX_EVENT_AGE_SECONDS:
        raise invalid(
            f"Invalid timestamp {timestamp}: meter events must be within the past "
            "35 days.",
            "timestamp",
        )
    if timestamp > fake.now + MAX_EVENT_LEAD_SECONDS:
        raise invalid(
            f"Invalid timestamp {timestamp}: meter events may be at most 5 "
            "minutes in the future.",
            "timestamp",
        )


# The v2 meter event stream.


def create_session(fake, context, params):
    token = new_id("mtrses_tok_", 32)
    fake.sessions[token] = fake.now + SESSION_SECONDS
    return {
        "object": "v2.billing.meter_event_session",
        "id": new_id("mtrses_", 24),
        "authentication_token": token,
        "created": iso_timestamp(fake.now),
        "expires_at": iso_timestamp(fake.now + SESSION_SECONDS),
        "livemode": False,
    }


def check_session_token(fake, token):
    expires_at = fake.sessions.get(token)
    if expires_at is None:
        raise FakeStripeError(
            "Invalid meter event session token.",
            status=401,
            type="invalid_request_error",
        )
    if fake.now >= expires_at:
        raise FakeStripeError(
            "The temporary session token has expired.",
            status=401,
            type="temporary_session_expired",
            code="billing_meter_event_session_expired",
        )


def create_stream_events(fake, context, params):
    """Accept a batch of events without returning per-event errors.

    Stripe processes stream events asynchronously and reports invalid ones
    through ``v1.billing.meter.error_report_triggered``. The fake drops them
    and lists them in ``fake.meter_event_errors``.
    """
    events = params["events"]
    if len(events) > MAX_STREAM_EVENTS:
        raise invalid(
            f"Too many events: {len(events)}; send at most {MAX_STREAM_EVENTS} per request.",
            "events",
        )
    for index, raw in enumerate(events):
        try:
            accept_event(
                fake,
                raw["event_name"],
                raw["payload"],
                raw.get("identifier"),
                _v2_timestamp(
                    fake, raw.get("timestamp"), f"events[{index}][timestamp]"
                ),
                source="stream",
            )
        except FakeStripeError as exc:
            fake.meter_event_errors.append(
                {
                    "identifier": raw.get("identifier"),
                    "message": exc.message,
                    "event": raw,
                }
            )
    return {}


# Usage and summaries.


def meter_usage(fake, meter_id, customer_id, start, end):
    """Aggregate a customer's events on a meter with timestamps in [start, end)."""
    meter = fake.get("billing.meter", meter_id, label="billing meter")
    customer_key = meter["customer_mapping"]["event_payload_key"]
    value_key = meter["value_settings"]["event_payload_key"]
    events = [
        event
        for event in fake.meter_events
        if event["event_name"] == meter["event_name"]
        and event["payload"].get(customer_key) == customer_id
        and start <= event["timestamp"] < end
    ]
    formula = meter["default_aggregation"]["formula"]
    if formula == "count":
        return len(events)
    values = [Decimal(str(event["payload"][value_key])) for event in events]
    if formula == "last":
        latest = max(events, key=lambda event: event["timestamp"], default=None)
        total = Decimal(str(latest["payload"][value_key])) if latest else Decimal(0)
    else:
        total = sum(values, Decimal(0))
    return int(total) if total == total.to_integral_value() else total


def list_event_summaries(fake, context, params, id):
    """Return summaries for [start_time, end_time), one per window if one is given.

    NOTE: the fake returns the newest window first, as Stripe's lists do. The
    order Stripe uses for summaries was not checked against the live API.
    """
    meter = fake.get("billing.meter", id, label="billing meter")
    fake.get("customer", params["customer"], param="customer")
    window = params.get("value_grouping_window")
    start, end = params["start_time"], params["end_time"]
    step = _WINDOWS[window]
    for name, value in (("start_time", start), ("end_time", end)):
        if value % step:
            unit = {60: "minute", 3600: "hour", 86400: "day"}[step]
            raise invalid(
                f"Invalid {name}: must be aligned with {unit} boundaries.", name
            )
    if start >= end:
        raise invalid("Invalid end_time: must be after start_time.", "end_time")
    bounds = [(start, end)] if window is None else _windows(start, end, step)
    summaries = [
        build(
            "billing.meter_event_summary",
            id=_summary_id(id, params["customer"], low, high),
            aggregated_value=meter_usage(fake, id, params["customer"], low, high),
            start_time=low,
            end_time=high,
            livemode=False,
            meter=meter["id"],
        )
        for low, high in bounds
    ]
    url = f"/v1/billing/meters/{id}/event_summaries"
    if window is None:
        return list_object(summaries, url)
    return paginate(summaries, params, url)


def _summary_id(meter_id, customer_id, start, end):
    # Stable ids, so that stripe-python's auto-pager can page with starting_after.
    digest = hashlib.sha1(f"{meter_id}:{customer_id}:{start}:{end}".encode())
    return "mtrsum_" + digest.hexdigest()[:24]


def _windows(start, end, step):
    return [(low, min(low + step, end)) for low in range(start, end, step)]
