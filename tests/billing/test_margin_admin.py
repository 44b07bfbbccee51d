from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import Plan
from billing.rollups import roll_up_usage
from billing.services import subscription_create
from tests.billing.usage import add_message, make_execution
from tests.factories import CustomerFactory, WorkflowFactory

pytestmark = pytest.mark.django_db

URL = "/admin/billing/customermargin/"
# Index of the cost column in list_display; the view has no actions, so no
# checkbox column comes first.
COST_COLUMN = 3


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


def names_in_order(content: str) -> list[str]:
    names = ["Cheap", "Dear", "None"]
    return sorted(names, key=lambda name: content.index(f">{name}<"))


def test_margin_admin_renders_for_staff(admin_client, customers):
    response = admin_client.get(URL)
    assert response.status_code == 200
    content = response.content.decode()
    assert "Cost this month (USD)" in content
    # Dear: revenue 1.00, cost 5.00, so margin -4 in red.
    assert '<span style="color: #ba2121;">-4</span>' in content
    assert "-400.0000%" in content


def test_margin_admin_sorts_by_cost(admin_client, customers):
    ascending = admin_client.get(URL, {"o": str(COST_COLUMN)}).content.decode()
    descending = admin_client.get(URL, {"o": f"-{COST_COLUMN}"}).content.decode()
    assert names_in_order(ascending) == ["None", "Cheap", "Dear"]
    assert names_in_order(descending) == ["Dear", "Cheap", "None"]


def test_margin_admin_unprofitable_filter(admin_client, customers):
    content = admin_client.get(URL, {"unprofitable": "yes"}).content.decode()
    assert ">Dear<" in content
    assert ">Cheap<" not in content


def test_margin_admin_is_read_only(admin_client, customers):
    assert admin_client.get(URL + "add/").status_code == 403


def test_margin_admin_rejects_non_staff(client, django_user_model, customers):
    user = django_user_model.objects.create_user("viewer", password="secret")
    client.force_login(user)
    response = client.get(URL)
    assert response.status_code == 302
