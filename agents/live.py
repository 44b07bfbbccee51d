"""Publish each recorded API message to Redis pub/sub, for live progress.

Every `api_message_recorded` signal becomes one JSON event, published on
the execution's channel (`agentmargin:execution:<id>`) and on its
customer's channel (`agentmargin:customer:<id>`). The `execution_finished`
signal becomes one last event on both. The event stream in agents.views
relays the execution's channel to browsers and API clients.

The signal receivers do not publish themselves. They hand each event to a
background thread of their process, which sends what has gathered about
every PUBLISH_BATCH_SECONDS (PUBLISH_IDLE_BATCH_SECONDS while nobody
subscribes) as one call of a Lua script that publishes
each event in turn (or as a pipeline of PUBLISH commands where Redis
rejects scripts), so recording a message never waits for Redis. At the end
of an execution the receiver waits, for at most FLUSH_TIMEOUT_SECONDS,
until the thread has sent everything so far, so a command that exits after
its run loses nothing unless Redis takes longer than that. Events beyond MAX_PENDING_EVENTS are dropped rather
than held.

Before it builds a batch's events, the thread reads from Redis which of
their channels have a subscriber (PUBSUB NUMSUB, with PUBSUB NUMPAT for
pattern subscriptions), then builds and sends only the events someone
receives. Most runs have no one watching, and Redis would drop their events
anyway. The recorder queues an update after its write commits, so a
subscriber that arrives after the counts were read misses only events whose
writes were committed before it subscribed. The event stream in
agents.views reads the stored messages after subscribing, so it still
shows them. When Redis cannot return the counts, every event is sent.

Publishing is best effort. Redis errors are caught and logged at most once a
minute, and after a failure publishing pauses for a few seconds, so an
unreachable Redis costs at most one short socket timeout per pause.
Settings, all read with a default:

- `AGENTMARGIN_LIVE_UPDATES` (default True): False skips publishing.
- `AGENTMARGIN_LIVE_CHANNEL_PREFIX` (default "agentmargin"): channel prefix.
"""

from __future__ import annotations

import collections
import json
import logging
import os
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

# A Redis server that does not respond delays publishing by the connect or
# socket timeout, once per pause.
PUBLISH_SOCKET_TIMEOUT_SECONDS = 0.5
# The background thread sends a batch this long after the first event of it
# arrived. Events that gather beyond MAX_PENDING_EVENTS are dropped.
PUBLISH_BATCH_SECONDS = 0.05
# After a batch none of whose channels had a subscriber, the next batch waits
# this long instead, so a worker process without subscribers wakes its
# publishing thread twice a second rather than twenty times. A subscriber's
# first events may then come this much later; flush() does not wait for it.
PUBLISH_IDLE_BATCH_SECONDS = 0.5
MAX_PENDING_EVENTS = 10_000
# The end of an execution waits this long at most for its events to be sent.
FLUSH_TIMEOUT_SECONDS = 2.0
PUBLISH_PAUSE_AFTER_FAILURE_SECONDS = 5.0

# Publishes ARGV[1] on channel ARGV[2], ARGV[3] on ARGV[4] and so on, in
# order. One script call per batch costs this process a third of the CPU of
# a pipeline with a PUBLISH command per event and channel, which redis-py
# packs and whose replies it parses one by one.
PUBLISH_SCRIPT = """
for i = 1, #ARGV, 2 do
    redis.call('PUBLISH', ARGV[i + 1], ARGV[i])
end
return #ARGV / 2
"""
# Pairs sent per script call, so that one call does not block Redis for long.
PUBLISH_SCRIPT_MAX_PAIRS = 2000
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


def update_fields(update: MessageUpdate) -> tuple:
    """Return the fields of a recorder update's `api_message` event, for `message_event`.

    The tuple contains only numbers, strings, Decimals and None, so the garbage
    collector stops tracking it at its first pass: updates that wait for the
    publishing thread add nothing to later collections. The recorder's own
    objects, held until then, would survive into the oldest generation and
    make full collections more frequent.
    """
    state = update.message
    return (
        state.message_id,
        state.sequence,
        state.model,
        state.parent_tool_use_id,
        *state.usage.counts(),
        state.cost_usd,
        update.running_cost_usd,
        update.unpriced,
        state.estimated,
        state.output_final,
        update.complete,
    )


def message_event(execution_id: int, fields: tuple) -> dict:
    """Build an `api_message` event from its `update_fields`.

    `running_cost_usd` is the execution's cost so far. It is null while any
    of its messages is unpriced, and `priced_running_cost_usd` is then the
    priced part.
    """
    (message_id, sequence, model, parent_tool_use_id, *rest) = fields
    counts = rest[: len(TOKEN_COUNT_FIELDS)]
    cost, running_cost, unpriced, estimated, output_final, complete = rest[
        len(TOKEN_COUNT_FIELDS) :
    ]
    return {
        "type": "api_message",
        "execution_id": execution_id,
        "message_id": message_id,
        "sequence": sequence,
        "model": model,
        "parent_tool_use_id": parent_tool_use_id or None,
        **dict(zip(TOKEN_COUNT_FIELDS, counts, strict=True)),
        "cost_usd": decimal_text(cost),
        "running_cost_usd": None if unpriced else decimal_text(running_cost),
        "priced_running_cost_usd": decimal_text(running_cost),
        "unpriced": unpriced,
        "estimated": estimated,
        "output_final": output_final,
        "complete": complete,
    }


def stored_message_events(execution_id: int, *, finished: bool) -> list[dict]:
    """Build the `api_message` events of the messages stored so far, in order.

    The running cost of each is the sum up to it in arrival order. The
    recorder does not store whether a response has ended, so a message is
    reported complete once its final output count is stored (its
    message_stop follows at once), once a later message of the same agent
    or subagent exists, or once the execution has `finished`.
    """
    rows = list(
        ApiMessage.objects.filter(execution_id=execution_id).order_by("sequence")
    )
    later_agents: set[str] = set()
    complete = {}
    for row in reversed(rows):
        complete[row.pk] = (
            finished or row.output_final or row.parent_tool_use_id in later_agents
        )
        later_agents.add(row.parent_tool_use_id)
    events = []
    priced_running_cost = Decimal(0)
    unpriced = False
    for row in rows:
        if row.cost_usd is None:
            unpriced = True
        else:
            priced_running_cost += row.cost_usd
        fields = (
            row.message_id,
            row.sequence,
            row.model,
            row.parent_tool_use_id,
            *(getattr(row, kind) for kind in TOKEN_COUNT_FIELDS),
            row.cost_usd,
            priced_running_cost,
            unpriced,
            row.estimated,
            row.output_final,
            complete[row.pk],
        )
        events.append(message_event(execution_id, fields))
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
    payload = json.dumps(message_event(execution_id, update_fields(update)))
    publisher.publish(channels, payload, execution_id=execution_id)


def publish_execution_finished(execution_id: int, status: str) -> None:
    """Publish the end of an execution, with its summary, on both its channels.

    Never raises a Redis error. The event's status and summary are read
    from the database, where the signal's `status` is already committed.
    """
    if not live_updates_enabled():
        return
    built = _finished_channels_and_payload(execution_id, status)
    if built is not None:
        channels, payload = built
        publisher.publish(channels, payload, execution_id=execution_id)


def _finished_channels_and_payload(
    execution_id: int, status: str
) -> tuple[list[str], str] | None:
    """Return the channels and JSON of the `execution_finished` event, None when the execution is gone."""
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
        return None
    channels = [
        execution_channel(execution_id),
        customer_channel(execution.customer_id),
    ]
    return channels, json.dumps(finished_event(execution))


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
        self._script: redis.commands.core.Script | None = None
        # False once Redis has rejected the publishing script.
        self._scripts_allowed = True
        # False once Redis has rejected PUBSUB NUMSUB or NUMPAT.
        self._subscriber_counts_allowed = True
        self._paused_until = 0.0
        self._warned_at: float | None = None
        self._failures_since_warning = 0

    def subscribed_channels(self, channels: set[str]) -> set[str] | None:
        """Return which of `channels` have a subscriber now, or None to send to all of them.

        None when a pattern subscription exists anywhere on the server (it
        may match any channel), when Redis rejects PUBSUB, and while
        publishing is paused after a failure. Other Redis errors are
        raised, for the caller to pass to `record_failure`.
        """
        if not self._subscriber_counts_allowed or self.clock() < self._paused_until:
            return None
        try:
            client, _ = self._get_client_and_script()
            pipeline = client.pipeline(transaction=False)
            pipeline.pubsub_numpat()
            pipeline.pubsub_numsub(*channels)
            patterns, counts = pipeline.execute()
        except redis.ResponseError as exc:
            # An ACL without PUBSUB: publish every event.
            self._subscriber_counts_allowed = False
            logger.warning(
                "Redis rejected PUBSUB, so every live update is published "
                "whether or not anyone subscribes: %s",
                exc,
            )
            return None
        if patterns:
            return None
        return {channel.decode() for channel, count in counts if count}

    def publish(self, channels: list[str], payload: str, *, execution_id: int) -> bool:
        """Publish `payload` on each channel and return whether Redis accepted it."""
        return self.publish_many(
            [(channel, payload) for channel in channels], execution_id=execution_id
        )

    def publish_many(
        self, messages: list[tuple[str, str]], *, execution_id: int, events: int = 1
    ) -> bool:
        """Publish (channel, payload) pairs in one pipeline; return whether Redis accepted them.

        `events` is the number of events the pairs carry, all lost when
        publishing fails. `execution_id` names the first of them in a
        warning.
        """
        if self.clock() < self._paused_until:
            self._count_failures(events)
            return False
        try:
            for start in range(0, len(messages), PUBLISH_SCRIPT_MAX_PAIRS):
                self._send(messages[start : start + PUBLISH_SCRIPT_MAX_PAIRS])
        except redis.RedisError as exc:
            self.record_failure(exc, execution_id=execution_id, events=events)
            return False
        return True

    def record_failure(
        self, exc: redis.RedisError, *, execution_id: int, events: int
    ) -> None:
        """Pause publishing after `exc`, and warn unless a warning went out less than a minute ago."""
        self._paused_until = self.clock() + PUBLISH_PAUSE_AFTER_FAILURE_SECONDS
        self._warn(execution_id, exc, events)

    def reset(self) -> None:
        """Drop the client and the failure state, as after a settings change."""
        with self._lock:
            client, self._client = self._client, None
            self._scripts_allowed = True
            self._subscriber_counts_allowed = True
            self._paused_until = 0.0
            self._warned_at = None
            self._failures_since_warning = 0
        if client is not None:
            client.close()

    def _send(self, messages: list[tuple[str, str]]) -> None:
        """Publish (channel, payload) pairs in order, using the script unless Redis rejected it."""
        client, script = self._get_client_and_script()
        if self._scripts_allowed:
            arguments = []
            for channel, payload in messages:
                arguments += (payload, channel)
            try:
                # Script runs EVALSHA and loads the script when Redis lacks it.
                script(args=arguments)
                return
            except redis.ResponseError as exc:
                if not _scripts_rejected(exc):
                    # Raised while the script ran (a BUSY server, a channel
                    # the ACL denies): some events may have gone out, so
                    # sending them again could repeat them.
                    raise
                # An ACL without EVALSHA, or a hosted Redis with scripting
                # off, rejects the command before it runs, so nothing went out.
                self._scripts_allowed = False
                logger.warning(
                    "Redis rejected the live-update script, so updates are "
                    "published one command at a time from now on: %s",
                    exc,
                )
        pipeline = client.pipeline(transaction=False)
        for channel, payload in messages:
            pipeline.publish(channel, payload)
        pipeline.execute()

    def _get_client_and_script(self) -> tuple[redis.Redis, redis.commands.core.Script]:
        with self._lock:
            if self._client is None:
                self._client = redis_client(
                    socket_timeout=PUBLISH_SOCKET_TIMEOUT_SECONDS,
                    connect_timeout=PUBLISH_SOCKET_TIMEOUT_SECONDS,
                )
                self._script = self._client.register_script(PUBLISH_SCRIPT)
            return self._client, self._script

    def count_failures(self, events: int) -> None:
        """Count events lost without trying Redis, for the next warning."""
        self._count_failures(events)

    def _count_failures(self, events: int) -> None:
        with self._lock:
            self._failures_since_warning += events

    def _warn(self, execution_id: int, exc: redis.RedisError, events: int) -> None:
        with self._lock:
            now = self.clock()
            if (
                self._warned_at is not None
                and now - self._warned_at < WARNING_INTERVAL_SECONDS
            ):
                self._failures_since_warning += events
                return
            skipped = self._failures_since_warning
            self._warned_at = now
            # The warning names one event; the rest of them count towards
            # the next warning.
            self._failures_since_warning = events - 1
        logger.warning(
            "Execution %s: live update not published to Redis (%d more updates "
            "lost since the last warning), publishing paused for %ss: %s",
            execution_id,
            skipped,
            PUBLISH_PAUSE_AFTER_FAILURE_SECONDS,
            exc,
        )


publisher = RedisPublisher()


class BackgroundPublisher:
    """Publishes events from a thread of its own, in batches, without blocking.

    `submit_update` and `submit` queue an event and return at once. The
    thread, started on first use in each process (a forked child starts its
    own), waits PUBLISH_BATCH_SECONDS after the first event of a batch
    (PUBLISH_IDLE_BATCH_SECONDS after a batch that reached no subscriber),
    reads through `publisher` which of the batch's channels have a
    subscriber, and sends the events for those, in the order they were
    queued. When MAX_PENDING_EVENTS are waiting, further events are dropped
    and counted in the next warning.
    """

    def __init__(
        self,
        redis_publisher: RedisPublisher,
        *,
        batch_seconds: float = PUBLISH_BATCH_SECONDS,
        idle_batch_seconds: float = PUBLISH_IDLE_BATCH_SECONDS,
        max_pending: int = MAX_PENDING_EVENTS,
    ):
        self.publisher = redis_publisher
        self.batch_seconds = batch_seconds
        self.idle_batch_seconds = idle_batch_seconds
        self.max_pending = max_pending
        self._start_state()

    def _start_state(self) -> None:
        # Items are (execution_id, customer_id, *update_fields()) for an
        # api_message event, (execution_id, messages) for a built event, or a
        # threading.Event that flush() waits on.
        self._pending: collections.deque = collections.deque()
        self._wake = threading.Event()
        # Set by flush(): the thread sends at once instead of waiting.
        self._flush_requested = threading.Event()
        # True while the last batch reached no subscriber.
        self._unwatched = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def after_fork_in_child(self) -> None:
        """Forget the parent's queue and thread, which the child does not have."""
        self._start_state()

    def submit_update(
        self, execution_id: int, customer_id: int | None, update: MessageUpdate
    ) -> bool:
        """Queue the `api_message` event of a recorder update; False when dropped."""
        # One flat tuple: a tuple inside it would keep the outer one tracked
        # by the garbage collector for one more pass.
        return self._put((execution_id, customer_id, *update_fields(update)))

    def submit(self, execution_id: int, channels: list[str], payload: str) -> bool:
        """Queue `payload` for each channel, after the events already queued."""
        return self._put((execution_id, [(channel, payload) for channel in channels]))

    def flush(self, timeout: float = FLUSH_TIMEOUT_SECONDS) -> bool:
        """Wait until the events queued so far are sent or lost; False on timeout."""
        if self._thread is None and not self._pending:
            return True
        done = threading.Event()
        self._pending.append(done)
        self._flush_requested.set()
        self._ensure_thread()
        self._wake.set()
        return done.wait(timeout)

    def _put(self, item) -> bool:
        if len(self._pending) >= self.max_pending:
            self.publisher.count_failures(1)
            return False
        self._pending.append(item)
        if self._thread is None:
            self._ensure_thread()
        if not self._wake.is_set():
            self._wake.set()
        return True

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(
                    target=self._run, name="agentmargin-live-publisher", daemon=True
                )
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        wake = self._wake
        flush_requested = self._flush_requested
        while True:
            wake.wait()
            wake.clear()
            if not flush_requested.is_set():
                flush_requested.wait(
                    self.idle_batch_seconds if self._unwatched else self.batch_seconds
                )
            flush_requested.clear()
            self._send_pending()

    def _send_pending(self) -> None:
        # Take what is queued before reading the subscriber counts, so the
        # write behind each update taken was committed before that read.
        pending = self._pending
        items = []
        while pending:
            items.append(pending.popleft())
        channels = [self._channels_of(item) for item in items]
        needed = {channel for names in channels if names for channel in names}
        try:
            subscribed = self.publisher.subscribed_channels(needed) if needed else None
        except redis.RedisError as exc:
            self._drop(items, exc)
            return
        if needed:
            self._unwatched = subscribed is not None and not subscribed
        messages: list[tuple[str, str]] = []
        events = 0
        first_execution_id = 0
        for item, names in zip(items, channels, strict=True):
            if names is None:
                # A flush marker: events queued before it go out first.
                self._publish(messages, first_execution_id, events)
                messages, events = [], 0
                item.set()
                continue
            if subscribed is not None:
                names = [channel for channel in names if channel in subscribed]
                if not names:
                    continue
            if not events:
                first_execution_id = item[0]
            events += 1
            try:
                messages.extend(self._messages_of(item, names))
            except Exception:
                # A bug here must not end the thread and with it live updates.
                logger.exception(
                    "Execution %s: live update not built, dropped", item[0]
                )
        self._publish(messages, first_execution_id, events)

    def _drop(self, items: list, exc: redis.RedisError) -> None:
        """Count the events of `items` as lost to `exc`, and release their flush markers."""
        events = [item for item in items if not isinstance(item, threading.Event)]
        if events:
            self.publisher.record_failure(
                exc, execution_id=events[0][0], events=len(events)
            )
        for item in items:
            if isinstance(item, threading.Event):
                item.set()

    @staticmethod
    def _channels_of(item) -> list[str] | None:
        """Return the channels a queued item goes to, None for a flush marker."""
        if isinstance(item, threading.Event):
            return None
        if len(item) == 2:
            return [channel for channel, _ in item[1]]
        execution_id, customer_id = item[0], item[1]
        if customer_id is None:
            return [execution_channel(execution_id)]
        return [execution_channel(execution_id), customer_channel(customer_id)]

    @staticmethod
    def _messages_of(item, channels: list[str]) -> list[tuple[str, str]]:
        """Return the (channel, payload) pairs of a queued item for `channels`."""
        if len(item) == 2:
            return [pair for pair in item[1] if pair[0] in channels]
        payload = json.dumps(message_event(item[0], item[2:]))
        return [(channel, payload) for channel in channels]

    def _publish(
        self, messages: list[tuple[str, str]], execution_id: int, events: int
    ) -> None:
        if not messages:
            return
        try:
            self.publisher.publish_many(
                messages, execution_id=execution_id, events=events
            )
        except Exception:
            # RedisPublisher catches Redis errors; anything else is a bug,
            # which must not end the thread and with it live updates.
            logger.exception(
                "Execution %s: publishing %d live updates failed", execution_id, events
            )


def _scripts_rejected(exc: redis.ResponseError) -> bool:
    """Return whether Redis rejected running scripts at all, rather than failing in one."""
    text = str(exc).lower()
    command = "'evalsha'" in text or "'eval'" in text
    return command and (text.startswith("noperm") or "unknown command" in text)


background = BackgroundPublisher(publisher)
os.register_at_fork(after_in_child=background.after_fork_in_child)


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
    """Queue a recorded message for publishing, using the signal's `customer_id` if it has one."""
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
    background.submit_update(execution_id, customer_id, update)


def on_execution_finished(sender, *, execution_id: int, status: str, **kwargs) -> None:
    """Publish the end of an execution after its messages, and wait until they are sent."""
    customer_ids.forget(execution_id)
    if not live_updates_enabled():
        return
    try:
        built = _finished_channels_and_payload(execution_id, status)
    except DatabaseError as exc:
        logger.warning(
            "Execution %s: reading the summary failed, end of run not published: %s",
            execution_id,
            exc,
        )
        built = None
    if built is not None:
        channels, payload = built
        background.submit(execution_id, channels, payload)
    if not background.flush():
        logger.warning(
            "Execution %s: live updates still unsent after %ss, left to the "
            "background thread",
            execution_id,
            FLUSH_TIMEOUT_SECONDS,
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
