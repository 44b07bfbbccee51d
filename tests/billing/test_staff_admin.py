"""Staff pages: customer margin page, margin overview, plan analysis, analysts."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.utils import timezone

from agents.models import Execution, ModelPrice
from billing.alerts import alert_raise
from billing.models import Alert, Plan
from billing.permissions import ANALYST_GROUP, ensure_analyst_group
from billing.revenue import period_revenue_refresh
from billing.rollups import roll_up_usage
from billing.services import subscription_create
from tests.billing.usage import add_message, make_execution
from tests.factories import CustomerFactory, ExecutionFactory, WorkflowFactory

pytestmark = pytest.mark.django_db

D = Decimal
MARGINS_URL = "/admin/billing/customermargin/"
OVERVIEW_URL = "/admin/billing/margin-overview/"


def make_plan(slug, billing_model, **fields) -> Plan:
    plan = Plan(name=slug.title(), slug=slug, billing_model=billing_model, **fields)
    plan.full_clean()
    plan.save()
    return plan


@pytest.fixture
def book():
    """Acme and Globex pay 10.00 a month. Acme cost 12.50 today, Globex 0.40."""
    now = timezone.now()
    plan = make_plan("flat", "subscription", monthly_price=D("10.00"))
    review = WorkflowFactory(slug="review", model="claude-sonnet-4-6")
    triage = WorkflowFactory(slug="triage", model="claude-haiku-4-5")
    acme = CustomerFactory(slug="acme", name="Acme")
    globex = CustomerFactory(slug="globex", name="Globex")
    for customer in (acme, globex):
        subscription_create(customer=customer, plan=plan, start=now.date())
    for workflow, model, cost in (
        (review, "claude-sonnet-4-6", "12.00"),
        (triage, "claude-haiku-4-5", "0.50"),
    ):
        execution = make_execution(acme, workflow, now)
        add_message(execution, model, now, D(cost))
    execution = make_execution(globex, triage, now)
    add_message(execution, "claude-haiku-4-5", now, D("0.40"))
    roll_up_usage(full=True)
    period_revenue_refresh()
    return {"acme": acme, "globex": globex, "plan": plan}


def test_customer_page_shows_period_and_charts(admin_client, book):
    acme = book["acme"]
    alert_raise(
        kind=Alert.Kind.STALLED_EXECUTION,
        dedupe_key="test:acme",
        message="Execution 1 stalled.",
        customer_id=acme.pk,
    )
    response = admin_client.get(f"{MARGINS_URL}{acme.pk}/change/")
    assert response.status_code == 200
    content = response.content.decode()
    assert 'id="period-figures"' in content
    assert "12.5" in content  # cost so far
    assert "-2.5" in content  # margin 10.00 - 12.50
    assert content.count('class="chart"') == 2
    today = timezone.now().astimezone(UTC).date()
    assert f"{today}: claude-sonnet-4-6 12 USD" in content
    assert f"{today}: review 12 USD" in content
    assert "Execution 1 stalled." in content
    assert "No closed period yet." in content
    assert 'id="customer-executions"' in content


def test_customer_page_missing_redirects(admin_client, book):
    response = admin_client.get(f"{MARGINS_URL}999999/change/")
    assert response.status_code == 302


def test_customer_page_without_usage(admin_client):
    customer = CustomerFactory(name="Quiet")
    content = admin_client.get(f"{MARGINS_URL}{customer.pk}/change/").content.decode()
    assert "No cost rolled up in this period yet." in content
    assert "No alerts for this customer." in content
    assert "No executions yet." in content


def test_alerting_filter(admin_client, book):
    alert_raise(
        kind=Alert.Kind.STALLED_EXECUTION,
        dedupe_key="test:globex",
        message="Stalled.",
        customer_id=book["globex"].pk,
    )
    with_alerts = admin_client.get(MARGINS_URL, {"alerting": "yes"}).content.decode()
    assert ">Globex<" in with_alerts
    assert ">Acme<" not in with_alerts
    without = admin_client.get(MARGINS_URL, {"alerting": "no"}).content.decode()
    assert ">Acme<" in without
    assert ">Globex<" not in without


def test_margin_overview(admin_client, book):
    response = admin_client.get(OVERVIEW_URL)
    assert response.status_code == 200
    caption, bottom, _ = response.context["customer_tables"][0]
    assert caption == "Lowest margins"
    assert [customer.slug for customer in bottom] == ["acme", "globex"]
    assert bottom[0].period_margin == D("-2.5")
    workflows = dict(
        (row.key, row) for row in response.context["allocation_tables"][0][1]
    )
    assert workflows["review"].cost == D("12")
    trend = response.context["trend"]
    assert len(trend) == 6
    assert trend[-1]["cost"] == D("12.9")
    assert trend[-1]["revenue"] == D("20.00")
    content = response.content.decode()
    assert 'id="margin-trend"' in content
    assert 'class="chart"' in content


def test_overview_linked_from_margin_list(admin_client, book):
    assert OVERVIEW_URL in admin_client.get(MARGINS_URL).content.decode()


def test_plan_page_shows_analysis(admin_client, book):
    usage_plan = make_plan(
        "per-run", "usage", usage_pricing="per_execution", price_per_execution=D("0.50")
    )
    workflow = WorkflowFactory(slug="summarise", model="claude-haiku-4-5")
    now = timezone.now()
    for cost in ("0.10", "0.30"):
        ExecutionFactory(
            customer_id=book["globex"].pk,
            workflow=workflow,
            status=Execution.Status.SUCCEEDED,
            cost_usd=D(cost),
            finished_at=now,
        )
    response = admin_client.get(f"/admin/billing/plan/{usage_plan.pk}/change/")
    assert response.status_code == 200
    rows = {row["workflow"]: row for row in response.context["analysis_rows"]}
    summarise = rows["summarise"]
    assert summarise["cost_mean"] == "0.200000"
    assert summarise["plan_revenue"] == "0.500000"
    assert summarise["plan_margin_percent"] == D("60.0")
    assert summarise["price_per_execution"] == "0.67"
    assert 'id="plan-analysis"' in response.content.decode()


def test_plan_page_without_executions(admin_client):
    plan = make_plan("lonely", "subscription", monthly_price=D("5.00"))
    content = admin_client.get(
        f"/admin/billing/plan/{plan.pk}/change/"
    ).content.decode()
    assert "No finished executions in the last 30 days" in content


# Executions and prices ----------------------------------------------------


def test_execution_list_model_filter_and_difference(admin_client):
    ExecutionFactory(
        requested_model="claude-opus-4-6",
        cost_usd=D("0.50"),
        reported_cost_usd=D("0.45"),
        cost_difference_usd=D("0.05"),
    )
    ExecutionFactory(requested_model="claude-haiku-4-5")
    url = "/admin/agents/execution/"
    content = admin_client.get(url, {"requested_model": "claude-opus-4-6"}).content
    content = content.decode()
    assert "claude-opus-4-6" in content
    assert "claude-haiku-4-5</td>" not in content
    assert "column-difference_display" in content
    assert ">0.05<" in content


def test_reprice_action_prices_history(admin_client):
    arrived = datetime(2026, 12, 1, 12, tzinfo=UTC)
    execution = ExecutionFactory(requested_model="claude-test-9", unpriced=True)
    add_message(
        execution,
        "claude-test-9",
        arrived,
        input_tokens=1000,
        output_tokens=2000,
    )
    price = ModelPrice.objects.create(
        model="claude-test-9",
        valid_from=arrived - timedelta(days=1),
        input_per_mtok=D("2"),
        output_per_mtok=D("10"),
        cache_write_5m_per_mtok=D("2.5"),
        cache_write_1h_per_mtok=D("4"),
        cache_read_per_mtok=D("0.2"),
    )
    response = admin_client.post(
        "/admin/agents/modelprice/",
        {"action": "reprice_unpriced_history", "_selected_action": [price.pk]},
    )
    texts = [str(message) for message in get_messages(response.wsgi_request)]
    assert texts == ["claude-test-9: 1 messages priced, 1 executions updated."]
    execution.refresh_from_db()
    # 1,000 input at $2 and 2,000 output at $10 per million tokens.
    assert execution.cost_usd == D("0.022")
    assert execution.unpriced is False


# Analysts -----------------------------------------------------------------


@pytest.fixture
def analyst_client(client, django_user_model):
    user = django_user_model.objects.create_user(
        "analyst", password="secret", is_staff=True
    )
    user.groups.add(ensure_analyst_group())
    client.force_login(user)
    return client


def test_analyst_group_is_view_only():
    group = ensure_analyst_group()
    codenames = set(group.permissions.values_list("codename", flat=True))
    assert "view_customermargin" in codenames
    assert "view_plan" in codenames
    assert all(codename.startswith("view_") for codename in codenames)
    # Running it twice keeps one group with the same permissions.
    ensure_analyst_group()
    assert Group.objects.filter(name=ANALYST_GROUP).count() == 1


def test_analyst_sees_margins(analyst_client, book):
    assert analyst_client.get(MARGINS_URL).status_code == 200
    assert analyst_client.get(OVERVIEW_URL).status_code == 200
    assert analyst_client.get("/admin/billing/pricing-analysis/").status_code == 200
    acme = book["acme"]
    assert analyst_client.get(f"{MARGINS_URL}{acme.pk}/change/").status_code == 200


def test_analyst_cannot_change_plans_or_prices(analyst_client, book):
    plan = book["plan"]
    url = f"/admin/billing/plan/{plan.pk}/change/"
    assert analyst_client.get(url).status_code == 200
    response = analyst_client.post(url, {"name": "Cheaper", "monthly_price": "1.00"})
    assert response.status_code == 403
    plan.refresh_from_db()
    assert plan.monthly_price == D("10.00")
    assert analyst_client.get("/admin/agents/modelprice/add/").status_code == 403
    assert analyst_client.get("/admin/billing/plan/add/").status_code == 403


def test_analyst_cannot_reprice(analyst_client):
    price = ModelPrice.objects.create(
        model="claude-test-9",
        valid_from=timezone.now(),
        input_per_mtok=D("2"),
        output_per_mtok=D("10"),
        cache_write_5m_per_mtok=D("2.5"),
        cache_write_1h_per_mtok=D("4"),
        cache_read_per_mtok=D("0.2"),
    )
    response = analyst_client.post(
        "/admin/agents/modelprice/",
        {"action": "reprice_unpriced_history", "_selected_action": [price.pk]},
    )
    # The action is not offered without the change permission.
    assert response.status_code in (200, 302)
    assert b"messages priced" not in response.content


def test_subscription_cancel_actions(admin_client, book):
    acme, globex = book["acme"], book["globex"]
    url = "/admin/billing/subscription/"
    acme_subscription = acme.subscriptions.get()
    globex_subscription = globex.subscriptions.get()
    admin_client.post(
        url,
        {"action": "cancel_at_period_end", "_selected_action": [acme_subscription.pk]},
    )
    response = admin_client.post(
        url, {"action": "cancel_now", "_selected_action": [globex_subscription.pk]}
    )
    texts = [str(message) for message in get_messages(response.wsgi_request)]
    today = timezone.now().astimezone(UTC).date()
    assert texts[-1] == (
        f"Subscription {globex_subscription.pk} (Globex) ends on {today}."
    )
    acme_subscription.refresh_from_db()
    globex_subscription.refresh_from_db()
    assert acme_subscription.cancel_at_period_end
    assert acme_subscription.status == "active"
    assert globex_subscription.status == "canceled"
    assert globex_subscription.ended_on == today
    # Status is no longer editable by hand, so no end day can be skipped.
    page = admin_client.get(f"{url}{acme_subscription.pk}/change/").content.decode()
    assert 'name="status"' not in page
