import uuid

import pytest
from rest_framework.test import APIClient

from customers.api_keys import api_key_create
from tests.factories import CustomerFactory, WorkflowFactory


def key_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture(autouse=True)
def fresh_rate_limits(settings):
    """Count each test's requests apart: ids repeat once a test database is recreated."""
    caches = {name: dict(config) for name, config in settings.CACHES.items()}
    caches["api_throttle"]["KEY_PREFIX"] = f"test-{uuid.uuid4().hex}"
    settings.CACHES = caches


@pytest.fixture
def customer(db):
    return CustomerFactory(slug="acme-api", name="Acme")


@pytest.fixture
def other_customer(db):
    return CustomerFactory(slug="globex-api", name="Globex")


@pytest.fixture
def api_key(customer):
    """The customer's ApiKey row and its key, as a pair."""
    return api_key_create(customer=customer, name="CI")


@pytest.fixture
def client(api_key):
    return key_client(api_key[1])


@pytest.fixture
def other_client(other_customer):
    return key_client(api_key_create(customer=other_customer, name="other")[1])


@pytest.fixture
def workflow(db):
    return WorkflowFactory(slug="code-review")


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user(
        username="staff", password="staff-password", is_staff=True
    )


@pytest.fixture
def staff_client(staff_user):
    client = APIClient()
    client.force_login(staff_user)
    return client


@pytest.fixture
def sent_tasks(monkeypatch):
    """Record the executions sent to the workers instead of sending them."""
    sent = []
    monkeypatch.setattr(
        "agents.api.submission.run_execution.delay", lambda pk: sent.append(pk)
    )
    return sent
