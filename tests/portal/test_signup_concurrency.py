"""Sign-ups and invitation acceptances sent at the same moment, each on its own connection."""

import threading
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.urls import reverse

from billing.models import Plan
from customers import services as customer_services
from customers.models import Customer, Membership

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "a-long-Passphrase-42"
PARALLEL = 6


@pytest.fixture
def plan():
    plan = Plan(
        name="Team",
        slug="team",
        billing_model=Plan.BillingModel.HYBRID,
        monthly_price=Decimal("49.00"),
        included_executions=2,
        overage_price=Decimal("0.50"),
    )
    plan.full_clean()
    plan.save()
    return plan


def post_at_once(url: str, bodies: list[dict]) -> list:
    """POST each body from its own thread, all released together; return the responses."""
    barrier = threading.Barrier(len(bodies))
    responses = [None] * len(bodies)
    errors = []

    def send(index: int, body: dict) -> None:
        try:
            client = Client(raise_request_exception=False)
            barrier.wait()
            responses[index] = client.post(url, body)
        except Exception as error:  # noqa: BLE001 - reported by the assert below
            errors.append(error)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=send, args=(index, body))
        for index, body in enumerate(bodies)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return responses


def signup_body(plan, *, company: str, email: str) -> dict:
    return {
        "company_name": company,
        "email": email,
        "password1": PASSWORD,
        "password2": PASSWORD,
        "plan": plan.pk,
    }


def test_same_company_gets_unique_slugs(plan):
    bodies = [
        signup_body(plan, company="Initech", email=f"user{index}@initech.example")
        for index in range(PARALLEL)
    ]

    responses = post_at_once(reverse("portal:signup"), bodies)

    statuses = [response.status_code for response in responses]
    slugs = sorted(Customer.objects.values_list("slug", flat=True))
    assert statuses == [302] * PARALLEL
    assert len(slugs) == PARALLEL
    assert len(set(slugs)) == PARALLEL
    assert "initech" in slugs
    assert all(slug.startswith("initech") for slug in slugs)
    assert Membership.objects.count() == PARALLEL


def test_same_email_one_account(plan):
    emails = ["Peter@Initech.example", "peter@initech.example", "PETER@initech.example"]
    bodies = [
        signup_body(plan, company=f"Initech {index}", email=emails[index % 3])
        for index in range(PARALLEL)
    ]

    responses = post_at_once(reverse("portal:signup"), bodies)

    statuses = sorted(response.status_code for response in responses)
    rejected = [response for response in responses if response.status_code == 200]
    assert statuses == [200] * (PARALLEL - 1) + [302]
    for response in rejected:
        assert b"An account with this email already exists" in response.content
    assert get_user_model().objects.count() == 1
    assert Customer.objects.count() == 1
    assert Membership.objects.count() == 1


def test_invitation_accepted_twice_at_once(plan):
    owner = customer_services.membership_create(
        user=get_user_model().objects.create_user(
            username="owner@example.com", email="owner@example.com"
        ),
        customer=Customer.objects.create(name="Example", slug="example"),
        role=Membership.Role.OWNER,
    )
    _, token = customer_services.invitation_create(
        customer=owner.customer, email="new@example.com", invited_by=owner.user
    )
    url = reverse("portal:invitation-accept", kwargs={"token": token})
    bodies = [{"password1": PASSWORD, "password2": PASSWORD}] * PARALLEL

    responses = post_at_once(url, bodies)

    statuses = sorted(response.status_code for response in responses)
    assert 500 not in statuses
    assert statuses.count(302) == 1
    assert get_user_model().objects.filter(email="new@example.com").count() == 1
    assert Membership.objects.filter(user__email="new@example.com").count() == 1
