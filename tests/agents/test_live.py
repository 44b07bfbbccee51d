"""Live progress: publishing to Redis pub/sub and the server-sent events stream.

These tests use the real Redis at settings.REDIS_URL, each on its own
channel prefix so that other test runs on the same Redis do not interfere.
"""

import json
import logging
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis
from django.db import connection
from django.urls import reverse

from agents import live
from agents.models import ApiMessage, Execution
from agents.pricing import TokenUsage
from agents.recorder import MessageState, MessageUpdate, StreamRecorder
from agents.selectors import decimal_text
from tests.agents import stream
from tests.factories import ExecutionFactory

SONNET = "claude-sonnet-4-6"

FIRST_RESPONSE = [
    stream.message_start("msg_1", SONNET, stream.usage(input=3, write_5m=4000)),
    stream.message_delta(87),
    stream.message_stop(),
]
SECOND_RESPONSE = [
    stream.message_start("msg_2", SONNET, stream.usage(input=2, read=4000)),
    stream.message_delta(240),
    stream.message_stop(),
]
RESULT = stream.result(num_turns=2, model_usage={SONNET: {"outputTokens": 327}})


@pytest.fixture(autouse=True)
def channel_prefix(settings):
    settings.AGENTMARGIN_LIVE_CHANNEL_PREFIX = f"agentmargin-test-{uuid.uuid4().hex}"


@pytest.fixture
def subscriber(settings):
    """Return a function that subscribes a real Redis client to channels."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    subscriptions = []

    def subscribe(*channels):
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(*channels)
        for _ in channels:
            confirmation = pubsub.parse_response(block=False, timeout=5)
            assert confirmation is not None
        subscriptions.append(pubsub)
        return pubsub

    yield subscribe
    for pubsub in subscriptions:
        pubsub.close()
    client.close()


@pytest.fixture
def closed_port():
    """Return a loopback port with nothing listening on it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def received(pubsub, *, timeout=0.5):
    """Return the JSON events published on `pubsub` until none comes for `timeout`."""
    events = []
    while (message := pubsub.get_message(timeout=timeout)) is not None:
        events.append((message["channel"].decode(), json.loads(message["data"])))
    return events


def record(execution, messages, *, finish=True):
    recorder = StreamRecorder(execution)
    recorder.start()
    for message in messages:
        recorder.handle(message)
    if finish:
        recorder.finish()
    else:
        # As the runner does when the stream goes quiet.
        recorder.settle()
    return recorder


def message_update(message_id, sequence, output, *, output_final, complete):
    state = MessageState(
        message_id=message_id,
        sequence=sequence,
        model=SONNET,
        parent_tool_use_id="",
        usage=TokenUsage(input_tokens=3, output_tokens=output),
        arrived_at=datetime(2026, 1, 5, tzinfo=UTC),
        output_final=output_final,
        complete=complete,
        cost_usd=Decimal("0.0015"),
    )
    return MessageUpdate(
        message=state,
        running_cost_usd=Decimal("0.0015"),
        unpriced=False,
        complete=complete,
    )


def events_url(execution_id):
    return reverse("agents:execution-events", args=[execution_id])


def parse_frame(frame: bytes):
    """Return ("comment", text), ("retry", text) or (event name, data) of one frame."""
    text = frame.decode()
    assert text.endswith("\n\n")
    if text.startswith(":"):
        return ("comment", text[1:].strip())
    if text.startswith("retry:"):
        return ("retry", text.split(":", 1)[1].strip())
    fields = dict(line.split(": ", 1) for line in text.strip().split("\n"))
    return (fields["event"], json.loads(fields["data"]))


def message_progress(events):
    return [
        (data["message_id"], data["output_tokens"], data["complete"])
        for name, data in events
        if name == "api_message"
    ]


def subscriber_count(settings, channel):
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return dict(client.pubsub_numsub(channel))[channel.encode()]
    finally:
        client.close()


# Channels and publishing -----------------------------------------------------


def test_channel_names_use_prefix_setting(settings):
    settings.AGENTMARGIN_LIVE_CHANNEL_PREFIX = "am"
    assert live.execution_channel(12) == "am:execution:12"
    assert live.customer_channel(3) == "am:customer:3"


def test_channel_prefix_default(settings):
    del settings.AGENTMARGIN_LIVE_CHANNEL_PREFIX
    assert live.execution_channel(12) == "agentmargin:execution:12"


def test_recorded_run_published_on_both_channels(transactional_db, subscriber):
    execution = ExecutionFactory(requested_model=SONNET)
    execution_channel = live.execution_channel(execution.pk)
    customer_channel = live.customer_channel(execution.customer_id)
    pubsub = subscriber(execution_channel, customer_channel)

    record(execution, [*FIRST_RESPONSE, RESULT])

    events = received(pubsub)
    execution.refresh_from_db()
    row = ApiMessage.objects.get(execution=execution)
    on_execution = [data for channel, data in events if channel == execution_channel]
    on_customer = [data for channel, data in events if channel == customer_channel]
    assert on_customer == on_execution
    # One event when the response starts, one when it is complete; the
    # final count's write is announced by the message_stop that follows it.
    assert [data["type"] for data in on_execution] == [
        "api_message",
        "api_message",
        "execution_finished",
    ]
    assert [
        (data["output_tokens"], data["output_final"], data["complete"])
        for data in on_execution[:2]
    ] == [(1, False, False), (87, True, True)]
    last_message = on_execution[1]
    assert last_message == {
        "type": "api_message",
        "execution_id": execution.pk,
        "message_id": "msg_1",
        "sequence": 1,
        "model": SONNET,
        "parent_tool_use_id": None,
        "input_tokens": 3,
        "output_tokens": 87,
        "cache_write_5m_tokens": 4000,
        "cache_write_1h_tokens": 0,
        "cache_read_tokens": 0,
        "web_search_requests": 0,
        "cost_usd": decimal_text(row.cost_usd),
        "running_cost_usd": decimal_text(execution.cost_usd),
        "priced_running_cost_usd": decimal_text(execution.cost_usd),
        "unpriced": False,
        "estimated": False,
        "output_final": True,
        "complete": True,
    }
    stored = live.stored_message_events(execution.pk, finished=True)
    assert stored == [last_message]
    finished = on_execution[2]
    assert finished["status"] == Execution.Status.SUCCEEDED
    assert finished["execution_id"] == execution.pk
    assert finished["summary"]["cost_usd"] == decimal_text(execution.cost_usd)
    assert finished["summary"]["api_messages"] == 1


def test_unpriced_message_has_null_costs(transactional_db, subscriber):
    execution = ExecutionFactory(requested_model=SONNET)
    pubsub = subscriber(live.execution_channel(execution.pk))
    record(
        execution,
        [
            stream.message_start("msg_1", "claude-imaginary-9", stream.usage(input=5)),
            stream.message_delta(10),
        ],
        finish=False,
    )
    last = received(pubsub)[-1][1]
    assert last["cost_usd"] is None
    assert last["running_cost_usd"] is None
    assert last["priced_running_cost_usd"] == "0"
    assert last["unpriced"] is True


def test_customer_id_read_once_per_execution(db, django_assert_num_queries):
    execution = ExecutionFactory()
    live.customer_ids.clear()
    update = message_update("msg_1", 1, 1, output_final=False, complete=False)
    with django_assert_num_queries(1):
        live.on_api_message_recorded(
            sender=Execution, execution_id=execution.pk, update=update
        )
    with django_assert_num_queries(0):
        live.on_api_message_recorded(
            sender=Execution, execution_id=execution.pk, update=update
        )


def test_customer_id_from_signal_needs_no_query(db, django_assert_num_queries):
    live.customer_ids.clear()
    update = message_update("msg_1", 1, 1, output_final=False, complete=False)
    with django_assert_num_queries(0):
        live.on_api_message_recorded(
            sender=Execution, execution_id=999_999, update=update, customer_id=7
        )


def test_customer_id_cache_is_bounded(db, django_assert_num_queries):
    cache = live.CustomerIdCache(size=2)
    first, second, third = ExecutionFactory.create_batch(3)
    for execution in (first, second, third):
        assert cache.get(execution.pk) == execution.customer_id
    with django_assert_num_queries(0):
        assert cache.get(third.pk) == third.customer_id
    with django_assert_num_queries(1):
        assert cache.get(first.pk) == first.customer_id


def test_nothing_published_when_disabled(transactional_db, settings, subscriber):
    settings.AGENTMARGIN_LIVE_UPDATES = False
    execution = ExecutionFactory(requested_model=SONNET)
    pubsub = subscriber(live.execution_channel(execution.pk))
    record(execution, [*FIRST_RESPONSE, RESULT])
    assert received(pubsub, timeout=0.3) == []


def test_redis_down_does_not_break_recording(
    transactional_db, settings, closed_port, caplog
):
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port}/0"
    execution = ExecutionFactory(requested_model=SONNET)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="agents.live"):
        record(execution, [*FIRST_RESPONSE, *SECOND_RESPONSE, RESULT])
    elapsed = time.monotonic() - started
    execution.refresh_from_db()
    assert execution.status == Execution.Status.SUCCEEDED
    assert execution.api_message_count == 2
    warnings = [r for r in caplog.records if r.name == "agents.live"]
    assert len(warnings) == 1
    assert "not published to Redis" in warnings[0].getMessage()
    assert str(closed_port) in warnings[0].getMessage()
    assert elapsed < 5


def test_redis_warning_at_most_once_a_minute(settings, closed_port, caplog):
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port}/0"
    now = [1000.0]
    live.publisher.clock = lambda: now[0]
    update = message_update("msg_1", 1, 1, output_final=False, complete=False)
    try:
        with caplog.at_level(logging.WARNING, logger="agents.live"):
            for moment in (1000.0, 1001.0, 1010.0, 1061.0):
                now[0] = moment
                live.publish_message_update(42, 7, update)
    finally:
        live.publisher.clock = time.monotonic
    messages = [r.getMessage() for r in caplog.records if r.name == "agents.live"]
    assert len(messages) == 2
    # 1001 falls in the pause after the first failure; the failure at 1010
    # comes within a minute of the warning, so it is only counted.
    assert "(2 more updates lost since the last warning)" in messages[1]


# Event stream ----------------------------------------------------------------


def test_events_stream_stored_then_live_messages(transactional_db, admin_client):
    execution = ExecutionFactory(requested_model=SONNET)
    recorder = record(execution, FIRST_RESPONSE, finish=False)
    # The first response's events go out before the stream subscribes.
    live.background.flush()

    def record_rest():
        try:
            time.sleep(0.2)
            for message in [*SECOND_RESPONSE, RESULT]:
                recorder.handle(message)
            recorder.finish()
        finally:
            connection.close()

    response = admin_client.get(events_url(execution.pk))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    frames = iter(response.streaming_content)
    assert parse_frame(next(frames)) == ("retry", "5000")
    stored = parse_frame(next(frames))
    worker = threading.Thread(target=record_rest)
    worker.start()
    rest = [parse_frame(frame) for frame in frames]
    worker.join(timeout=10)

    # Its final output count is stored, so the response is complete.
    assert message_progress([stored]) == [("msg_1", 87, True)]
    assert message_progress(rest) == [("msg_2", 1, False), ("msg_2", 240, True)]
    name, finished = rest[-1]
    execution.refresh_from_db()
    assert name == "execution_finished"
    assert finished["status"] == Execution.Status.SUCCEEDED
    assert finished["summary"]["cost_usd"] == decimal_text(execution.cost_usd)
    last_live = rest[1][1]
    assert last_live["running_cost_usd"] == decimal_text(execution.cost_usd)


def test_events_drop_stale_and_repeated_updates(transactional_db, admin_client):
    execution = ExecutionFactory(requested_model=SONNET)
    record(execution, FIRST_RESPONSE[:1], finish=False)
    response = admin_client.get(events_url(execution.pk))
    frames = iter(response.streaming_content)
    next(frames)
    assert message_progress([parse_frame(next(frames))]) == [("msg_1", 1, False)]

    for update in [
        message_update("msg_1", 1, 1, output_final=False, complete=False),
        message_update("msg_1", 1, 87, output_final=True, complete=False),
        message_update("msg_1", 1, 87, output_final=True, complete=True),
        message_update("msg_1", 1, 87, output_final=True, complete=True),
        message_update("msg_2", 2, 1, output_final=False, complete=False),
    ]:
        live.publish_message_update(execution.pk, execution.customer_id, update)
    live.publish_execution_finished(execution.pk, Execution.Status.SUCCEEDED)
    rest = [parse_frame(frame) for frame in frames]

    assert message_progress(rest) == [
        ("msg_1", 87, False),
        ("msg_1", 87, True),
        ("msg_2", 1, False),
    ]
    assert rest[-1][0] == "execution_finished"


def test_events_send_late_model_and_cost(transactional_db, admin_client):
    """A model that arrives after the counts changes nothing else, and is still sent."""
    execution = ExecutionFactory(requested_model=SONNET)
    record(
        execution,
        [stream.message_start("msg_1", "", stream.usage(input=3, write_5m=4000))],
        finish=False,
    )
    response = admin_client.get(events_url(execution.pk))
    frames = iter(response.streaming_content)
    next(frames)
    name, stored = parse_frame(next(frames))
    assert (stored["model"], stored["cost_usd"]) == ("", None)

    priced = message_update("msg_1", 1, 1, output_final=False, complete=False)
    live.publish_message_update(execution.pk, execution.customer_id, priced)
    live.publish_execution_finished(execution.pk, Execution.Status.INTERRUPTED)
    rest = [parse_frame(frame) for frame in frames]

    late = [data for name, data in rest if name == "api_message"]
    assert late[0]["model"] == SONNET
    assert late[0]["cost_usd"] == "0.0015"
    assert rest[-1][0] == "execution_finished"


def test_stored_message_with_final_count_is_complete(transactional_db):
    execution = ExecutionFactory(requested_model=SONNET)
    record(execution, [*FIRST_RESPONSE, SECOND_RESPONSE[0]], finish=False)
    events = live.stored_message_events(execution.pk, finished=False)
    assert [(e["message_id"], e["output_final"], e["complete"]) for e in events] == [
        ("msg_1", True, True),
        ("msg_2", False, False),
    ]


def test_events_of_finished_execution_end_at_once(transactional_db, admin_client):
    execution = ExecutionFactory(requested_model=SONNET)
    record(execution, [*FIRST_RESPONSE, *SECOND_RESPONSE, RESULT])
    response = admin_client.get(events_url(execution.pk))
    events = [parse_frame(frame) for frame in response.streaming_content]
    assert events[0] == ("retry", "5000")
    assert message_progress(events) == [("msg_1", 87, True), ("msg_2", 240, True)]
    assert events[-1][0] == "execution_finished"
    assert events[-1][1]["status"] == Execution.Status.SUCCEEDED
    assert len(events) == 4


def test_events_keepalive_and_time_limit(transactional_db, admin_client, settings):
    settings.AGENTMARGIN_LIVE_KEEPALIVE_SECONDS = 0.1
    settings.AGENTMARGIN_LIVE_STREAM_MAX_SECONDS = 0.45
    execution = ExecutionFactory(status=Execution.Status.RUNNING)
    started = time.monotonic()
    response = admin_client.get(events_url(execution.pk))
    events = [parse_frame(frame) for frame in response.streaming_content]
    elapsed = time.monotonic() - started
    comments = [text for name, text in events if name == "comment"]
    assert comments.count("keep-alive") >= 3
    assert comments[-1] == "stream time limit reached, reconnect to continue"
    assert elapsed < 3


def test_events_end_when_finish_event_is_lost(transactional_db, admin_client, settings):
    settings.AGENTMARGIN_LIVE_KEEPALIVE_SECONDS = 0.1
    settings.AGENTMARGIN_LIVE_STREAM_MAX_SECONDS = 5
    execution = ExecutionFactory(status=Execution.Status.RUNNING)
    response = admin_client.get(events_url(execution.pk))
    frames = iter(response.streaming_content)
    next(frames)
    assert parse_frame(next(frames)) == ("comment", "keep-alive")
    Execution.objects.filter(pk=execution.pk).update(status=Execution.Status.FAILED)
    events = [parse_frame(frame) for frame in frames]
    assert events[-1][0] == "execution_finished"
    assert events[-1][1]["status"] == Execution.Status.FAILED


def test_events_unsubscribe_on_close(transactional_db, admin_client, settings):
    execution = ExecutionFactory(status=Execution.Status.RUNNING)
    channel = live.execution_channel(execution.pk)
    response = admin_client.get(events_url(execution.pk))
    frames = iter(response.streaming_content)
    next(frames)
    assert subscriber_count(settings, channel) == 1
    response.close()
    deadline = time.monotonic() + 2
    while subscriber_count(settings, channel) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert subscriber_count(settings, channel) == 0


def test_events_without_redis_send_stored_messages(
    transactional_db, admin_client, settings, closed_port, caplog
):
    execution = ExecutionFactory(requested_model=SONNET)
    record(execution, FIRST_RESPONSE, finish=False)
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port}/0"
    with caplog.at_level(logging.WARNING, logger="agents.views"):
        response = admin_client.get(events_url(execution.pk))
        events = [parse_frame(frame) for frame in response.streaming_content]
    assert events[0] == ("retry", "5000")
    assert message_progress(events) == [("msg_1", 87, True)]
    assert len(events) == 2
    warnings = [r.getMessage() for r in caplog.records if r.name == "agents.views"]
    assert len(warnings) == 1
    assert "subscribing to Redis failed" in warnings[0]


def test_events_anonymous_forbidden(db, client):
    execution = ExecutionFactory()
    assert client.get(events_url(execution.pk)).status_code == 403


def test_events_non_staff_forbidden(db, client, django_user_model):
    execution = ExecutionFactory()
    client.force_login(django_user_model.objects.create_user(username="viewer"))
    assert client.get(events_url(execution.pk)).status_code == 403


def test_events_unknown_execution_not_found(db, admin_client):
    assert admin_client.get(events_url(999_999)).status_code == 404


def test_events_reject_post(db, admin_client):
    execution = ExecutionFactory()
    assert admin_client.post(events_url(execution.pk)).status_code == 405


# Test page -------------------------------------------------------------------


def test_live_page_shows_stored_messages(db, admin_client):
    execution = ExecutionFactory(requested_model=SONNET)
    record(execution, [*FIRST_RESPONSE, *SECOND_RESPONSE], finish=False)
    row = ApiMessage.objects.get(execution=execution, message_id="msg_2")
    response = admin_client.get(reverse("agents:execution-live", args=[execution.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="message-msg_1"' in page
    assert 'id="message-msg_2"' in page
    assert f'<td class="number">{decimal_text(row.cost_usd)}</td>' in page
    assert f'data-events-url="{events_url(execution.pk)}"' in page
    assert "new EventSource(url)" in page


def test_live_page_of_finished_execution_opens_no_stream(db, admin_client):
    execution = ExecutionFactory(requested_model=SONNET)
    record(execution, [*FIRST_RESPONSE, RESULT])
    response = admin_client.get(reverse("agents:execution-live", args=[execution.pk]))
    page = response.content.decode()
    assert 'data-events-url=""' in page
    assert '<dd data-summary="status">succeeded</dd>' in page


def test_live_page_redirects_anonymous_to_login(db, client):
    execution = ExecutionFactory()
    url = reverse("agents:execution-live", args=[execution.pk])
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_live_page_non_staff_forbidden(db, client, django_user_model):
    execution = ExecutionFactory()
    client.force_login(django_user_model.objects.create_user(username="viewer"))
    url = reverse("agents:execution-live", args=[execution.pk])
    assert client.get(url).status_code == 403


def test_live_page_unknown_execution_not_found(db, admin_client):
    url = reverse("agents:execution-live", args=[999_999])
    assert admin_client.get(url).status_code == 404


# Channels of these ids get no events from other tests' recordings, which
# the background thread may still be publishing.
UNUSED_ID = 987_654_321


def test_publisher_keeps_order_across_script_calls(subscriber, monkeypatch):
    """A batch larger than one script call goes out in several, in order."""
    monkeypatch.setattr(live, "PUBLISH_SCRIPT_MAX_PAIRS", 3)
    channels = [live.execution_channel(UNUSED_ID), live.customer_channel(UNUSED_ID)]
    pubsub = subscriber(*channels)
    publisher = live.RedisPublisher()
    messages = [
        (channels[number % 2], json.dumps({"number": number})) for number in range(7)
    ]
    assert publisher.publish_many(messages, execution_id=1, events=7)
    assert [data["number"] for _, data in received(pubsub)] == list(range(7))
    publisher.reset()


def test_publisher_reloads_flushed_script(subscriber, settings):
    channel = live.execution_channel(UNUSED_ID)
    pubsub = subscriber(channel)
    publisher = live.RedisPublisher()
    assert publisher.publish([channel], json.dumps({"n": 1}), execution_id=1)
    redis.Redis.from_url(settings.REDIS_URL).script_flush()
    assert publisher.publish([channel], json.dumps({"n": 2}), execution_id=1)
    assert [data["n"] for _, data in received(pubsub)] == [1, 2]
    publisher.reset()


def test_publisher_falls_back_when_scripts_rejected(subscriber, monkeypatch, caplog):
    """A Redis that rejects EVALSHA still gets every event, by PUBLISH."""
    channel = live.execution_channel(UNUSED_ID)
    pubsub = subscriber(channel)
    publisher = live.RedisPublisher()
    calls = []

    def reject_script(self, keys=None, args=None, client=None):
        calls.append(args)
        raise redis.ResponseError(
            "NOPERM this user has no permissions to run 'evalsha'"
        )

    monkeypatch.setattr(redis.commands.core.Script, "__call__", reject_script)
    with caplog.at_level(logging.WARNING, logger="agents.live"):
        assert publisher.publish([channel], json.dumps({"n": 1}), execution_id=1)
        assert publisher.publish([channel], json.dumps({"n": 2}), execution_id=1)
    assert [data["n"] for _, data in received(pubsub)] == [1, 2]
    # Rejected once, then not tried again.
    assert len(calls) == 1
    assert "Redis rejected the live-update script" in caplog.text
    publisher.reset()


def test_publisher_keeps_script_after_failure_inside_it(subscriber, monkeypatch):
    """An error raised while the script ran is a failed batch, not a rejection."""
    channel = live.execution_channel(UNUSED_ID)
    pubsub = subscriber(channel)
    publisher = live.RedisPublisher()

    def busy(self, keys=None, args=None, client=None):
        raise redis.ResponseError("BUSY Redis is busy running a script.")

    monkeypatch.setattr(redis.commands.core.Script, "__call__", busy)
    assert not publisher.publish([channel], json.dumps({"n": 1}), execution_id=1)
    # Nothing was sent again by PUBLISH, and the script stays in use.
    assert received(pubsub) == []
    assert publisher._scripts_allowed
    publisher.reset()


@pytest.fixture
def no_pattern_subscriptions(settings):
    """Skip the test while a pattern subscription elsewhere on Redis receives every event."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        if client.pubsub_numpat():
            pytest.skip("a pattern subscription on this Redis receives every event")
    finally:
        client.close()


def test_publisher_finds_subscribed_channels(subscriber, no_pattern_subscriptions):
    watched = live.execution_channel(UNUSED_ID)
    unwatched = live.customer_channel(UNUSED_ID)
    subscriber(watched)
    publisher = live.RedisPublisher()
    assert publisher.subscribed_channels({watched, unwatched}) == {watched}
    publisher.reset()


def test_pattern_subscription_gets_every_event(settings):
    """NUMSUB does not count pattern subscribers, so any pattern gets every event sent."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(f"{live.channel_prefix()}:*")
    assert pubsub.parse_response(block=False, timeout=5) is not None
    publisher = live.RedisPublisher()
    background = live.BackgroundPublisher(publisher, batch_seconds=0.01)
    try:
        assert (
            publisher.subscribed_channels({live.execution_channel(UNUSED_ID)}) is None
        )
        update = message_update("msg_1", 1, 5, output_final=True, complete=True)
        background.submit_update(UNUSED_ID, UNUSED_ID, update)
        assert background.flush(timeout=5)
        events = received(pubsub)
        assert [channel for channel, _ in events] == [
            live.execution_channel(UNUSED_ID),
            live.customer_channel(UNUSED_ID),
        ]
    finally:
        pubsub.close()
        client.close()
        publisher.reset()


def test_publisher_sends_all_when_pubsub_rejected(monkeypatch, caplog):
    calls = []

    def reject(self, raise_on_error=True):
        calls.append(self.command_stack)
        raise redis.ResponseError(
            "NOPERM this user has no permissions to run the 'pubsub|numpat' command"
        )

    monkeypatch.setattr(redis.client.Pipeline, "execute", reject)
    publisher = live.RedisPublisher()
    channels = {live.execution_channel(UNUSED_ID)}
    with caplog.at_level(logging.WARNING, logger="agents.live"):
        assert publisher.subscribed_channels(channels) is None
        assert publisher.subscribed_channels(channels) is None
    # Requested once, then not again.
    assert len(calls) == 1
    assert "Redis rejected PUBSUB" in caplog.text
    publisher.reset()


def test_unwatched_run_builds_no_events(
    transactional_db, subscriber, monkeypatch, no_pattern_subscriptions
):
    built = []
    original = live.message_event

    def counting(execution_id, update):
        built.append(execution_id)
        return original(execution_id, update)

    monkeypatch.setattr(live, "message_event", counting)
    unwatched = ExecutionFactory(requested_model=SONNET)
    record(unwatched, [*FIRST_RESPONSE, RESULT])
    assert built == []

    watched = ExecutionFactory(requested_model=SONNET)
    pubsub = subscriber(live.execution_channel(watched.pk))
    record(watched, [*FIRST_RESPONSE, RESULT])
    assert built == [watched.pk, watched.pk]
    assert [data["type"] for _, data in received(pubsub)] == [
        "api_message",
        "api_message",
        "execution_finished",
    ]
