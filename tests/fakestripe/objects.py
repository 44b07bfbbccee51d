"""Stripe-shaped objects built from Stripe's published example objects.

``stripe_examples.json`` is copied from Stripe's MIT-licensed API fixtures
(``openapi/fixtures3.json`` in the public stripe/openapi repository; the
notice is in ``STRIPE_EXAMPLES_LICENSE``), with placeholder values such as
random package dimensions replaced by null. Each object the fake creates
starts as a copy of the example of its kind, so responses carry every field
stripe-python expects.
"""

import calendar
import copy
import functools
import json
from datetime import UTC, datetime
from pathlib import Path

EXAMPLES_PATH = Path(__file__).with_name("stripe_examples.json")

ID_PREFIXES = {
    "customer": "cus_",
    "product": "prod_",
    "price": "price_",
    "billing.meter": "mtr_",
    "subscription": "sub_",
    "subscription_item": "si_",
    "invoiceitem": "ii_",
    "invoice": "in_",
    "line_item": "il_",
    "event": "evt_",
    "billing.meter_event_summary": "mtrsum_",
}


@functools.cache
def _examples():
    return json.loads(EXAMPLES_PATH.read_text())


def example(kind):
    """Return a fresh copy of Stripe's example object of ``kind``."""
    return copy.deepcopy(_examples()[kind])


def build(kind, **fields):
    obj = example(kind)
    obj.update(fields)
    return obj


def deleted(kind, object_id):
    return {"id": object_id, "object": kind, "deleted": True}


def list_object(data, url, has_more=False):
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def add_months(timestamp, months):
    """Add calendar months, keeping the day or clamping it to the month's end.

    A cycle anchored on the 31st ends on the 30th in April and on the 31st
    again in May, as Stripe bills.
    """
    moment = datetime.fromtimestamp(timestamp, UTC)
    month_index = moment.month - 1 + months
    year = moment.year + month_index // 12
    month = month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return int(moment.replace(year=year, month=month, day=day).timestamp())


def iso_timestamp(timestamp):
    """Format unix seconds as the ISO 8601 string that v2 endpoints use."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def parse_iso_timestamp(text):
    """Parse a v2 timestamp into unix seconds, or return None when invalid."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return int(moment.timestamp())
