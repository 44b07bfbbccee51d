"""Staff flows in the admin, in a real browser."""

import re
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from billing.models import Alert, Plan
from billing.revenue import period_revenue_refresh
from billing.rollups import roll_up_usage
from billing.services import subscription_create
from tests.billing.usage import add_message, make_execution
from tests.factories import CustomerFactory, WorkflowFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

STAFF_PASSWORD = "staff-Passphrase-19"


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_superuser(
        "staff", "staff@example.com", STAFF_PASSWORD
    )


def staff_login(page):
    page.goto("/admin/login/")
    page.get_by_label("Username").fill("staff")
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/admin/$"))


def test_staff_sorts_customers_by_margin(page, screenshot, staff):
    now = timezone.now()
    workflow = WorkflowFactory(slug="review", model="claude-sonnet-4-6")
    plan = Plan(
        name="Flat",
        slug="flat",
        billing_model=Plan.BillingModel.SUBSCRIPTION,
        monthly_price=Decimal("10.00"),
    )
    plan.full_clean()
    plan.save()
    # Margins: Loss 10 - 12 = -2, Thin 10 - 9 = 1, Fat 10 - 1 = 9.
    for name, cost in (("Thin", "9.00"), ("Fat", "1.00"), ("Loss", "12.00")):
        customer = CustomerFactory(slug=name.lower(), name=name)
        subscription_create(customer=customer, plan=plan, start=now.date())
        execution = make_execution(customer, workflow, now)
        add_message(execution, workflow.model, now, Decimal(cost))
    roll_up_usage(full=True)
    period_revenue_refresh()

    staff_login(page)
    page.goto("/admin/billing/customermargin/")
    rows = page.locator("#result_list tbody tr th")
    page.locator("#result_list thead").get_by_role(
        "link", name="Margin", exact=True
    ).click()
    expect(rows).to_have_text(["Loss", "Thin", "Fat"])
    screenshot("staff-margins")

    page.locator("#result_list thead th.column-margin a.toggle").click()
    expect(rows).to_have_text(["Fat", "Thin", "Loss"])


def test_staff_acknowledges_alert(page, screenshot, staff):
    customer = CustomerFactory(slug="acme", name="Acme")
    alert = Alert.objects.create(
        kind=Alert.Kind.MARGIN,
        severity=Alert.Severity.WARNING,
        customer=customer,
        message="Acme's margin is below 20% this period.",
        dedupe_key="margin:acme:test",
    )

    staff_login(page)
    page.goto("/admin/billing/alert/")
    page.locator(f"input[name=_selected_action][value='{alert.pk}']").check()
    page.locator("select[name=action]").select_option("acknowledge")
    page.get_by_role("button", name="Go").click()

    expect(page.locator("ul.messagelist")).to_contain_text("Alerts acknowledged: 1.")
    screenshot("staff-alerts")
    alert.refresh_from_db()
    assert alert.acknowledged_at is not None
    assert alert.acknowledged_by == staff
