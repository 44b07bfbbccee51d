from io import StringIO

import pytest
from django.core.management import call_command

from agents.models import Workflow
from billing.models import Plan, Subscription
from customers.models import Customer, Membership

pytestmark = pytest.mark.django_db


def seed() -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def test_seed_demo_twice_keeps_rows():
    first = seed()
    second = seed()

    assert Customer.objects.count() == 2
    assert Workflow.objects.count() == 3
    assert Plan.objects.count() == 4
    assert Subscription.objects.count() == 2
    assert set(Plan.objects.values_list("billing_model", flat=True)) == set(
        Plan.BillingModel.values
    )
    plans = dict(Subscription.objects.values_list("customer__slug", "plan__slug"))
    assert plans == {"acme": "demo-hybrid", "globex": "demo-usage"}
    assert "customer acme: created" in first
    assert "workflow classify: created" in first
    assert "plan demo-hybrid: created" in first
    assert "subscription acme: created on plan demo-hybrid" in first
    assert "plan demo-hybrid: updated" in second
    assert "subscription globex: kept" in second


def test_seed_demo_logins_only_in_debug(settings, client):
    settings.DEBUG = False
    seed()
    assert not Membership.objects.exists()

    settings.DEBUG = True
    first = seed()
    second = seed()
    assert "portal user owner@acme.example: created" in first
    assert "portal user owner@acme.example: kept" in second
    membership = Membership.objects.get()
    assert membership.customer.slug == "acme"
    assert membership.role == Membership.Role.OWNER
    assert membership.email_verified_at is not None
    assert client.login(username="owner@acme.example", password="acme-demo")
    assert client.get("/portal/").status_code == 200
