import pytest
import redis
from django.conf import settings


def pytest_sessionstart(session):
    """Stop early with a clear message when Redis is not reachable."""
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.exit(
            f"Redis at {settings.REDIS_URL} is not reachable ({exc}). Start it, for "
            "example: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 "
            '--save "" --appendonly no; or set REDIS_URL.',
            returncode=2,
        )
    finally:
        client.close()


def pytest_sessionfinish(session, exitstatus):
    """Delete this run's task queue from the broker.

    Tasks that tests enqueue with no worker running (alert deliveries, for
    instance) would otherwise stay in Redis under a queue that no later run
    reads.
    """
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_connect_timeout=2)
    try:
        # Kombu's Redis transport keeps a list per queue and priority, and
        # the queue's bindings.
        names = [queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}"]
        names += client.scan_iter(match=f"{queue}\x06\x16*")
        client.delete(*names)
    except redis.RedisError:
        pass
    finally:
        client.close()


@pytest.fixture(autouse=True)
def agent_directories(settings, tmp_path):
    """Keep the CLI's working directory and state inside the test's temporary folder."""
    settings.AGENTMARGIN_AGENT_CWD = tmp_path / "workspace"
    settings.AGENTMARGIN_CLAUDE_CONFIG_DIR = str(tmp_path / "claude-config")


@pytest.fixture(autouse=True)
def fresh_price_overrides():
    """Drop cached price overrides, which outlive a test's rolled-back rows."""
    from agents.pricing.overrides import clear_cache

    clear_cache()
    yield
    clear_cache()
