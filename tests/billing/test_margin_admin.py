from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import PeriodRevenue, Plan
from billing.revenue import period_revenue_refresh
from billing.rollups import roll_up_usage
from billing.services import subscription_create
from customers.models import Customer
from tests.billing.usage import add_message, make_execution
from tests.factories import CustomerFactory, WorkflowFactory

pytestmark = pytest.mark.django_db

URL = "/admin/billing/customermargin/"
# Indexes of columns for the "o" (order) parameter; the action checkbox
# column comes first.
COST_COLUMN = 5
MARGIN_COLUMN = 6


@pytest.fixture
def customers():
    """Three customers this month: cheap (0.10), dear (5.00) and none (no usage)."""
    now = timezone.now()
    workflow = WorkflowFactory(slug="review", model="claude-sonnet-4-6")
    plan = Plan(
        name="Flat",
        slug="flat",
        billing_model=Plan.BillingModel.SUBSCRIPTION,
        monthly_price=Decimal("1.00"),
    )
    plan.full_clean()
    plan.save()
    for slug, cost in (("cheap", "0.10"), ("dear", "5.00"), ("none", None)):
        customer = CustomerFactory(slug=slug, name=slug.title())
        subscription_create(customer=customer, plan=plan, start=now.date())
        if cost is not None:
            execution = make_execution(customer, workflow, now)
            add_message(execution, workflow.model, now, Decimal(cost))
    roll_up_usage(full=True)
    period_revenue_refresh()


def names_in_order(content: str) -> list[str]:
    names = ["Cheap", "Dear", "None"]
    return sorted(names, key=lambda name: content.index(f">{name}<"))


def test_margin_admin_renders_for_staff(admin_client, customers):
    response = admin_client.get(URL)
    assert response.status_code == 200
    content = response.content.decode()
    assert "Period cost (USD)" in content
    # Dear: revenue 1.00, cost 5.00, so margin -4 in red.
    assert '<span style="color: #ba2121;">-4</span>' in content
    assert "-400.00%" in content


def test_margin_admin_sorts_by_cost(admin_client, customers):
    ascending = admin_client.get(URL, {"o": str(COST_COLUMN)}).content.decode()
    descending = admin_client.get(URL, {"o": f"-{COST_COLUMN}"}).content.decode()
    assert names_in_order(ascending) == ["None", "Cheap", "Dear"]
    assert names_in_order(descending) == ["Dear", "Cheap", "None"]


def test_margin_admin_sorts_by_margin(admin_client, customers):
    ascending = admin_client.get(URL, {"o": str(MARGIN_COLUMN)}).content.decode()
    # Margins: Dear -4.00, Cheap 0.90, None 1.00.
    assert names_in_order(ascending) == ["Dear", "Cheap", "None"]


def test_margin_admin_unprofitable_filter(admin_client, customers):
    content = admin_client.get(URL, {"unprofitable": "yes"}).content.decode()
    assert ">Dear<" in content
    assert ">Cheap<" not in content
    content = admin_client.get(URL, {"unprofitable": "no"}).content.decode()
    assert ">Dear<" not in content
    assert ">Cheap<" in content


def test_margin_admin_recompute_action(admin_client, customers):
    PeriodRevenue.objects.all().delete()
    content = admin_client.get(URL).content.decode()
    assert "never" in content
    ids = list(Customer.objects.values_list("pk", flat=True))
    response = admin_client.post(
        URL, {"action": "recompute_revenue", "_selected_action": ids}, follow=True
    )
    assert "Recomputed the period revenue of 3 customers." in response.content.decode()
    assert PeriodRevenue.objects.count() == 3


def test_margin_admin_is_read_only(admin_client, customers):
    assert admin_client.get(URL + "add/").status_code == 403


def test_margin_admin_rejects_non_staff(client, django_user_model, customers):
    user = django_user_model.objects.create_user("viewer", password="secret")
    client.force_login(user)
    response = client.get(URL)
    assert response.status_code == 302
