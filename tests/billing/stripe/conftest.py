"""Fixtures that point billing.stripe at the fake Stripe, or at Stripe test mode.

Every test here talks to `tests.fakestripe.FakeStripe` in process. A test
marked `stripe_live` talks to Stripe's test mode instead, and only when
STRIPE_API_KEY in the environment starts with sk_test_; it is skipped
otherwise.
"""

from __future__ import annotations

import json
import os
from datetime import date, datetime
from decimal import Decimal

import pytest
import stripe

from agents.models import Execution
from billing.models import Plan
from billing.stripe import retry
from billing.stripe.client import client_override
from tests.factories import CustomerFactory, ExecutionFactory


def live_api_key() -> str:
    """Return the test-mode key from the environment, or "" when there is none."""
    key = os.environ.get("STRIPE_API_KEY", "")
    return key if key.startswith("sk_test_") else ""


@pytest.fixture
def fake_stripe():
    from tests.fakestripe import FakeStripe

    return FakeStripe()


@pytest.fixture
def stripe_backend(request, fake_stripe, settings):
    """Point `billing.stripe.client.stripe_client` at the fake, or at test mode.

    Yields the FakeStripe, or None when the test runs against Stripe.
    """
    if request.node.get_closest_marker("stripe_live"):
        key = live_api_key()
        if not key:
            pytest.skip(
                "STRIPE_API_KEY does not hold a Stripe test-mode key (sk_test_)"
            )
        with client_override(api_key=key):
            yield None
        return
    settings.STRIPE_WEBHOOK_SECRET = fake_stripe.webhook_secret
    with client_override(
        api_key=fake_stripe.api_key, http_client=fake_stripe.http_client()
    ):
        yield fake_stripe


@pytest.fixture(autouse=True)
def sleeps(monkeypatch):
    """Record the retry loop's waits instead of sleeping."""
    waits: list[float] = []
    monkeypatch.setattr(retry, "sleep", waits.append)
    return waits


def make_plan(slug: str, billing_model: str, **fields) -> Plan:
    plan = Plan(name=slug.title(), slug=slug, billing_model=billing_model, **fields)
    plan.full_clean()
    plan.save()
    return plan


@pytest.fixture
def hybrid_plan(db):
    """$49 a month with 50 executions included, then $0.50 each."""
    return make_plan(
        "hybrid",
        "hybrid",
        monthly_price=Decimal("49.00"),
        included_executions=50,
        overage_price=Decimal("0.50"),
    )


@pytest.fixture
def cost_plus_plan(db):
    return make_plan(
        "cost-plus", "usage", usage_pricing="cost_plus", cost_markup=Decimal("1.5")
    )


def finished_execution(
    customer, *, at: datetime, cost: str = "0.10", status=Execution.Status.SUCCEEDED
) -> Execution:
    """Create an execution of `customer` that finished at `at`, created then too."""
    execution = ExecutionFactory(
        customer=customer, status=status, finished_at=at, cost_usd=Decimal(cost)
    )
    Execution.objects.filter(pk=execution.pk).update(created_at=at)
    execution.created_at = at
    return execution


def new_customer(slug: str):
    return CustomerFactory(slug=slug, name=slug.title())


def day_of(moment: datetime) -> date:
    return moment.date()


def stripe_500(message: str = "An unknown error occurred") -> tuple[str, int, dict]:
    body = {"error": {"type": "api_error", "message": message}}
    return json.dumps(body), 500, {"Request-Id": "req_injected"}


class FailFor(stripe.HTTPClient):
    """An HTTP client that returns 500 for requests whose body contains `needle`.

    Every other request goes to `inner`. Used where the fake's own failure
    injection, which matches on the path only, cannot pick one customer.
    """

    name = "fail-for"

    def __init__(self, inner: stripe.HTTPClient, needle: str):
        super().__init__()
        self.inner = inner
        self.needle = needle
        self.failed = 0

    def request_with_retries(self, method, url, headers, post_data=None, *args, **kw):
        text = post_data.decode() if isinstance(post_data, bytes) else post_data or ""
        if self.needle and self.needle in text:
            self.failed += 1
            return stripe_500()
        return self.inner.request_with_retries(
            method, url, headers, post_data, *args, **kw
        )

    def close(self):
        self.inner.close()


def pending_deliveries(customer, plan, count: int, *, at: datetime) -> list:
    """Bulk-create `count` succeeded executions and their pending meter events."""
    from billing.models import MeterEventDelivery
    from billing.stripe.metering import identifier_for
    from tests.factories import WorkflowFactory

    workflow = WorkflowFactory()
    executions = Execution.objects.bulk_create(
        Execution(
            customer=customer,
            workflow=workflow,
            prompt="Review the change.",
            requested_model=workflow.model,
            status=Execution.Status.SUCCEEDED,
            finished_at=at,
        )
        for _ in range(count)
    )
    return MeterEventDelivery.objects.bulk_create(
        MeterEventDelivery(
            execution=execution,
            customer=customer,
            plan=plan,
            identifier=identifier_for(execution.pk),
            event_name=plan.stripe_meter_event_name,
            stripe_customer_id=customer.stripe_customer_id,
            value=Decimal(1),
            timestamp=at,
        )
        for execution in executions
    )
