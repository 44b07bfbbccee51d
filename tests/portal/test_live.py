import json
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from agents.customer_events import customer_event
from agents.models import ApiMessage, Execution
from tests.factories import ExecutionFactory

pytestmark = pytest.mark.django_db

COST_KEYS = {
    "cost_usd",
    "running_cost_usd",
    "priced_running_cost_usd",
    "priced_cost_usd",
    "reported_cost_usd",
    "cost_difference_usd",
    "unpriced",
}


def parse_events(body: str) -> list[tuple[str, dict]]:
    events = []
    for block in body.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_customer_event_drops_cost_fields():
    event = {
        "type": "api_message",
        "message_id": "msg_1",
        "input_tokens": 10,
        "output_tokens": 5,
        "cost_usd": "0.01",
        "running_cost_usd": "0.02",
        "priced_running_cost_usd": "0.02",
        "unpriced": False,
        "some_future_field": "hidden",
    }

    kept = customer_event(event)

    assert kept == {
        "type": "api_message",
        "message_id": "msg_1",
        "input_tokens": 10,
        "output_tokens": 5,
    }


def test_customer_event_filters_summary():
    event = {
        "type": "execution_finished",
        "execution_id": 7,
        "status": "succeeded",
        "summary": {
            "status": "succeeded",
            "output_tokens": 12,
            "cost_usd": "1.5",
            "reported_cost_usd": "1.4",
            "customer": "acme",
            "error": "internal detail",
        },
    }

    kept = customer_event(event)

    assert kept["status"] == "succeeded"
    assert kept["summary"] == {"status": "succeeded", "output_tokens": 12}


def test_event_stream_of_finished_execution(owner_client, owner):
    execution = ExecutionFactory(
        customer=owner.customer,
        status=Execution.Status.SUCCEEDED,
        output_tokens=42,
        cost_usd=Decimal("0.5"),
    )
    ApiMessage.objects.create(
        execution=execution,
        message_id="msg_1",
        sequence=1,
        model="claude-sonnet-4-6",
        input_tokens=100,
        output_tokens=42,
        cost_usd=Decimal("0.5"),
        arrived_at=timezone.now(),
    )

    response = owner_client.get(reverse("portal:execution-events", args=[execution.pk]))
    events = parse_events(b"".join(response.streaming_content).decode())

    assert response["Content-Type"] == "text/event-stream"
    assert [name for name, _ in events] == ["api_message", "execution_finished"]
    message, finished = events[0][1], events[1][1]
    assert message["output_tokens"] == 42
    assert not COST_KEYS & message.keys()
    assert finished["summary"]["output_tokens"] == 42
    assert not COST_KEYS & finished["summary"].keys()


def test_event_stream_needs_login(client, owner):
    execution = ExecutionFactory(customer=owner.customer)

    response = client.get(reverse("portal:execution-events", args=[execution.pk]))

    assert response.status_code == 302
