import re

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.urls import reverse

from billing.models import Subscription
from customers.models import Customer, Membership
from tests.portal.conftest import sign_up

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-Passphrase-42"


def signup_data(chosen_plan, **changes):
    data = {
        "company_name": "Initech",
        "email": "Peter@Initech.example",
        "password1": PASSWORD,
        "password2": PASSWORD,
        "plan": chosen_plan.pk,
    }
    data.update(changes)
    return data


def test_signup_creates_account(client, hybrid_plan):
    response = client.post(reverse("portal:signup"), signup_data(hybrid_plan))

    assert response.status_code == 302
    assert response.url == reverse("portal:dashboard")
    user = get_user_model().objects.get()
    assert user.email == "peter@initech.example"
    membership = Membership.objects.get(user=user)
    assert membership.role == Membership.Role.OWNER
    assert membership.email_verified_at is None
    assert membership.customer.name == "Initech"
    assert membership.customer.slug == "initech"
    subscription = Subscription.objects.get(customer=membership.customer)
    assert subscription.plan == hybrid_plan
    assert subscription.status == Subscription.Status.ACTIVE
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["peter@initech.example"]


def test_signup_logs_user_in(client, hybrid_plan):
    client.post(reverse("portal:signup"), signup_data(hybrid_plan))

    response = client.get(reverse("portal:dashboard"))

    assert response.status_code == 200
    assert b"Initech" in response.content


def test_signup_rejects_taken_email(client, hybrid_plan):
    sign_up(hybrid_plan, email="peter@initech.example")

    response = client.post(reverse("portal:signup"), signup_data(hybrid_plan))

    assert response.status_code == 200
    assert "An account with this email already exists" in response.content.decode()
    assert Customer.objects.count() == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"password2": "something-else-42"}, "The two passwords do not match."),
        ({"password1": "12345678", "password2": "12345678"}, "too common"),
        ({"company_name": "   "}, "This field is required."),
        ({"plan": ""}, "Choose a plan."),
        ({"email": "not-an-address"}, "Enter a valid email address."),
    ],
)
def test_signup_form_errors(client, hybrid_plan, changes, message):
    response = client.post(
        reverse("portal:signup"), signup_data(hybrid_plan, **changes)
    )

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not get_user_model().objects.exists()
    assert not Customer.objects.exists()


def test_signup_without_plans_says_so(client):
    response = client.get(reverse("portal:signup"))

    assert "No plan is open for sign-up" in response.content.decode()


def test_signup_is_atomic(client, hybrid_plan):
    hybrid_plan.is_active = False
    hybrid_plan.save()

    with pytest.raises(Exception, match="inactive"):
        sign_up(hybrid_plan)

    assert not get_user_model().objects.exists()
    assert not Customer.objects.exists()


def test_signup_slug_is_unique(hybrid_plan):
    first = sign_up(hybrid_plan, email="a@example.com", company="Same Name")
    second = sign_up(hybrid_plan, email="b@example.com", company="Same Name")

    assert first.customer.slug == "same-name"
    assert second.customer.slug == "same-name-2"


def verification_link(message) -> str:
    return re.search(r"http://testserver(\S+)", message.body).group(1)


def test_verification_link_verifies_once(client, hybrid_plan):
    client.post(reverse("portal:signup"), signup_data(hybrid_plan))
    link = verification_link(mail.outbox[0])

    first = client.get(link)
    second = client.get(link)

    assert first.status_code == 302
    assert Membership.objects.get().email_verified_at is not None
    assert second.status_code == 400


def test_verification_link_rejects_bad_token(client, owner):
    link = reverse("portal:verify-email", args=["MQ", "bad-token"])

    assert client.get(link).status_code == 400


def test_verification_resend(client, hybrid_plan):
    client.post(reverse("portal:signup"), signup_data(hybrid_plan))

    client.post(reverse("portal:verification-resend"))

    assert len(mail.outbox) == 2


def test_login_with_email_lands_on_dashboard(client, owner):
    response = client.post(
        reverse("portal:login"),
        {"username": "OWNER@example.com", "password": PASSWORD},
    )

    assert response.status_code == 302
    assert response.url == reverse("portal:dashboard")


def test_login_wrong_password_message(client, owner):
    response = client.post(
        reverse("portal:login"), {"username": "owner@example.com", "password": "x"}
    )

    assert "The email address or password is not correct." in response.content.decode()


def test_logout_returns_to_login(owner_client):
    response = owner_client.post(reverse("portal:logout"))

    assert response.url == reverse("portal:login")
    assert owner_client.get(reverse("portal:dashboard")).status_code == 302


def test_password_reset_by_email(client, owner):
    client.post(reverse("portal:password-reset"), {"email": "owner@example.com"})
    assert len(mail.outbox) == 1
    link = re.search(r"http://testserver(\S+)", mail.outbox[0].body).group(1)

    form_page = client.get(link, follow=True)
    response = client.post(
        form_page.redirect_chain[-1][0],
        {
            "new_password1": "another-Passphrase-77",
            "new_password2": "another-Passphrase-77",
        },
    )

    assert response.url == reverse("portal:password-reset-complete")
    assert client.login(username="owner@example.com", password="another-Passphrase-77")


def test_signup_lists_plan_prices(client, hybrid_plan):
    page = client.get(reverse("portal:signup")).content.decode()

    assert "Team: 49 USD a month with 2 executions included, then 0.5 USD each" in page
