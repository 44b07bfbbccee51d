import threading

import pytest
import redis
from django.db import connection

from api.throttling import RedisRateThrottle
from customers.api_keys import api_key_create
from tests.api.conftest import key_client
from tests.factories import CustomerFactory

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


def test_redis_down_lets_requests_through(three_per_minute, client, settings):
    caches_config = {name: dict(config) for name, config in settings.CACHES.items()}
    # Port 1 on the loopback address is expected to refuse connections.
    caches_config["api_throttle"]["LOCATION"] = "redis://127.0.0.1:1/0"
    settings.CACHES = caches_config
    statuses = [client.get("/api/v1/plans").status_code for _ in range(5)]
    assert statuses == [200] * 5


def test_redis_script_error_lets_requests_through(
    three_per_minute, client, monkeypatch
):
    def unreachable(*args, **kwargs):
        raise redis.ConnectionError("connection refused")

    monkeypatch.setattr(redis.Redis, "eval", unreachable)
    statuses = [client.get("/api/v1/plans").status_code for _ in range(5)]
    assert statuses == [200] * 5


def test_window_slides(three_per_minute, api_key, monkeypatch):
    """A request counts for one minute after it was made, not to the end of a fixed window."""
    clock = [1_000_000.0]
    monkeypatch.setattr(RedisRateThrottle, "timer", lambda self: clock[0])
    client = key_client(api_key[1])
    for step in (0, 20, 40):
        clock[0] = 1_000_000.0 + step
        assert client.get("/api/v1/plans").status_code == 200
    clock[0] = 1_000_059.0
    response = client.get("/api/v1/plans")
    assert response.status_code == 429
    assert response["Retry-After"] == "2"
    clock[0] = 1_000_060.5
    assert client.get("/api/v1/plans").status_code == 200
    assert client.get("/api/v1/plans").status_code == 429


@pytest.mark.django_db(transaction=True)
def test_parallel_requests_exact_limit(settings):
    """Requests sent at the same moment from many threads cannot overshoot the limit."""
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"api_key": "10/minute", "staff": "10/minute"},
    }
    customer = CustomerFactory(slug="parallel-api", name="Parallel")
    _, key = api_key_create(customer=customer, name="parallel")
    threads_count, per_thread = 20, 3
    barrier = threading.Barrier(threads_count)
    statuses = []
    lock = threading.Lock()

    def send():
        client = key_client(key)
        try:
            barrier.wait()
            for _ in range(per_thread):
                code = client.get("/api/v1/plans").status_code
                with lock:
                    statuses.append(code)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(statuses) == threads_count * per_thread
    assert statuses.count(200) == 10
    assert statuses.count(429) == threads_count * per_thread - 10
