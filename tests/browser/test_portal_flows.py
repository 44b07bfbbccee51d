"""Customer flows in a real browser: sign-up, a live run, API keys."""

import re
from decimal import Decimal

import pytest
from django.core import mail
from django.utils import timezone
from playwright.sync_api import expect

from agents.models import Execution
from agents.simulator import SimulatorServer
from billing.models import Plan
from billing.rollups import roll_up_usage
from customers.models import ApiKey, Customer, Membership
from portal import services
from tests.agents.workers import CeleryWorker
from tests.factories import WorkflowFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-long-Passphrase-42"


@pytest.fixture
def plan():
    plan = Plan(
        name="Team",
        slug="team",
        billing_model=Plan.BillingModel.HYBRID,
        monthly_price=Decimal("49.00"),
        included_executions=100,
        overage_price=Decimal("0.40"),
    )
    plan.full_clean()
    plan.save()
    return plan


@pytest.fixture
def workflow():
    return WorkflowFactory(
        slug="code-review",
        name="Code review",
        model="claude-sonnet-4-6",
        allowed_tools=["Read"],
    )


def test_signup_and_live_execution(page, screenshot, plan, workflow, tmp_path):
    page.goto("/portal/signup/")
    page.get_by_label("Company name").fill("Initech")
    page.get_by_label("Work email").fill("peter@initech.example")
    page.locator("#id_password1").fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_label("Team: 49 USD a month with 100 executions included").check()
    screenshot("signup")
    page.get_by_role("button", name="Create account").click()

    expect(page).to_have_url(re.compile(r"/portal/$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Initech")
    expect(page.locator("#executions-used")).to_contain_text("0 of 100 included")
    expect(page.locator("#total-so-far")).to_contain_text("49.00 USD")
    expect(page.get_by_text("Confirm your email address")).to_be_visible()
    assert Membership.objects.get().customer.name == "Initech"

    with SimulatorServer(stall_seconds=30) as simulator:
        with CeleryWorker(tmp_path, simulator.url, concurrency=1):
            page.get_by_role("link", name="Start an execution").click()
            page.get_by_label("Workflow").select_option(label="Code review")
            page.get_by_label("Input").fill("[sim:tool-loop] Review the change.")
            page.get_by_role("button", name="Start").click()

            expect(page).to_have_url(re.compile(r"/portal/executions/\d+/$"))
            # A marker that a reload would erase: the rows below must come
            # from the event stream, not from reloading the page.
            page.evaluate("window.liveMarker = true")
            expect(page.locator("#stream-state")).to_have_text(
                re.compile("live|finished"), timeout=30_000
            )
            expect(page.locator("#messages tbody tr")).to_have_count(4, timeout=90_000)
            expect(page.locator("#stream-state")).to_have_text(
                "finished", timeout=60_000
            )
            expect(page.locator("#execution-status")).to_have_text("Succeeded")
            assert page.evaluate("window.liveMarker") is True

    execution = Execution.objects.get()
    assert execution.status == Execution.Status.SUCCEEDED
    expect(page.locator("[data-summary=output_tokens]")).to_have_text(
        f"{execution.output_tokens:,}"
    )
    body = page.locator("body").inner_text()
    assert "cost" not in body.lower()
    screenshot("execution")

    page.get_by_role("link", name="Executions", exact=True).click()
    expect(page.locator("#executions tbody tr")).to_have_count(1)
    expect(page.locator("#executions")).to_contain_text("Succeeded")
    screenshot("executions")

    # The rollup job runs every five minutes; run it now for the charts.
    roll_up_usage(full=True)
    page.get_by_role("link", name="Dashboard").click()
    expect(page.locator("#executions-used")).to_contain_text("1 of 100 included")
    screenshot("dashboard")


def test_verify_email_then_create_and_revoke_key(page, screenshot, plan, live_server):
    membership = services.signup_create(
        email="owner@example.com",
        password=PASSWORD,
        company_name="Example Corp",
        plan=plan,
    )
    mail.outbox.clear()
    services.verification_email_send(user=membership.user, base_url=live_server.url)
    link = re.search(r"(http://\S+)", mail.outbox[0].body).group(1)

    page.goto(link)
    expect(page).to_have_url(re.compile(r"/portal/login/"))
    expect(page.get_by_text("Your email address is confirmed.")).to_be_visible()
    screenshot("login")
    page.get_by_label("Email").fill("owner@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/portal/$"))
    expect(page.get_by_text("Confirm your email address")).to_have_count(0)

    page.get_by_role("link", name="API keys").click()
    expect(page.get_by_text("No API keys yet.")).to_be_visible()
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_text("Give the key a name.")).to_be_visible()
    page.get_by_label("Name").fill("CI pipeline")
    page.get_by_role("button", name="Create key").click()

    secret = page.locator("#new-key-value").inner_text()
    api_key = ApiKey.objects.get()
    assert secret.startswith(api_key.prefix + "_")
    assert api_key.customer == Customer.objects.get(slug="example-corp")
    expect(page.locator("#api-keys")).to_contain_text("CI pipeline")
    expect(page.locator("#api-keys")).to_contain_text("never")
    screenshot("api-keys")

    page.goto("/portal/api-keys/")
    expect(page.locator("#new-key-value")).to_have_count(0)
    page.get_by_role("button", name="Revoke CI pipeline").click()
    expect(page.get_by_text("is revoked")).to_be_visible()
    expect(page.locator(f"#key-{api_key.pk}")).to_contain_text("revoked")
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    assert api_key.revoked_at <= timezone.now()


def test_pages_work_without_javascript(browser, live_server, plan, workflow):
    membership = services.signup_create(
        email="nojs@example.com", password=PASSWORD, company_name="No JS", plan=plan
    )
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    page = context.new_page()
    try:
        page.goto("/portal/login/")
        page.get_by_label("Email").fill(membership.user.email)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("No JS")
        for name in ["Executions", "Invoices", "Team"]:
            page.get_by_role("link", name=name, exact=True).click()
            expect(page.get_by_role("heading", level=1)).to_have_text(name)
        page.get_by_role("button", name="Log out").click()
        expect(page).to_have_url(re.compile(r"/portal/login/"))
    finally:
        context.close()
