from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from agents.models import Execution
from billing.models import Alert, Plan, StripeInvoice
from billing.services import statement_close_period, subscription_create
from tests.factories import CustomerFactory, ExecutionFactory, WorkflowFactory

pytestmark = pytest.mark.django_db

D = Decimal


def make_plan(slug, billing_model, **fields) -> Plan:
    plan = Plan(name=slug.title(), slug=slug, billing_model=billing_model, **fields)
    plan.full_clean()
    plan.save()
    return plan


@pytest.fixture
def hybrid(customer):
    plan = make_plan(
        "hybrid",
        Plan.BillingModel.HYBRID,
        monthly_price=D("49.00"),
        included_executions=3,
        overage_price=D("0.50"),
    )
    subscription_create(customer=customer, plan=plan, start=date(2025, 4, 15))
    return plan


def add_executions(customer, count, *, at, status=Execution.Status.SUCCEEDED):
    workflow = WorkflowFactory(slug="billing-workflow")
    ids = [
        ExecutionFactory(customer=customer, workflow=workflow, status=status).pk
        for _ in range(count)
    ]
    Execution.objects.filter(pk__in=ids).update(created_at=at)


# Outcome -------------------------------------------------------------------


def test_outcome_recorded(client, customer):
    execution = ExecutionFactory(customer=customer, status=Execution.Status.SUCCEEDED)
    response = client.post(
        f"/api/v1/executions/{execution.pk}/outcome",
        {"value_usd": "12.50"},
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["outcome_value_usd"] == "12.50"
    execution.refresh_from_db()
    assert execution.outcome_value_usd == D("12.50")


def test_outcome_of_running_execution_409(client, customer):
    execution = ExecutionFactory(customer=customer, status=Execution.Status.RUNNING)
    response = client.post(
        f"/api/v1/executions/{execution.pk}/outcome", {"value_usd": "1"}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "execution_not_finished"


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("12.50", "12.50"),
        ("12.5", "12.50"),
        ("0", "0.00"),
        ("007", "7.00"),
        (12, "12.00"),
        (0, "0.00"),
    ],
)
def test_outcome_plain_amounts_accepted(client, customer, value, stored):
    execution = ExecutionFactory(customer=customer, status=Execution.Status.SUCCEEDED)
    response = client.post(
        f"/api/v1/executions/{execution.pk}/outcome",
        {"value_usd": value},
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["outcome_value_usd"] == stored
    execution.refresh_from_db()
    assert execution.outcome_value_usd == D(stored)


@pytest.mark.parametrize(
    "value",
    [
        "-1",
        "1.005",
        "abc",
        None,
        12.5,
        0.1,
        12.0,
        "1_000",
        "\uff19",
        "\u0669",
        "-0",
        "+1",
        "1e3",
        " 12",
        "12\n",
        "1.",
        ".5",
        "1,000",
        "NaN",
        "Infinity",
        "",
        -1,
        True,
        [12],
        {"amount": "12"},
        "1" * 13,
    ],
)
def test_outcome_invalid_value(client, customer, value):
    execution = ExecutionFactory(customer=customer, status=Execution.Status.SUCCEEDED)
    response = client.post(
        f"/api/v1/executions/{execution.pk}/outcome",
        {"value_usd": value},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert response.json()["error"]["field"] == "value_usd"
    execution.refresh_from_db()
    assert execution.outcome_value_usd is None


# Usage ---------------------------------------------------------------------


def test_usage_counts_included_and_overage(client, customer, hybrid):
    may = datetime(2025, 5, 20, 12, tzinfo=UTC)
    add_executions(customer, 5, at=may)
    add_executions(customer, 1, at=may, status=Execution.Status.FAILED)
    response = client.get("/api/v1/usage?period=2025-05")
    assert response.status_code == 200
    body = response.json()
    assert body["period"] == "2025-05"
    assert body["period_start"] == "2025-05-15"
    assert body["period_end"] == "2025-06-15"
    assert body["plan"] == "hybrid"
    assert body["executions"]["total"] == 6
    assert body["executions"]["failed"] == 1
    assert body["billed_executions"] == 5
    assert body["included_executions"] == 3
    assert body["overage_executions"] == 2
    assert [line["kind"] for line in body["lines"]] == ["base", "executions", "overage"]
    assert body["total"] == "50.00"
    # The period has ended, so the projection is the total.
    assert body["projected_total"] == "50.00"
    assert body["closed"] is False


def test_usage_of_closed_period_reads_statement(client, customer, hybrid):
    add_executions(customer, 4, at=datetime(2025, 4, 20, tzinfo=UTC))
    statement_close_period(
        customer=customer, period_start=date(2025, 4, 15), period_end=date(2025, 5, 15)
    )
    # Runs added after the close do not change the closed figures.
    add_executions(customer, 4, at=datetime(2025, 4, 21, tzinfo=UTC))
    body = client.get("/api/v1/usage?period=2025-04").json()
    assert body["closed"] is True
    assert body["total"] == "49.50"


def test_usage_current_period_by_default(client, customer, hybrid):
    body = client.get("/api/v1/usage").json()
    start = date.fromisoformat(body["period_start"])
    end = date.fromisoformat(body["period_end"])
    assert start <= timezone.now().date() < end
    assert start.day == 15


def test_usage_without_subscription_is_calendar_month(client):
    body = client.get("/api/v1/usage?period=2025-02").json()
    assert body["period_start"] == "2025-02-01"
    assert body["period_end"] == "2025-03-01"
    assert body["plan"] is None
    assert body["lines"] == []
    assert body["total"] == "0.00"


@pytest.mark.parametrize(
    "period",
    ["2025-13", "2025-1", "May", "9999-12", "1999-12", "２０２５-05"],
)
def test_usage_invalid_period(client, period):
    response = client.get("/api/v1/usage", {"period": period})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "period"


# Plans and invoices --------------------------------------------------------


def test_plans_list_active_and_current(client, customer, hybrid):
    make_plan(
        "retired", Plan.BillingModel.SUBSCRIPTION, monthly_price=D("9"), is_active=False
    )
    make_plan(
        "usage",
        Plan.BillingModel.USAGE,
        usage_pricing=Plan.UsagePricing.PER_EXECUTION,
        price_per_execution=D("0.25"),
    )
    Plan.objects.filter(pk=hybrid.pk).update(is_active=False)
    body = client.get("/api/v1/plans").json()
    by_slug = {plan["slug"]: plan for plan in body["results"]}
    assert set(by_slug) == {"hybrid", "usage"}
    assert by_slug["hybrid"]["current"] is True
    assert by_slug["usage"]["current"] is False
    assert by_slug["usage"]["price_per_execution"] == "0.250000"


def test_invoices_with_stripe_url(client, customer, other_customer, hybrid):
    april = statement_close_period(
        customer=customer, period_start=date(2025, 4, 15), period_end=date(2025, 5, 15)
    )
    statement_close_period(
        customer=customer, period_start=date(2025, 5, 15), period_end=date(2025, 6, 15)
    )
    StripeInvoice.objects.create(
        stripe_id="in_1",
        customer=customer,
        number="A-1",
        status="paid",
        currency="usd",
        amount_due=4900,
        amount_paid=4900,
        period_start=datetime(2025, 4, 15, tzinfo=UTC),
        period_end=datetime(2025, 5, 15, tzinfo=UTC),
        hosted_invoice_url="https://invoice.stripe.test/i/1",
    )
    other_plan = make_plan(
        "basic", Plan.BillingModel.SUBSCRIPTION, monthly_price=D("5")
    )
    subscription_create(
        customer=other_customer, plan=other_plan, start=date(2025, 4, 15)
    )
    statement_close_period(
        customer=other_customer,
        period_start=date(2025, 4, 15),
        period_end=date(2025, 5, 15),
    )
    body = client.get("/api/v1/invoices").json()
    assert [row["period_start"] for row in body["results"]] == [
        "2025-05-15",
        "2025-04-15",
    ]
    newest, oldest = body["results"]
    assert newest["stripe_invoice"] is None
    assert oldest["id"] == april.pk
    assert oldest["total"] == "49.00"
    assert (
        oldest["stripe_invoice"]["hosted_invoice_url"]
        == "https://invoice.stripe.test/i/1"
    )
    assert "cost_total" not in oldest
    assert "margin" not in oldest


# Staff ---------------------------------------------------------------------


def test_staff_margins(staff_client, customer, hybrid):
    add_executions(customer, 2, at=datetime(2025, 5, 20, tzinfo=UTC))
    response = staff_client.get("/api/v1/staff/margins?period=2025-05")
    assert response.status_code == 200
    rows = response.json()["customers"]
    assert [row["customer"] for row in rows] == ["acme-api"]
    assert rows[0]["period_start"] == "2025-04-15"
    assert rows[0]["revenue"] == "49.00"


def test_staff_pricing_analysis_with_token(staff_user, customer):
    token = Token.objects.create(user=staff_user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    workflow = WorkflowFactory(slug="classify")
    for cost in ("0.10", "0.30"):
        ExecutionFactory(
            customer=customer,
            workflow=workflow,
            status=Execution.Status.SUCCEEDED,
            finished_at=timezone.now(),
            cost_usd=D(cost),
        )
    response = client.get("/api/v1/staff/pricing-analysis?workflow=classify&window=7")
    assert response.status_code == 200
    body = response.json()
    assert body["target_margin"] == "0.7000"
    [row] = body["rows"]
    assert row["workflow"] == "classify"
    assert row["executions"] == 2
    assert row["cost_mean"] == "0.200000"


@pytest.mark.parametrize(
    "query", ["window=0", "window=400", "target_margin=1", "workflow=a b"]
)
def test_staff_pricing_analysis_invalid(staff_client, query):
    response = staff_client.get(f"/api/v1/staff/pricing-analysis?{query}")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == query.split("=")[0]


def test_staff_alerts_open_by_default(staff_client, customer):
    open_alert = Alert.objects.create(
        kind=Alert.Kind.PERIOD_COST,
        dedupe_key="a",
        message="Cost high",
        customer=customer,
    )
    Alert.objects.create(
        kind=Alert.Kind.MARGIN,
        dedupe_key="b",
        message="Old",
        resolved_at=timezone.now(),
    )
    body = staff_client.get("/api/v1/staff/alerts").json()
    assert [row["id"] for row in body["results"]] == [open_alert.pk]
    assert body["results"][0]["customer"] == "acme-api"
    everything = staff_client.get("/api/v1/staff/alerts?state=all").json()
    assert len(everything["results"]) == 2
    by_kind = staff_client.get("/api/v1/staff/alerts?state=all&kind=margin").json()
    assert [row["kind"] for row in by_kind["results"]] == ["margin"]


def test_staff_endpoint_rejects_non_staff(django_user_model):
    user = django_user_model.objects.create_user(
        username="someone", password="pw-12345"
    )
    client = APIClient()
    client.force_login(user)
    response = client.get("/api/v1/staff/alerts")
    assert response.status_code == 403


def test_staff_endpoint_anonymous_401(db):
    response = APIClient().get("/api/v1/staff/margins")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_customers_see_no_other_customers_usage(client, other_customer):
    CustomerFactory(slug="initech")
    add_executions(other_customer, 3, at=datetime(2025, 5, 2, tzinfo=UTC))
    body = client.get("/api/v1/usage?period=2025-05").json()
    assert body["executions"]["total"] == 0


def test_staff_margins_before_subscription_start(staff_client, customer, hybrid):
    # The customer's subscription starts on April 15, so no period of it
    # contains April 1, and with no usage that month it has no row.
    response = staff_client.get("/api/v1/staff/margins?period=2025-04")
    assert response.status_code == 200
    assert response.json()["customers"] == []
