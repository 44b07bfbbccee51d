import pytest
import redis
from django.core.cache import caches

from customers.api_keys import api_key_create
from tests.api.conftest import key_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def three_per_minute(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"api_key": "3/minute", "staff": "3/minute"},
    }


def test_fourth_request_throttled(three_per_minute, client):
    statuses = [client.get("/api/v1/plans").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = client.get("/api/v1/plans")
    error = response.json()["error"]
    assert error["code"] == "throttled"
    assert 1 <= int(response["Retry-After"]) <= 61
    assert "retry in" in error["message"]


def test_throttle_counts_per_key(three_per_minute, client, customer):
    for _ in range(3):
        client.get("/api/v1/plans")
    assert client.get("/api/v1/plans").status_code == 429
    _, second_key = api_key_create(customer=customer, name="second")
    assert key_client(second_key).get("/api/v1/plans").status_code == 200


def test_staff_throttled_per_user(three_per_minute, staff_client):
    statuses = [staff_client.get("/api/v1/staff/alerts").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_redis_down_lets_requests_through(three_per_minute, client, monkeypatch):
    cache = caches["api_throttle"]

    def unreachable(*args, **kwargs):
        raise redis.ConnectionError("connection refused")

    monkeypatch.setattr(cache, "get", unreachable)
    statuses = [client.get("/api/v1/plans").status_code for _ in range(5)]
    assert statuses == [200] * 5
