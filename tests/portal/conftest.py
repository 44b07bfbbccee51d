from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import Plan
from customers.models import Membership
from portal import services


@pytest.fixture
def hybrid_plan(db):
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


def sign_up(plan, *, email="owner@example.com", company="Example Corp") -> Membership:
    return services.signup_create(
        email=email, password="a-long-Passphrase-42", company_name=company, plan=plan
    )


@pytest.fixture
def owner(hybrid_plan):
    """A verified owner of a customer on the hybrid plan."""
    membership = sign_up(hybrid_plan)
    membership.email_verified_at = timezone.now()
    membership.save()
    return membership


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner.user)
    return client
