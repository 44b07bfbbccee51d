import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from agents.models import ApiMessage, Execution
from agents.services import CANCELED_BEFORE_START
from billing.models import BudgetReservation
from customers.models import Customer
from tests.factories import ExecutionFactory, WorkflowFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/executions"


def start(client, workflow="code-review", prompt="Review the diff.", **extra):
    headers = extra.pop("headers", {})
    return client.post(
        URL,
        {"workflow": workflow, "prompt": prompt, **extra},
        format="json",
        headers=headers,
    )


def error_code(response):
    return response.json()["error"]["code"]


# Starting ------------------------------------------------------------------


def test_start_queues_execution(
    client, customer, api_key, workflow, sent_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = start(client, metadata={"ticket": "T-1"})
    assert response.status_code == 202
    body = response.json()
    execution = Execution.objects.get(pk=body["id"])
    assert execution.customer == customer
    assert execution.status == Execution.Status.QUEUED
    assert execution.metadata == {"ticket": "T-1"}
    assert execution.api_key == api_key[0]
    assert body["workflow"] == "code-review"
    assert body["status"] == "queued"
    assert response["Location"] == f"{URL}/{execution.pk}"
    assert sent_tasks == [execution.pk]


def test_start_unknown_workflow(client, workflow):
    response = start(client, workflow="nope")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "workflow"


def test_start_inactive_workflow(client):
    WorkflowFactory(slug="retired", is_active=False)
    response = start(client, workflow="retired")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "workflow"


def test_start_blank_prompt(client, workflow):
    response = start(client, prompt="   ")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "prompt"


def test_start_too_many_metadata_keys(client, workflow):
    metadata = {f"k{i}": "v" for i in range(51)}
    response = start(client, metadata=metadata)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "metadata"


def test_start_non_string_metadata(client, workflow):
    response = start(client, metadata={"nested": {"a": 1}})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "metadata.nested"


def test_start_suspended_customer_403(client, customer, workflow):
    Customer.objects.filter(pk=customer.pk).update(status=Customer.Status.SUSPENDED)
    response = start(client)
    assert response.status_code == 403
    assert error_code(response) == "customer_inactive"
    assert not Execution.objects.exists()


def test_start_over_budget_402(
    client, customer, workflow, sent_tasks, settings, django_capture_on_commit_callbacks
):
    settings.AGENTMARGIN_DEFAULT_RUN_RESERVATION_USD = Decimal("1.00")
    Customer.objects.filter(pk=customer.pk).update(monthly_budget_usd=Decimal("0.50"))
    with django_capture_on_commit_callbacks(execute=True):
        response = start(client)
    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert "budget" in error["message"]
    execution = Execution.objects.get()
    assert execution.status == Execution.Status.BUDGET_EXCEEDED
    assert execution.error == error["message"]
    assert response["Location"] == f"{URL}/{execution.pk}"
    assert sent_tasks == []


def test_start_within_budget_reserves(client, customer, workflow, sent_tasks, settings):
    settings.AGENTMARGIN_DEFAULT_RUN_RESERVATION_USD = Decimal("1.00")
    Customer.objects.filter(pk=customer.pk).update(monthly_budget_usd=Decimal("5"))
    response = start(client)
    assert response.status_code == 202
    reservation = BudgetReservation.objects.get(execution_id=response.json()["id"])
    assert reservation.amount_usd == Decimal("1.00")


# Idempotency ---------------------------------------------------------------


def test_idempotent_replay_returns_first_execution(
    client, workflow, sent_tasks, django_capture_on_commit_callbacks
):
    headers = {"Idempotency-Key": "order-42"}
    with django_capture_on_commit_callbacks(execute=True):
        first = start(client, headers=headers, metadata={"a": "1"})
        second = start(client, headers=headers, metadata={"a": "1"})
    assert first.status_code == 202
    assert second.status_code == 202
    assert second.json()["id"] == first.json()["id"]
    assert second["Idempotent-Replayed"] == "true"
    assert Execution.objects.count() == 1
    assert sent_tasks == [first.json()["id"]]


def test_idempotent_replay_of_rejection_is_402(client, customer, workflow, settings):
    settings.AGENTMARGIN_DEFAULT_RUN_RESERVATION_USD = Decimal("1.00")
    Customer.objects.filter(pk=customer.pk).update(monthly_budget_usd=Decimal("0.50"))
    headers = {"Idempotency-Key": "k1"}
    first = start(client, headers=headers)
    second = start(client, headers=headers)
    assert first.status_code == 402
    assert second.status_code == 402
    assert second.json() == first.json()
    assert Execution.objects.count() == 1


def test_idempotency_key_reused_for_other_request(client, workflow):
    headers = {"Idempotency-Key": "k2"}
    assert start(client, headers=headers).status_code == 202
    response = start(client, headers=headers, prompt="Something else.")
    assert response.status_code == 409
    assert error_code(response) == "idempotency_key_reused"
    assert response.json()["error"]["field"] == "Idempotency-Key"


def test_idempotency_keys_are_per_customer(client, other_client, workflow):
    headers = {"Idempotency-Key": "shared"}
    mine = start(client, headers=headers)
    theirs = start(other_client, headers=headers)
    assert mine.status_code == 202
    assert theirs.status_code == 202
    assert mine.json()["id"] != theirs.json()["id"]


def test_idempotency_key_too_long(client, workflow):
    response = start(client, headers={"Idempotency-Key": "x" * 256})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "Idempotency-Key"


# Listing and reading -------------------------------------------------------


def test_list_pages_newest_first(client, customer, workflow):
    executions = [
        ExecutionFactory(customer=customer, workflow=workflow) for _ in range(5)
    ]
    ExecutionFactory()  # another customer's
    seen = []
    url = f"{URL}?page_size=2"
    while url:
        response = client.get(url)
        assert response.status_code == 200
        seen += [row["id"] for row in response.json()["results"]]
        url = response.json()["next"]
    assert seen == [execution.pk for execution in reversed(executions)]


@pytest.mark.parametrize("page_size", ["0", "201", "two"])
def test_list_invalid_page_size(client, page_size):
    response = client.get(f"{URL}?page_size={page_size}")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "page_size"


def test_list_invalid_cursor(client):
    response = client.get(f"{URL}?cursor=garbage")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "cursor"


def test_list_filters(client, customer, workflow):
    other_workflow = WorkflowFactory(slug="classify")
    done = ExecutionFactory(
        customer=customer, workflow=workflow, status=Execution.Status.SUCCEEDED
    )
    ExecutionFactory(customer=customer, workflow=workflow)
    classify = ExecutionFactory(customer=customer, workflow=other_workflow)
    old = ExecutionFactory(customer=customer, workflow=workflow)
    Execution.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - timedelta(days=10)
    )

    def ids(query):
        response = client.get(f"{URL}?{query}")
        assert response.status_code == 200
        return {row["id"] for row in response.json()["results"]}

    assert ids("status=succeeded") == {done.pk}
    assert ids("workflow=classify") == {classify.pk}
    since = (timezone.now() - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    assert old.pk not in ids(f"created_after={since}")
    assert ids(f"created_before={since}") == {old.pk}


def test_list_invalid_filter(client):
    response = client.get(f"{URL}?status=exploded")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "status"


def test_detail_with_messages(client, customer, workflow):
    execution = ExecutionFactory(customer=customer, workflow=workflow)
    for sequence in (2, 1):
        ApiMessage.objects.create(
            execution=execution,
            message_id=f"msg_{sequence}",
            sequence=sequence,
            model="claude-sonnet-4-6",
            input_tokens=10 * sequence,
            output_tokens=5,
            cost_usd=Decimal("0.001"),
            arrived_at=timezone.now(),
        )
    response = client.get(f"{URL}/{execution.pk}")
    assert response.status_code == 200
    body = response.json()
    assert [m["message_id"] for m in body["api_messages"]] == ["msg_1", "msg_2"]
    assert body["api_messages"][1]["input_tokens"] == 20
    assert "cost_usd" not in body
    assert "cost_usd" not in body["api_messages"][0]


# Tenant isolation ----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("get", ""),
        ("get", "/events"),
        ("post", "/cancel"),
        ("post", "/outcome"),
    ],
)
def test_other_customers_execution_is_404(client, other_customer, method, suffix):
    theirs = ExecutionFactory(
        customer=other_customer, status=Execution.Status.SUCCEEDED
    )
    missing = theirs.pk + 1000
    body = {"value_usd": "1.00"}
    found = getattr(client, method)(f"{URL}/{theirs.pk}{suffix}", body, format="json")
    absent = getattr(client, method)(f"{URL}/{missing}{suffix}", body, format="json")
    assert found.status_code == 404
    assert absent.status_code == 404
    assert found.json() == absent.json()
    theirs.refresh_from_db()
    assert theirs.cancel_requested_at is None
    assert theirs.outcome_value_usd is None


# Cancel --------------------------------------------------------------------


def test_cancel_queued_ends_it(
    client, customer, workflow, settings, django_capture_on_commit_callbacks
):
    settings.AGENTMARGIN_DEFAULT_RUN_RESERVATION_USD = Decimal("1.00")
    Customer.objects.filter(pk=customer.pk).update(monthly_budget_usd=Decimal("5"))
    execution_id = start(client).json()["id"]
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"{URL}/{execution_id}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "interrupted"
    execution = Execution.objects.get(pk=execution_id)
    assert execution.status == Execution.Status.INTERRUPTED
    assert execution.error == CANCELED_BEFORE_START
    assert execution.finished_at is not None
    assert execution.started_at is None
    # The finish signal released the budget the execution had reserved.
    assert BudgetReservation.objects.get(execution_id=execution_id).released_at


def test_cancel_running_requests_stop(client, customer, workflow):
    execution = ExecutionFactory(
        customer=customer, workflow=workflow, status=Execution.Status.RUNNING
    )
    response = client.post(f"{URL}/{execution.pk}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "running"
    assert response.json()["cancel_requested_at"]
    first = Execution.objects.get(pk=execution.pk).cancel_requested_at
    again = client.post(f"{URL}/{execution.pk}/cancel")
    assert again.status_code == 202
    assert Execution.objects.get(pk=execution.pk).cancel_requested_at == first


def test_cancel_finished_409(client, customer, workflow):
    execution = ExecutionFactory(
        customer=customer, workflow=workflow, status=Execution.Status.SUCCEEDED
    )
    response = client.post(f"{URL}/{execution.pk}/cancel")
    assert response.status_code == 409
    assert error_code(response) == "execution_finished"


def test_canceled_execution_is_not_claimed(client, workflow):
    from agents.jobs import Claim, execution_claim

    execution_id = start(client).json()["id"]
    client.post(f"{URL}/{execution_id}/cancel")
    claim, _ = execution_claim(execution_id, worker="test")
    assert claim is Claim.SKIP


# Events --------------------------------------------------------------------


def parse_events(content: bytes) -> list[tuple[str, dict]]:
    events = []
    for frame in content.decode().split("\n\n"):
        lines = dict(
            line.split(": ", 1)
            for line in frame.splitlines()
            if not line.startswith(":")
        )
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_events_of_finished_execution(client, customer, workflow):
    execution = ExecutionFactory(
        customer=customer,
        workflow=workflow,
        status=Execution.Status.SUCCEEDED,
        finished_at=timezone.now(),
    )
    ApiMessage.objects.create(
        execution=execution,
        message_id="msg_1",
        sequence=1,
        model="claude-sonnet-4-6",
        output_tokens=7,
        cost_usd=Decimal("0.000105"),
        output_final=True,
        arrived_at=timezone.now(),
    )
    response = client.get(
        f"{URL}/{execution.pk}/events", HTTP_ACCEPT="text/event-stream"
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    events = parse_events(b"".join(response.streaming_content))
    assert [name for name, _ in events] == ["api_message", "execution_finished"]
    assert events[0][1]["message_id"] == "msg_1"
    # Customers see tokens, never our cost.
    assert events[0][1]["output_tokens"] == 7
    for _, event in events:
        assert "cost_usd" not in event
        assert "cost_usd" not in event.get("summary", {})


def test_events_error_as_event_stream(client):
    response = client.get(f"{URL}/999999/events", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 404
    assert response.content.startswith(b"event: error\n")


def test_detail_error_leaves_out_cli_diagnostics(client, customer, workflow):
    execution = ExecutionFactory(
        customer=customer,
        workflow=workflow,
        status=Execution.Status.INTERRUPTED,
        finished_at=timezone.now(),
        error=(
            "Canceled by the customer while it ran; the run was interrupted.\n"
            "[ede_diagnostic] result_type=user last_content_type=n/a"
        ),
    )
    body = client.get(f"{URL}/{execution.pk}").json()
    assert body["error"] == (
        "Canceled by the customer while it ran; the run was interrupted."
    )
