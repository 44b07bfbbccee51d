"""Sign-up with Stripe configured, against the in-process fake Stripe."""

import pytest
from django.urls import reverse

from billing.models import Subscription
from billing.stripe import sync
from billing.stripe.client import client_override
from customers.models import Customer
from tests.fakestripe import FakeStripe

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-Passphrase-42"


@pytest.fixture
def fake_stripe():
    fake = FakeStripe()
    with client_override(api_key=fake.api_key, http_client=fake.http_client()):
        yield fake


def post_signup(client, plan):
    return client.post(
        reverse("portal:signup"),
        {
            "company_name": "Initech",
            "email": "peter@initech.example",
            "password1": PASSWORD,
            "password2": PASSWORD,
            "plan": plan.pk,
        },
    )


def test_signup_creates_stripe_subscription(
    client, hybrid_plan, fake_stripe, django_capture_on_commit_callbacks
):
    sync.plans_sync()

    with django_capture_on_commit_callbacks(execute=True):
        response = post_signup(client, hybrid_plan)

    customer = Customer.objects.get()
    subscription = Subscription.objects.get(customer=customer)
    assert response.status_code == 302
    assert customer.stripe_customer_id.startswith("cus_")
    assert subscription.stripe_subscription_id in fake_stripe.store["subscription"]


def test_signup_survives_stripe_failure(
    client, hybrid_plan, fake_stripe, django_capture_on_commit_callbacks
):
    # The plan was never synced, so it has no Stripe price to subscribe to.
    with django_capture_on_commit_callbacks(execute=True):
        response = post_signup(client, hybrid_plan)

    subscription = Subscription.objects.get()
    assert response.status_code == 302
    assert subscription.stripe_subscription_id == ""
    assert client.get(reverse("portal:dashboard")).status_code == 200
