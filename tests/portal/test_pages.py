import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from agents.models import ApiMessage, Execution
from billing.models import PeriodStatement, StripeInvoice
from customers.api_keys import api_key_create
from customers.models import ApiKey, Invitation, Membership
from customers.services import invitation_accept, invitation_create
from tests.factories import ExecutionFactory, WorkflowFactory
from tests.portal.conftest import sign_up

pytestmark = pytest.mark.django_db

# A cost no page may show: distinctive digits that appear nowhere else.
SECRET_COST = Decimal("0.98765432101234")


def add_execution(customer, **fields):
    fields.setdefault("cost_usd", SECRET_COST)
    fields.setdefault("reported_cost_usd", SECRET_COST)
    return ExecutionFactory(customer=customer, **fields)


def test_pages_need_login(client):
    response = client.get(reverse("portal:dashboard"))

    assert response.status_code == 302
    assert response.url.startswith(reverse("portal:login"))


def test_staff_without_customer_gets_403(admin_client):
    response = admin_client.get(reverse("portal:dashboard"))

    assert response.status_code == 403
    assert "This login has no customer account" in response.content.decode()


def test_root_redirects_to_portal(client):
    assert client.get("/").url == "/portal/"


def test_dashboard_shows_period_figures(owner_client, owner):
    for _ in range(3):
        add_execution(owner.customer, status=Execution.Status.SUCCEEDED)
    add_execution(owner.customer, status=Execution.Status.FAILED)

    response = owner_client.get(reverse("portal:dashboard"))
    page = response.content.decode()

    assert response.status_code == 200
    executions_used = re.search(r'id="executions-used">(.*?)</div>', page, re.S)
    assert "3" in executions_used.group(1)
    assert "of 2 included" in executions_used.group(1)
    assert "4 started this period" in page
    assert re.search(r'id="overage">\s*0\.50 USD', page)
    assert re.search(r'id="total-so-far">\s*49\.50 USD', page)
    assert "Executions above the included ones" in page
    assert "<svg" in page


def test_dashboard_never_shows_cost(owner_client, owner):
    execution = add_execution(owner.customer, status=Execution.Status.SUCCEEDED)
    ApiMessage.objects.create(
        execution=execution,
        message_id="msg_1",
        sequence=1,
        model="claude-sonnet-4-6",
        cost_usd=SECRET_COST,
        arrived_at=timezone.now(),
    )

    for name in ["dashboard", "execution-list", "invoices"]:
        page = owner_client.get(reverse(f"portal:{name}")).content.decode()
        assert "0.98765" not in page, name
        assert not re.search(r"\bmargin\b", page, re.I), name
    detail = owner_client.get(reverse("portal:execution-detail", args=[execution.pk]))
    assert "0.98765" not in detail.content.decode()


def test_dashboard_budget_bar_shows_percent_only(owner_client, owner):
    owner.customer.monthly_budget_usd = Decimal("2.00")
    owner.customer.save()
    add_execution(owner.customer, cost_usd=Decimal("1.70"))

    page = owner_client.get(reverse("portal:dashboard")).content.decode()

    assert "85% of this period's spending limit used" in page
    assert "1.70" not in page
    assert "2.00" not in page


def test_dashboard_empty_state(owner_client):
    page = owner_client.get(reverse("portal:dashboard")).content.decode()

    assert "No executions yet" in page
    assert "has no spending limit" in page


def test_execution_list_filters(owner_client, owner):
    review = WorkflowFactory(slug="review", name="Review")
    classify = WorkflowFactory(slug="classify", name="Classify")
    wanted = add_execution(
        owner.customer, workflow=review, status=Execution.Status.FAILED
    )
    add_execution(owner.customer, workflow=review, status=Execution.Status.SUCCEEDED)
    add_execution(owner.customer, workflow=classify, status=Execution.Status.FAILED)

    response = owner_client.get(
        reverse("portal:execution-list"),
        {"status": "failed", "workflow": review.pk},
    )

    assert [row.pk for row in response.context["page"].object_list] == [wanted.pk]


def test_execution_list_date_filter_errors(owner_client):
    response = owner_client.get(
        reverse("portal:execution-list"),
        {"created_from": "2026-05-02", "created_to": "2026-05-01"},
    )

    assert "The end date is before the start date." in response.content.decode()


def test_execution_list_paginates(owner_client, owner):
    workflow = WorkflowFactory()
    Execution.objects.bulk_create(
        Execution(
            customer=owner.customer,
            workflow=workflow,
            prompt="p",
            requested_model=workflow.model,
        )
        for _ in range(30)
    )

    first = owner_client.get(reverse("portal:execution-list"))
    second = owner_client.get(
        reverse("portal:execution-list"), {"page": 2, "status": ""}
    )

    assert len(first.context["page"].object_list) == 25
    assert len(second.context["page"].object_list) == 5
    assert "Page 2 of 2" in second.content.decode()
    assert "page=2" in first.content.decode()


def test_execution_list_empty_states(owner_client):
    empty = owner_client.get(reverse("portal:execution-list")).content.decode()
    filtered = owner_client.get(
        reverse("portal:execution-list"), {"status": "failed"}
    ).content.decode()

    assert "Start your first one" in empty
    assert "No execution matches these filters" in filtered


def test_other_customers_execution_is_404(owner_client, hybrid_plan):
    other = sign_up(hybrid_plan, email="other@example.com", company="Other")
    execution = add_execution(other.customer)

    detail = owner_client.get(reverse("portal:execution-detail", args=[execution.pk]))
    events = owner_client.get(reverse("portal:execution-events", args=[execution.pk]))
    listed = owner_client.get(reverse("portal:execution-list"))

    assert detail.status_code == 404
    assert events.status_code == 404
    assert list(listed.context["page"].object_list) == []


def test_execution_detail_without_javascript_refreshes(owner_client, owner):
    running = add_execution(owner.customer, status=Execution.Status.RUNNING)
    done = add_execution(owner.customer, status=Execution.Status.SUCCEEDED)

    running_page = owner_client.get(
        reverse("portal:execution-detail", args=[running.pk])
    ).content.decode()
    done_page = owner_client.get(
        reverse("portal:execution-detail", args=[done.pk])
    ).content.decode()

    assert 'http-equiv="refresh"' in running_page
    assert f'data-events-url="/portal/executions/{running.pk}/events"' in running_page
    assert 'http-equiv="refresh"' not in done_page
    assert 'data-events-url=""' in done_page


def test_execution_start_queues_run(
    owner_client, owner, django_capture_on_commit_callbacks
):
    workflow = WorkflowFactory(name="Review")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = owner_client.post(
            reverse("portal:execution-start"),
            {"workflow": workflow.pk, "prompt": "Review the change."},
        )

    execution = Execution.objects.get()
    assert response.url == reverse("portal:execution-detail", args=[execution.pk])
    assert execution.customer == owner.customer
    assert execution.status == Execution.Status.QUEUED
    assert execution.prompt == "Review the change."
    assert len(callbacks) == 1


def test_execution_start_rejects_inactive_workflow(owner_client):
    WorkflowFactory(slug="active")
    workflow = WorkflowFactory(slug="retired", is_active=False)

    response = owner_client.post(
        reverse("portal:execution-start"), {"workflow": workflow.pk, "prompt": "Go."}
    )

    assert "Choose one of the workflows listed." in response.content.decode()
    assert not Execution.objects.exists()


def test_execution_start_rejects_suspended_customer(owner_client, owner):
    owner.customer.status = "suspended"
    owner.customer.save()
    workflow = WorkflowFactory()

    response = owner_client.post(
        reverse("portal:execution-start"), {"workflow": workflow.pk, "prompt": "Go."}
    )

    assert "Your account is suspended" in response.content.decode()
    assert not Execution.objects.exists()


def test_execution_start_needs_prompt(owner_client):
    workflow = WorkflowFactory()

    response = owner_client.post(
        reverse("portal:execution-start"), {"workflow": workflow.pk, "prompt": "  "}
    )

    assert "Enter the input for the agent." in response.content.decode()


def test_api_key_shown_once(owner_client, owner):
    response = owner_client.post(reverse("portal:api-keys"), {"name": "CI"})
    page = response.content.decode()
    key = ApiKey.objects.get()
    secret = re.search(r'id="new-key-value">(.*?)</p>', page).group(1)

    assert response.status_code == 200
    assert secret.startswith(key.prefix)
    assert key.customer == owner.customer
    assert secret not in owner_client.get(reverse("portal:api-keys")).content.decode()


def test_api_key_needs_name(owner_client):
    response = owner_client.post(reverse("portal:api-keys"), {"name": ""})

    assert response.status_code == 400
    assert "Give the key a name." in response.content.decode()


def test_api_key_needs_verified_email(client, hybrid_plan):
    membership = sign_up(hybrid_plan)
    client.force_login(membership.user)

    response = client.post(reverse("portal:api-keys"), {"name": "CI"})

    assert response.status_code == 403
    assert not ApiKey.objects.exists()


def test_api_key_revoke(owner_client, owner):
    api_key, _ = api_key_create(customer=owner.customer, name="CI")

    response = owner_client.post(reverse("portal:api-key-revoke", args=[api_key.pk]))

    api_key.refresh_from_db()
    assert response.url == reverse("portal:api-keys")
    assert api_key.revoked_at is not None


def test_api_key_of_other_customer_is_404(owner_client, hybrid_plan):
    other = sign_up(hybrid_plan, email="other@example.com", company="Other")
    api_key, _ = api_key_create(customer=other.customer, name="Theirs")

    response = owner_client.post(reverse("portal:api-key-revoke", args=[api_key.pk]))

    api_key.refresh_from_db()
    assert response.status_code == 404
    assert api_key.revoked_at is None


def test_invoices_show_statements_without_cost(owner_client, owner):
    PeriodStatement.objects.create(
        customer=owner.customer,
        period_start=timezone.now().date() - timedelta(days=60),
        period_end=timezone.now().date() - timedelta(days=30),
        lines=[
            {
                "kind": "base",
                "description": "Team: monthly price",
                "quantity": "1",
                "unit_amount": "49.00",
                "amount": "49.00",
            }
        ],
        revenue_total=Decimal("49.00"),
        cost_total=SECRET_COST,
        margin=Decimal("48.01234567898766"),
        margin_percent=Decimal("97.98"),
    )
    StripeInvoice.objects.create(
        stripe_id="in_123",
        customer=owner.customer,
        number="AM-0001",
        status="open",
        currency="usd",
        total=4900,
        amount_due=4900,
        hosted_invoice_url="https://invoice.stripe.com/i/acct_test/in_123",
    )

    page = owner_client.get(reverse("portal:invoices")).content.decode()

    assert "Team: monthly price" in page
    assert "49.00 USD" in page
    assert "https://invoice.stripe.com/i/acct_test/in_123" in page
    assert "0.98765" not in page
    assert "48.01" not in page
    assert "97.98" not in page


def test_invoices_empty_state(owner_client):
    page = owner_client.get(reverse("portal:invoices")).content.decode()

    assert "No closed period yet" in page


def test_owner_invites_member(owner_client, owner):
    owner_client.post(reverse("portal:team"), {"email": "New@Example.com"})
    invitation = Invitation.objects.get()
    link = re.search(r"http://testserver(\S+)", mail.outbox[-1].body).group(1)

    guest = Client()
    response = guest.post(
        link,
        {"password1": "member-Passphrase-31", "password2": "member-Passphrase-31"},
    )

    member = Membership.objects.get(user__email="new@example.com")
    invitation.refresh_from_db()
    assert response.url == reverse("portal:dashboard")
    assert member.customer == owner.customer
    assert member.role == Membership.Role.MEMBER
    assert member.email_verified_at is not None
    assert invitation.accepted_at is not None
    assert guest.get(link).status_code == 404


def test_member_cannot_invite(client, owner):
    invitation, _ = invitation_create(
        customer=owner.customer, email="m@example.com", invited_by=owner.user
    )
    user = get_user_model().objects.create_user("m@example.com", "m@example.com", "x")
    invitation_accept(invitation=invitation, user=user)
    client.force_login(user)

    response = client.post(reverse("portal:team"), {"email": "x@example.com"})

    assert response.status_code == 403
    assert Invitation.objects.count() == 1


def test_invitation_to_existing_account_rejected(owner_client, hybrid_plan):
    sign_up(hybrid_plan, email="taken@example.com", company="Taken")

    response = owner_client.post(reverse("portal:team"), {"email": "taken@example.com"})

    assert response.status_code == 400
    assert "already has a portal account" in response.content.decode()


def test_expired_invitation_rejected(client, owner):
    invitation, token = invitation_create(
        customer=owner.customer, email="late@example.com", invited_by=owner.user
    )
    Invitation.objects.filter(pk=invitation.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )

    response = client.get(reverse("portal:invitation-accept", args=[token]))

    assert response.status_code == 404
    assert "expired" in response.content.decode()


def test_invitation_revoke(owner_client, owner):
    owner_client.post(reverse("portal:team"), {"email": "new@example.com"})
    invitation = Invitation.objects.get()

    owner_client.post(reverse("portal:invitation-revoke", args=[invitation.pk]))

    invitation.refresh_from_db()
    assert invitation.revoked_at is not None
