from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.utils import timezone

from agents.models import Execution
from tests.factories import CustomerFactory, ExecutionFactory, WorkflowFactory

pytestmark = pytest.mark.django_db

ANALYSIS_URL = "/admin/billing/pricing-analysis/"
OUTCOME_URL = "/admin/billing/record-outcome/"
EXECUTIONS_URL = "/admin/agents/execution/"


def finished_execution(workflow, customer, cost: Decimal, **fields) -> Execution:
    now = timezone.now()
    defaults = {
        "status": Execution.Status.SUCCEEDED,
        "started_at": now - timedelta(minutes=1),
        "finished_at": now,
        "num_turns": 3,
        "cost_usd": cost,
    }
    return ExecutionFactory(
        workflow=workflow, customer=customer, **{**defaults, **fields}
    )


@pytest.fixture
def twenty_executions():
    """20 succeeded executions of `review` today, $0.05 each, for one customer."""
    workflow = WorkflowFactory(slug="review", model="claude-sonnet-4-6")
    customer = CustomerFactory(slug="acme")
    return [finished_execution(workflow, customer, Decimal("0.05")) for _ in range(20)]


def test_pricing_analysis_shows_prices(admin_client, twenty_executions):
    response = admin_client.get(ANALYSIS_URL)
    assert response.status_code == 200
    rows = response.context["rows"]
    assert len(rows) == 1
    row = rows[0]
    assert row["workflow"] == "review"
    assert row["model"] == "claude-sonnet-4-6"
    assert row["executions"] == 20
    assert row["unpriced"] == 0
    assert row["cost_mean"] == "0.050000"
    assert row["cost_median"] == "0.050000"
    assert row["cost_p95"] == "0.050000"
    assert row["turns_mean"] == "3.0"
    # 0.05 / (1 - 0.7) = 0.1666..., rounded half-up to cents.
    assert row["price_per_execution"] == "0.17"
    # 20 x 0.05 over the default 30 days is 1.00 a month: 1.00 / 0.3.
    assert row["subscription_per_month"] == "3.33"
    content = response.content.decode()
    assert '<td class="price-per-execution">0.17</td>' in content
    assert '<td class="subscription">3.33</td>' in content


def test_pricing_analysis_filters_workflow(admin_client, twenty_executions):
    other = WorkflowFactory(slug="classify", model="claude-haiku-4-5")
    finished_execution(other, CustomerFactory(slug="globex"), Decimal("0.01"))
    today = timezone.now().date()
    query = {
        "start": (today - timedelta(days=1)).isoformat(),
        "end": today.isoformat(),
        "target_margin": "0.5",
        "workflow": "classify",
    }
    rows = admin_client.get(ANALYSIS_URL, query).context["rows"]
    assert [row["workflow"] for row in rows] == ["classify"]
    assert rows[0]["price_per_execution"] == "0.02"


def test_pricing_analysis_empty_state(admin_client):
    response = admin_client.get(ANALYSIS_URL)
    assert response.status_code == 200
    assert response.context["rows"] == []
    assert "No finished executions match" in response.content.decode()


@pytest.mark.parametrize("margin", ["1", "1.5", "-0.1"])
def test_pricing_analysis_rejects_bad_margin(admin_client, margin):
    today = timezone.now().date()
    query = {
        "start": today.isoformat(),
        "end": today.isoformat(),
        "target_margin": margin,
    }
    response = admin_client.get(ANALYSIS_URL, query)
    assert response.status_code == 200
    assert response.context["rows"] is None
    errors = response.context["form"].errors["target_margin"]
    assert errors == [
        f"Invalid target margin {margin}: expected at least 0 and below 1, "
        "for example 0.7 for 70%."
    ]


def test_pricing_analysis_rejects_end_before_start(admin_client):
    query = {"start": "2026-02-10", "end": "2026-02-01", "target_margin": "0.7"}
    response = admin_client.get(ANALYSIS_URL, query)
    assert response.context["rows"] is None
    assert response.context["form"].non_field_errors() == [
        "Invalid window: the end date 2026-02-01 is before the start date 2026-02-10."
    ]


def test_pricing_analysis_redirects_anonymous(client):
    response = client.get(ANALYSIS_URL)
    assert response.status_code == 302
    assert response.url.startswith("/admin/login/")


def test_pricing_analysis_redirects_non_staff(client, django_user_model):
    user = django_user_model.objects.create_user("viewer", password="secret")
    client.force_login(user)
    response = client.get(ANALYSIS_URL)
    assert response.status_code == 302
    assert response.url.startswith("/admin/login/")


def test_pricing_analysis_needs_view_plan(client, django_user_model):
    user = django_user_model.objects.create_user(
        "staff", password="secret", is_staff=True
    )
    client.force_login(user)
    assert client.get(ANALYSIS_URL).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_plan"))
    assert client.get(ANALYSIS_URL).status_code == 200


def test_plan_changelist_links_analysis(admin_client):
    content = admin_client.get("/admin/billing/plan/").content.decode()
    assert f'href="{ANALYSIS_URL}"' in content


def test_outcome_action_redirects_to_form(admin_client, twenty_executions):
    first, second = twenty_executions[:2]
    response = admin_client.post(
        EXECUTIONS_URL,
        {
            "action": "record_outcome",
            "_selected_action": [second.pk, first.pk],
        },
    )
    assert response.status_code == 302
    assert response.url == f"{OUTCOME_URL}?ids={first.pk},{second.pk}"


def test_outcome_form_records_values(admin_client, twenty_executions):
    first, second = twenty_executions[:2]
    running = ExecutionFactory(
        workflow=first.workflow,
        customer=first.customer,
        status=Execution.Status.RUNNING,
    )
    url = f"{OUTCOME_URL}?ids={first.pk},{second.pk},{running.pk}"
    assert admin_client.get(url).status_code == 200

    response = admin_client.post(url, {"value": "125.50"})

    assert response.status_code == 302
    assert response.url == EXECUTIONS_URL
    for execution in (first, second):
        execution.refresh_from_db()
        assert execution.outcome_value_usd == Decimal("125.50")
    running.refresh_from_db()
    assert running.outcome_value_usd is None
    texts = [str(message) for message in get_messages(response.wsgi_request)]
    assert texts == [
        f"Execution {running.pk}: outcome not recorded. Execution {running.pk} is "
        "running; record an outcome once it has finished.",
        "Outcome value 125.50 USD recorded on 2 executions.",
    ]


def test_outcome_form_rejects_negative_value(admin_client, twenty_executions):
    execution = twenty_executions[0]
    response = admin_client.post(f"{OUTCOME_URL}?ids={execution.pk}", {"value": "-1"})
    assert response.status_code == 200
    assert "value" in response.context["form"].errors
    execution.refresh_from_db()
    assert execution.outcome_value_usd is None


def test_outcome_form_rejects_bad_ids(admin_client):
    response = admin_client.get(f"{OUTCOME_URL}?ids=1,x")
    assert response.status_code == 302
    assert response.url == EXECUTIONS_URL


def test_outcome_form_needs_change_execution(client, django_user_model):
    user = django_user_model.objects.create_user(
        "staff", password="secret", is_staff=True
    )
    client.force_login(user)
    assert client.get(f"{OUTCOME_URL}?ids=1").status_code == 403
