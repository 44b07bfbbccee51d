"""The background thread that publishes live updates in batches."""

import gc
import json
import logging
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

from agents import live
from agents.pricing import TokenUsage
from agents.recorder import MessageState, MessageUpdate


class RecordingPublisher:
    """Stands in for RedisPublisher and keeps each batch it is given."""

    def __init__(self, *, fail_first: bool = False, subscribed=None):
        self.batches = []
        self.lost = 0
        self.fail_first = fail_first
        self.sent = threading.Event()
        # The channels with a subscriber, None for all of them.
        self.subscribed = subscribed
        self.requests = []

    def subscribed_channels(self, channels):
        self.requests.append(set(channels))
        return self.subscribed

    def publish_many(self, messages, *, execution_id, events=1):
        if self.fail_first:
            self.fail_first = False
            raise RuntimeError("bug in publishing")
        self.batches.append((execution_id, events, list(messages)))
        self.sent.set()
        return True

    def count_failures(self, events):
        self.lost += events


def update(message_id, output):
    state = MessageState(
        message_id=message_id,
        sequence=1,
        model="claude-sonnet-4-6",
        parent_tool_use_id="",
        usage=TokenUsage(input_tokens=3, output_tokens=output),
        arrived_at=datetime(2026, 1, 5, tzinfo=UTC),
        cost_usd=Decimal("0.0015"),
    )
    return MessageUpdate(
        message=state, running_cost_usd=Decimal("0.0015"), unpriced=False, complete=True
    )


def published_outputs(batches):
    return [
        (channel, json.loads(payload)["output_tokens"])
        for _, _, messages in batches
        for channel, payload in messages
    ]


def test_updates_sent_in_one_batch_in_order(settings):
    settings.AGENTMARGIN_LIVE_CHANNEL_PREFIX = "am"
    redis_publisher = RecordingPublisher()
    background = live.BackgroundPublisher(redis_publisher, batch_seconds=0.2)
    for output in range(1, 31):
        assert background.submit_update(5, 9, update("msg_1", output))
    assert background.flush(timeout=5)
    assert len(redis_publisher.batches) == 1
    execution_id, events, _ = redis_publisher.batches[0]
    assert (execution_id, events) == (5, 30)
    outputs = published_outputs(redis_publisher.batches)
    assert outputs[:2] == [("am:execution:5", 1), ("am:customer:9", 1)]
    assert [output for channel, output in outputs if "execution" in channel] == list(
        range(1, 31)
    )


def test_submitted_payload_follows_updates():
    redis_publisher = RecordingPublisher()
    background = live.BackgroundPublisher(redis_publisher, batch_seconds=0.2)
    background.submit_update(5, None, update("msg_1", 10))
    background.submit(5, ["a", "b"], '{"type": "execution_finished"}')
    assert background.flush(timeout=5)
    messages = [message for batch in redis_publisher.batches for message in batch[2]]
    assert [channel for channel, _ in messages] == [live.execution_channel(5), "a", "b"]


def test_events_beyond_limit_dropped():
    redis_publisher = RecordingPublisher()
    background = live.BackgroundPublisher(
        redis_publisher, batch_seconds=0.3, max_pending=3
    )
    accepted = [background.submit_update(5, None, update("msg_1", n)) for n in range(5)]
    assert accepted == [True, True, True, False, False]
    assert redis_publisher.lost == 2
    assert background.flush(timeout=5)
    assert redis_publisher.batches[0][1] == 3


def test_send_waits_for_batch_interval():
    redis_publisher = RecordingPublisher()
    background = live.BackgroundPublisher(redis_publisher, batch_seconds=0.3)
    background.submit_update(5, None, update("msg_1", 1))
    assert not redis_publisher.sent.wait(0.1)
    assert redis_publisher.sent.wait(5)


def test_failed_batch_keeps_thread_alive(caplog):
    redis_publisher = RecordingPublisher(fail_first=True)
    background = live.BackgroundPublisher(redis_publisher, batch_seconds=0.01)
    with caplog.at_level(logging.ERROR, logger="agents.live"):
        background.submit_update(5, None, update("msg_1", 1))
        assert background.flush(timeout=5)
    assert "publishing 1 live updates failed" in caplog.text
    background.submit_update(5, None, update("msg_1", 2))
    assert background.flush(timeout=5)
    assert published_outputs(redis_publisher.batches) == [
        (live.execution_channel(5), 2)
    ]


def test_flush_without_events_returns_at_once():
    background = live.BackgroundPublisher(RecordingPublisher())
    assert background.flush(timeout=0)


def test_forked_child_starts_empty():
    redis_publisher = RecordingPublisher()
    background = live.BackgroundPublisher(redis_publisher, batch_seconds=5)
    background.submit_update(5, None, update("msg_1", 1))
    background.after_fork_in_child()
    assert background.flush(timeout=0)
    background.submit_update(6, None, update("msg_2", 1))
    assert background.flush(timeout=5)
    assert [batch[0] for batch in redis_publisher.batches] == [6]


def test_only_subscribed_channels_get_events(settings):
    settings.AGENTMARGIN_LIVE_CHANNEL_PREFIX = "am"
    redis_publisher = RecordingPublisher(
        subscribed={"am:execution:5", "am:customer:10"}
    )
    background = live.BackgroundPublisher(redis_publisher, batch_seconds=0.2)
    background.submit_update(5, 9, update("msg_1", 1))
    background.submit_update(6, 10, update("msg_2", 2))
    background.submit_update(7, None, update("msg_3", 3))
    background.submit(6, ["am:execution:6", "am:customer:10"], '{"output_tokens": 4}')
    assert background.flush(timeout=5)
    # One request for everything queued, naming every channel once.
    assert redis_publisher.requests == [
        {
            "am:execution:5",
            "am:customer:9",
            "am:execution:6",
            "am:customer:10",
            "am:execution:7",
        }
    ]
    assert published_outputs(redis_publisher.batches) == [
        ("am:execution:5", 1),
        ("am:customer:10", 2),
        ("am:customer:10", 4),
    ]
    # Events without a subscriber are not counted as lost.
    assert redis_publisher.batches[0][:2] == (5, 3)
    assert redis_publisher.lost == 0


def test_no_subscribers_sends_nothing_flush_returns():
    redis_publisher = RecordingPublisher(subscribed=set())
    background = live.BackgroundPublisher(redis_publisher, batch_seconds=5)
    for output in range(3):
        background.submit_update(5, 9, update("msg_1", output))
    assert background.flush(timeout=5)
    assert redis_publisher.batches == []
    assert redis_publisher.lost == 0


def test_queued_update_untracked_by_gc():
    """A queued update is a tuple of plain values that the collector stops tracking."""
    background = live.BackgroundPublisher(RecordingPublisher(), batch_seconds=5)
    background.submit_update(5, 9, update("msg_1", 1))
    queued = background._pending[0]
    gc.collect()
    assert not gc.is_tracked(queued)
    assert live.message_event(5, queued[2:])["output_tokens"] == 1


def wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_idle_batches_wait_but_flush_does_not():
    redis_publisher = RecordingPublisher(subscribed=set())
    background = live.BackgroundPublisher(
        redis_publisher, batch_seconds=0.01, idle_batch_seconds=1.0
    )
    background.submit_update(5, 9, update("msg_1", 1))
    wait_for(lambda: len(redis_publisher.requests) == 1)
    background.submit_update(5, 9, update("msg_1", 2))
    time.sleep(0.3)
    # The batch after one that reached no subscriber waits the idle interval.
    assert len(redis_publisher.requests) == 1
    started = time.monotonic()
    assert background.flush(timeout=5)
    assert time.monotonic() - started < 0.5
    assert len(redis_publisher.requests) == 2


def test_watched_batches_keep_short_interval():
    redis_publisher = RecordingPublisher()
    background = live.BackgroundPublisher(
        redis_publisher, batch_seconds=0.01, idle_batch_seconds=5.0
    )
    background.submit_update(5, 9, update("msg_1", 1))
    wait_for(lambda: len(redis_publisher.batches) == 1)
    background.submit_update(5, 9, update("msg_1", 2))
    wait_for(lambda: len(redis_publisher.batches) == 2, timeout=2.0)
