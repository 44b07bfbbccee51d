import hashlib
import logging
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.utils import timezone

from customers.api_keys import (
    ApiKeyInvalid,
    api_key_authenticate,
    api_key_create,
    api_key_revoke,
    api_key_touch,
)
from customers.models import ApiKey, Customer
from tests.api.conftest import key_client

pytestmark = pytest.mark.django_db


def test_create_stores_only_hash(customer):
    api_key, key = api_key_create(customer=customer, name="Billing sync")
    stored = ApiKey.objects.get(pk=api_key.pk)
    assert key.startswith(stored.prefix + "_")
    assert len(stored.prefix) == 11
    assert stored.secret_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in {stored.prefix, stored.secret_hash, stored.name}
    assert len(key) > 50


def test_create_rejects_blank_name(customer):
    with pytest.raises(ValidationError, match="name is empty"):
        api_key_create(customer=customer, name="  ")


def test_create_rejects_inactive_customer(customer):
    customer.status = Customer.Status.SUSPENDED
    customer.save()
    with pytest.raises(ValidationError, match="only active customers"):
        api_key_create(customer=customer, name="CI")


def test_authenticate_valid_key(api_key):
    row, key = api_key
    assert api_key_authenticate(key) == row


@pytest.mark.parametrize(
    "mangle",
    [
        lambda key: key[:-1] + ("A" if key[-1] != "A" else "B"),
        lambda key: "am_unknown0_" + key[12:],
        lambda key: key[3:],
        lambda key: "",
    ],
    ids=["wrong-secret", "unknown-prefix", "malformed", "empty"],
)
def test_authenticate_rejects_bad_key(api_key, mangle):
    with pytest.raises(ApiKeyInvalid):
        api_key_authenticate(mangle(api_key[1]))


def test_authenticate_rejects_revoked_key(api_key):
    row, key = api_key
    api_key_revoke(api_key=row)
    with pytest.raises(ApiKeyInvalid, match="revoked"):
        api_key_authenticate(key)


def test_revoke_twice_keeps_first_time(api_key):
    row, _ = api_key
    api_key_revoke(api_key=row)
    first = row.revoked_at
    api_key_revoke(api_key=row)
    row.refresh_from_db()
    assert row.revoked_at == first


def test_last_used_written_at_most_once_a_minute(api_key):
    row, _ = api_key
    now = timezone.now()
    assert api_key_touch(row, now=now)
    assert not api_key_touch(row, now=now + timedelta(seconds=30))
    assert api_key_touch(row, now=now + timedelta(seconds=61))
    row.refresh_from_db()
    assert row.last_used_at == now + timedelta(seconds=61)


def test_request_sets_last_used(api_key):
    row, key = api_key
    assert key_client(key).get("/api/v1/api-keys").status_code == 200
    row.refresh_from_db()
    assert row.last_used_at is not None


def test_command_prints_key_once(customer, capsys):
    call_command("create_api_key", "--customer", customer.slug, "--name", "ops")
    out, err = capsys.readouterr()
    key = out.strip()
    assert api_key_authenticate(key).customer == customer
    assert key not in err
    assert "shown only once" in err


def test_command_unknown_customer(db):
    with pytest.raises(CommandError, match="not found"):
        call_command("create_api_key", "--customer", "nobody", "--name", "ops")


def test_key_never_logged(customer, caplog):
    caplog.set_level(logging.DEBUG)
    _, key = api_key_create(customer=customer, name="CI")
    key_client(key).get("/api/v1/api-keys")
    key_client(key + "x").get("/api/v1/api-keys")
    secret = key.split("_", 2)[2]
    assert secret not in caplog.text


def test_list_keys_of_own_customer_only(client, api_key, other_customer):
    api_key_create(customer=other_customer, name="theirs")
    response = client.get("/api/v1/api-keys")
    assert response.status_code == 200
    assert [row["prefix"] for row in response.json()["results"]] == [api_key[0].prefix]
    assert "secret_hash" not in response.json()["results"][0]


def test_revoked_key_fails_next_request(client, api_key):
    row, _ = api_key
    response = client.post(f"/api/v1/api-keys/{row.pk}/revoke")
    assert response.status_code == 200
    assert response.json()["revoked_at"] is not None
    again = client.get("/api/v1/api-keys")
    assert again.status_code == 401
    assert again.json()["error"]["code"] == "authentication_failed"


def test_revoke_other_customers_key_not_found(client, other_customer):
    theirs, _ = api_key_create(customer=other_customer, name="theirs")
    response = client.post(f"/api/v1/api-keys/{theirs.pk}/revoke")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_admin_creates_key_and_shows_it_once(admin_client, customer):
    response = admin_client.post(
        "/admin/customers/apikey/add/",
        {"customer": customer.pk, "name": "From admin"},
        follow=True,
    )
    assert response.status_code == 200
    api_key = ApiKey.objects.get(name="From admin")
    assert api_key.created_by is not None
    [message] = [
        str(m) for m in response.context["messages"] if "copy it now" in str(m)
    ]
    key = message.split(": ", 1)[1].split(" ")[0]
    assert api_key_authenticate(key) == api_key


def test_admin_rejects_key_for_suspended_customer(admin_client, customer):
    Customer.objects.filter(pk=customer.pk).update(status=Customer.Status.SUSPENDED)
    response = admin_client.post(
        "/admin/customers/apikey/add/", {"customer": customer.pk, "name": "x"}
    )
    assert response.status_code == 200
    assert "only active customers" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_admin_revoke_action(admin_client, api_key):
    row, key = api_key
    admin_client.post(
        "/admin/customers/apikey/",
        {"action": "revoke", "_selected_action": [row.pk]},
    )
    with pytest.raises(ApiKeyInvalid):
        api_key_authenticate(key)
