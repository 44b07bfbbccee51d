"""Events: Stripe's event shape, the Stripe-Signature scheme, delivery and the API."""

import copy
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from .listing import paginate
from .objects import build
from .wire import FakeStripeError

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def make_event(event_type, obj, *, created, api_version, request, previous=None):
    """Build an event around a snapshot of ``obj`` as it is at this moment."""
    data = {"object": copy.deepcopy(obj)}
    if previous:
        data["previous_attributes"] = copy.deepcopy(previous)
    return build(
        "event",
        id=None,
        type=event_type,
        created=created,
        api_version=api_version,
        data=data,
        livemode=False,
        pending_webhooks=1,
        request=request,
    )


def sign(payload, secret, timestamp):
    """Return the Stripe-Signature header for ``payload`` (bytes).

    Stripe signs ``"{timestamp}.{payload}"`` with HMAC-SHA256, keyed with the
    whole endpoint secret (``whsec_...``), and sends ``t=...,v1=<hex>``.
    """
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def signed_body(event, secret, timestamp=None):
    """Serialize ``event`` and sign it; the timestamp defaults to wall-clock time.

    Wall-clock time, not the fake's clock, because stripe-python checks the
    signature's age against ``time.time()`` with a 300-second tolerance.
    """
    body = json.dumps(event, indent=2).encode()
    when = int(time.time()) if timestamp is None else int(timestamp)
    return body, sign(body, secret, when)


def post_to_loopback(url, body, header, timeout=10):
    """POST a signed event to a loopback URL and return the HTTP status."""
    host = urlsplit(url).hostname
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"Webhook URL {url!r} is not a loopback address.")
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Stripe-Signature": header},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


# Events.


def retrieve_event(fake, context, params, id):
    for event in fake.events:
        if event["id"] == id:
            return event
    raise FakeStripeError(
        f"No such event: '{id}'", status=404, code="resource_missing", param="id"
    )


def list_events(fake, context, params):
    events = list(fake.events)
    if "type" in params:
        pattern = params["type"]
        if pattern.endswith(".*"):
            events = [e for e in events if e["type"].startswith(pattern[:-1])]
        else:
            events = [e for e in events if e["type"] == pattern]
    if "types" in params:
        events = [e for e in events if e["type"] in params["types"]]
    return paginate(events, params, "/v1/events")
