"""Publish each recorded API message to Redis pub/sub, for live progress.

Every `api_message_recorded` signal becomes one JSON event, published on
the execution's channel (`agentmargin:execution:<id>`) and on its
customer's channel (`agentmargin:customer:<id>`). The `execution_finished`
signal becomes one last event on both. The event stream in agents.views
relays the execution's channel to browsers and API clients.

Publishing is best effort. Redis errors are caught and logged at most once a
minute, and after a failure publishing pauses for a few seconds, so an
unreachable Redis costs the recorder at most one short socket timeout per
pause. Settings, all read with a default:

- `AGENTMARGIN_LIVE_UPDATES` (default True): False skips publishing.
- `AGENTMARGIN_LIVE_CHANNEL_PREFIX` (default "agentmargin"): channel prefix.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from decimal import Decimal
from typing import TYPE_CHECKING

import redis
from django.conf import settings
from django.core.signals import setting_changed
from django.db import DatabaseError
from redis.backoff import NoBackoff
from redis.retry import Retry

from agents.models import TOKEN_COUNT_FIELDS, ApiMessage, Execution
from agents.selectors import decimal_text, execution_summary
from agents.signals import api_message_recorded, execution_finished

if TYPE_CHECKING:
    from collections.abc import Callable

    from agents.recorder import MessageUpdate

logger = logging.getLogger(__name__)

DEFAULT_CHANNEL_PREFIX = "agentmargin"

# Publishing runs inside the recorder, so a Redis server that does not
# respond delays a message by the connect or socket timeout, once per pause.
PUBLISH_SOCKET_TIMEOUT_SECONDS = 0.5
PUBLISH_PAUSE_AFTER_FAILURE_SECONDS = 5.0
WARNING_INTERVAL_SECONDS = 60.0

# A subscriber waits on its socket between events. These limits bound the
# connect and each read once data is available.
SUBSCRIBE_CONNECT_TIMEOUT_SECONDS = 2.0
SUBSCRIBE_SOCKET_TIMEOUT_SECONDS = 5.0

CUSTOMER_ID_CACHE_SIZE = 1024


def live_updates_enabled() -> bool:
    return getattr(settings, "AGENTMARGIN_LIVE_UPDATES", True)


def channel_prefix() -> str:
    return getattr(settings, "AGENTMARGIN_LIVE_CHANNEL_PREFIX", DEFAULT_CHANNEL_PREFIX)


def execution_channel(execution_id: int) -> str:
    return f"{channel_prefix()}:execution:{execution_id}"


def customer_channel(customer_id: int) -> str:
    return f"{channel_prefix()}:customer:{customer_id}"


# Events ------------------------------------------------------------------


def message_event(execution_id: int, update: MessageUpdate) -> dict:
    """Build the `api_message` event of one recorder update.

    `running_cost_usd` is the execution's cost so far. It is null while any
    of its messages is unpriced, and `priced_running_cost_usd` is then the
    priced part.
    """
    state = update.message
    return {
        "type": "api_message",
        "execution_id": execution_id,
        "message_id": state.message_id,
        "sequence": state.sequence,
        "model": state.model,
        "parent_tool_use_id": state.parent_tool_use_id or None,
        **{kind: getattr(state.usage, kind) for kind in TOKEN_COUNT_FIELDS},
        "cost_usd": decimal_text(state.cost_usd),
        "running_cost_usd": (
            None if update.unpriced else decimal_text(update.running_cost_usd)
        ),
        "priced_running_cost_usd": decimal_text(update.running_cost_usd),
        "unpriced": update.unpriced,
        "estimated": state.estimated,
        "output_final": state.output_final,
        "complete": update.complete,
    }


def stored_message_events(execution_id: int, *, finished: bool) -> list[dict]:
    """Build the `api_message` events of the messages stored so far, in order.

    The running cost of each is the sum up to it in arrival order. The
    recorder does not store whether a response has ended, so a message is
    reported complete once the execution has `finished` or a later message
    of the same agent or subagent exists.
    """
    rows = list(
        ApiMessage.objects.filter(execution_id=execution_id).order_by("sequence")
    )
    later_agents: set[str] = set()
    complete = {}
    for row in reversed(rows):
        complete[row.pk] = finished or row.parent_tool_use_id in later_agents
        later_agents.add(row.parent_tool_use_id)
    events = []
    priced_running_cost = Decimal(0)
    unpriced = False
    for row in rows:
        if row.cost_usd is None:
            unpriced = True
        else:
            priced_running_cost += row.cost_usd
        events.append(
            {
                "type": "api_message",
                "execution_id": execution_id,
                "message_id": row.message_id,
                "sequence": row.sequence,
                "model": row.model,
                "parent_tool_use_id": row.parent_tool_use_id or None,
                **{kind: getattr(row, kind) for kind in TOKEN_COUNT_FIELDS},
                "cost_usd": decimal_text(row.cost_usd),
                "running_cost_usd": (
                    None if unpriced else decimal_text(priced_running_cost)
                ),
                "priced_running_cost_usd": decimal_text(priced_running_cost),
                "unpriced": unpriced,
                "estimated": row.estimated,
                "output_final": row.output_final,
                "complete": complete[row.pk],
            }
        )
    return events


def finished_event(execution: Execution) -> dict:
    """Build the `execution_finished` event, with the execution's summary."""
    summary = execution_summary(execution)
    return {
        "type": "execution_finished",
        "execution_id": execution.pk,
        "status": summary["status"],
        "summary": summary,
    }


# Publishing --------------------------------------------------------------


def publish_message_update(
    execution_id: int, customer_id: int | None, update: MessageUpdate
) -> None:
    """Publish one recorder update on the execution's and the customer's channels.

    Never raises a Redis error. With `customer_id` None only the execution's
    channel gets it.
    """
    if not live_updates_enabled():
        return
    channels = [execution_channel(execution_id)]
    if customer_id is not None:
        channels.append(customer_channel(customer_id))
    payload = json.dumps(message_event(execution_id, update))
    publisher.publish(channels, payload, execution_id=execution_id)


def publish_execution_finished(execution_id: int, status: str) -> None:
    """Publish the end of an execution, with its summary, on both its channels.

    Never raises a Redis error. The event's status and summary are read
    from the database, where the signal's `status` is already committed.
    """
    if not live_updates_enabled():
        return
    execution = (
        Execution.objects.select_related("customer", "workflow")
        .filter(pk=execution_id)
        .first()
    )
    if execution is None:
        logger.warning(
            "Execution %s: finished as %s but not found, nothing published",
            execution_id,
            status,
        )
        return
    event = finished_event(execution)
    channels = [
        execution_channel(execution_id),
        customer_channel(execution.customer_id),
    ]
    publisher.publish(channels, json.dumps(event), execution_id=execution_id)


def redis_client(*, socket_timeout: float, connect_timeout: float) -> redis.Redis:
    """Create a client of `settings.REDIS_URL` with its own pool and no retries.

    A retry would multiply the time that a Redis server that does not
    respond costs the caller.
    """
    pool = redis.ConnectionPool.from_url(
        settings.REDIS_URL,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        retry=Retry(NoBackoff(), 0),
    )
    return redis.Redis(connection_pool=pool)


class RedisPublisher:
    """Publishes to Redis pub/sub without raising, pausing after a failure.

    The client is created on first use from `settings.REDIS_URL`, so a
    forked worker process builds its own pool.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self._paused_until = 0.0
        self._warned_at: float | None = None
        self._failures_since_warning = 0

    def publish(self, channels: list[str], payload: str, *, execution_id: int) -> bool:
        """Publish `payload` on each channel and return whether Redis accepted it."""
        if self.clock() < self._paused_until:
            self._count_failure()
            return False
        try:
            pipeline = self._get_client().pipeline(transaction=False)
            for channel in channels:
                pipeline.publish(channel, payload)
            pipeline.execute()
        except redis.RedisError as exc:
            self._paused_until = self.clock() + PUBLISH_PAUSE_AFTER_FAILURE_SECONDS
            self._warn(execution_id, exc)
            return False
        return True

    def reset(self) -> None:
        """Drop the client and the failure state, as after a settings change."""
        with self._lock:
            client, self._client = self._client, None
            self._paused_until = 0.0
            self._warned_at = None
            self._failures_since_warning = 0
        if client is not None:
            client.close()

    def _get_client(self) -> redis.Redis:
        with self._lock:
            if self._client is None:
                self._client = redis_client(
                    socket_timeout=PUBLISH_SOCKET_TIMEOUT_SECONDS,
                    connect_timeout=PUBLISH_SOCKET_TIMEOUT_SECONDS,
                )
            return self._client

    def _count_failure(self) -> None:
        with self._lock:
            self._failures_since_warning += 1

    def _warn(self, execution_id: int, exc: redis.RedisError) -> None:
        with self._lock:
            now = self.clock()
            if (
                self._warned_at is not None
                and now - self._warned_at < WARNING_INTERVAL_SECONDS
            ):
                self._failures_since_warning += 1
                return
            skipped = self._failures_since_warning
            self._warned_at = now
            self._failures_since_warning = 0
        logger.warning(
            "Execution %s: live update not published to Redis (%d more updates "
            "lost since the last warning), publishing paused for %ss: %s",
            execution_id,
            skipped,
            PUBLISH_PAUSE_AFTER_FAILURE_SECONDS,
            exc,
        )


publisher = RedisPublisher()


# Subscribing -------------------------------------------------------------

_subscriber_lock = threading.Lock()
_subscriber: redis.Redis | None = None


def subscribe_to_execution(execution_id: int) -> redis.client.PubSub:
    """Subscribe to the execution's channel and wait until Redis confirms it.

    Events published after this returns are delivered to the subscription.
    Raises redis.RedisError when Redis cannot be reached or does not
    confirm in time. The caller closes the returned PubSub.
    """
    global _subscriber
    with _subscriber_lock:
        if _subscriber is None:
            _subscriber = redis_client(
                socket_timeout=SUBSCRIBE_SOCKET_TIMEOUT_SECONDS,
                connect_timeout=SUBSCRIBE_CONNECT_TIMEOUT_SECONDS,
            )
        client = _subscriber
    pubsub = client.pubsub()
    try:
        pubsub.subscribe(execution_channel(execution_id))
        confirmation = pubsub.get_message(timeout=SUBSCRIBE_SOCKET_TIMEOUT_SECONDS)
        if confirmation is None or confirmation["type"] != "subscribe":
            raise redis.TimeoutError(
                f"Subscribing to {execution_channel(execution_id)} timed out "
                f"after {SUBSCRIBE_SOCKET_TIMEOUT_SECONDS}s: Redis sent no "
                f"confirmation."
            )
    except BaseException:
        pubsub.close()
        raise
    return pubsub


def _reset_subscriber() -> None:
    global _subscriber
    with _subscriber_lock:
        client, _subscriber = _subscriber, None
    if client is not None:
        client.close()


# Signal receivers --------------------------------------------------------


class CustomerIdCache:
    """Customer ids of the most recently used executions, by execution id.

    Saves the recorder a query per message: the signals carry only the
    execution id.
    """

    def __init__(self, size: int = CUSTOMER_ID_CACHE_SIZE):
        self.size = size
        self._lock = threading.Lock()
        self._ids: collections.OrderedDict[int, int] = collections.OrderedDict()

    def get(self, execution_id: int) -> int | None:
        """Return the customer id of the execution, None when it does not exist."""
        with self._lock:
            if execution_id in self._ids:
                self._ids.move_to_end(execution_id)
                return self._ids[execution_id]
        customer_id = (
            Execution.objects.filter(pk=execution_id)
            .values_list("customer_id", flat=True)
            .first()
        )
        if customer_id is not None:
            with self._lock:
                self._ids[execution_id] = customer_id
                while len(self._ids) > self.size:
                    self._ids.popitem(last=False)
        return customer_id

    def forget(self, execution_id: int) -> None:
        with self._lock:
            self._ids.pop(execution_id, None)

    def clear(self) -> None:
        with self._lock:
            self._ids.clear()


customer_ids = CustomerIdCache()


def on_api_message_recorded(
    sender, *, execution_id: int, update: MessageUpdate, customer_id=None, **kwargs
) -> None:
    """Publish a recorded message, using the signal's `customer_id` if it has one."""
    if not live_updates_enabled():
        return
    if customer_id is None:
        try:
            customer_id = customer_ids.get(execution_id)
        except DatabaseError as exc:
            logger.warning(
                "Execution %s: reading the customer failed, live update "
                "published on the execution's channel only: %s",
                execution_id,
                exc,
            )
    publish_message_update(execution_id, customer_id, update)


def on_execution_finished(sender, *, execution_id: int, status: str, **kwargs) -> None:
    """Publish the end of an execution and drop its cached customer id."""
    customer_ids.forget(execution_id)
    if not live_updates_enabled():
        return
    try:
        publish_execution_finished(execution_id, status)
    except DatabaseError as exc:
        logger.warning(
            "Execution %s: reading the summary failed, end of run not published: %s",
            execution_id,
            exc,
        )


def on_setting_changed(sender, *, setting: str, **kwargs) -> None:
    """Drop the Redis clients when a test changes REDIS_URL."""
    if setting == "REDIS_URL":
        publisher.reset()
        _reset_subscriber()


def connect_signals() -> None:
    """Connect the live-update receivers. Called from AgentsConfig.ready()."""
    api_message_recorded.connect(
        on_api_message_recorded, dispatch_uid="live-api-message-recorded"
    )
    execution_finished.connect(
        on_execution_finished, dispatch_uid="live-execution-finished"
    )
    setting_changed.connect(on_setting_changed, dispatch_uid="live-setting-changed")
