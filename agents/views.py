"""Live progress of an execution: a server-sent events stream and a test page.

Each open event stream keeps one worker thread busy until it ends. Under
`manage.py runserver` that is one of its request threads, and under
gunicorn one thread of a gthread worker or a whole sync worker. Gunicorn
kills a sync worker that spends longer than its `--timeout` (30 s by
default, as gunicorn 27 documents it) on one request. With sync workers,
set `AGENTMARGIN_LIVE_STREAM_MAX_SECONDS` below that timeout: the browser's
EventSource then reconnects and catches up from the database each time.

Settings, read with a default:

- `AGENTMARGIN_LIVE_KEEPALIVE_SECONDS` (default 15): interval of keep-alive
  comments and of the check of the execution's status in the database.
- `AGENTMARGIN_LIVE_STREAM_MAX_SECONDS` (default 3600): a stream ends after
  this long.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator

import redis
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db import close_old_connections, connection
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET

from agents import live
from agents.models import Execution
from agents.selectors import execution_summary

logger = logging.getLogger(__name__)

DEFAULT_KEEPALIVE_SECONDS = 15
DEFAULT_STREAM_MAX_SECONDS = 3600
# How long an EventSource waits before reconnecting after a stream ends
# without execution_finished.
RECONNECT_MILLISECONDS = 5000


def can_view_execution(user, execution: Execution) -> bool:
    """Return whether `user` may watch `execution`. For now only staff may."""
    return user.is_active and user.is_staff


def _get_visible_execution(request: HttpRequest, execution_id: int) -> Execution:
    """Return the execution, raising PermissionDenied or Http404.

    An anonymous user gets PermissionDenied before the lookup. A signed-in
    user gets Http404 for an unknown id and PermissionDenied for an
    execution that `can_view_execution` does not allow.
    """
    if not request.user.is_authenticated:
        raise PermissionDenied
    execution = get_object_or_404(
        Execution.objects.select_related("customer", "workflow"), pk=execution_id
    )
    if not can_view_execution(request.user, execution):
        raise PermissionDenied
    return execution


@require_GET
def execution_events(request: HttpRequest, execution_id: int) -> HttpResponse:
    """Stream the execution's API messages as server-sent events.

    Events: `api_message` (agents.live.message_event) for each stored
    message and then each live update, and `execution_finished` with the
    summary, after which the stream ends. Comments keep the connection
    alive.
    """
    execution = _get_visible_execution(request, execution_id)
    stream = ExecutionEventStream(
        execution.pk,
        keepalive_seconds=getattr(
            settings, "AGENTMARGIN_LIVE_KEEPALIVE_SECONDS", DEFAULT_KEEPALIVE_SECONDS
        ),
        max_seconds=getattr(
            settings, "AGENTMARGIN_LIVE_STREAM_MAX_SECONDS", DEFAULT_STREAM_MAX_SECONDS
        ),
    )
    response = StreamingHttpResponse(stream.events(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    # Stops nginx from buffering the stream.
    response["X-Accel-Buffering"] = "no"
    return response


@require_GET
def execution_live(request: HttpRequest, execution_id: int) -> HttpResponse:
    """Show the execution's summary and messages, updated live by the event stream."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path(), reverse("admin:login"))
    execution = _get_visible_execution(request, execution_id)
    context = {
        "execution": execution,
        "summary": execution_summary(execution),
        "messages": live.stored_message_events(
            execution.pk, finished=execution.is_finished
        ),
        "events_url": reverse("agents:execution-events", args=[execution.pk]),
    }
    return render(request, "agents/execution_live.html", context)


def format_event(event: dict) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


class ExecutionEventStream:
    """The server-sent events of one execution for one client.

    The stream subscribes to the execution's channel before it reads the
    stored messages, so no update falls between the two. An update is sent
    only when it moves its message forward: buffered updates older than the
    stored row, and repeats, are dropped.

    A client that went away is noticed when a write fails, usually at the
    second keep-alive after it left; closing the generator then
    unsubscribes.

    NOTE: events carry no `id`, so Last-Event-ID is ignored and a
    reconnecting client receives every stored message again; it should
    update its rows by `message_id`. Updates of different messages
    interleave (a subagent's message changes while the main agent's next
    one streams), so a message sequence number cannot mark where to resume.
    """

    def __init__(
        self,
        execution_id: int,
        *,
        keepalive_seconds: float,
        max_seconds: float,
        clock=time.monotonic,
        event_filter: Callable[[dict], dict] | None = None,
    ):
        self.execution_id = execution_id
        self.keepalive_seconds = keepalive_seconds
        self.max_seconds = max_seconds
        self.clock = clock
        # Applied to every event before it is sent, e.g. to drop fields a
        # customer must not see.
        self.event_filter = event_filter
        # The furthest state sent of each message, by message id.
        self.sent_progress: dict[str, tuple] = {}

    def events(self) -> Iterator[str]:
        """Yield the stream's text; closing the generator unsubscribes."""
        deadline = self.clock() + self.max_seconds
        pubsub = self._subscribe()
        try:
            yield f"retry: {RECONNECT_MILLISECONDS}\n\n"
            execution = Execution.objects.filter(pk=self.execution_id).first()
            if execution is None:
                return
            yield from self._stored_messages(finished=execution.is_finished)
            if execution.is_finished:
                yield self._format(live.finished_event(execution))
                return
            if pubsub is None:
                # Without Redis the client reconnects after the retry delay
                # and catches up from the database again.
                return
            _release_database_connection()
            yield from self._relay(pubsub, deadline)
        finally:
            if pubsub is not None:
                pubsub.close()

    def _format(self, event: dict) -> str:
        if self.event_filter is not None:
            event = self.event_filter(event)
        return format_event(event)

    def _subscribe(self) -> redis.client.PubSub | None:
        try:
            return live.subscribe_to_execution(self.execution_id)
        except redis.RedisError as exc:
            logger.warning(
                "Execution %s: subscribing to Redis failed, the event stream "
                "sends stored messages only: %s",
                self.execution_id,
                exc,
            )
            return None

    def _relay(self, pubsub: redis.client.PubSub, deadline: float) -> Iterator[str]:
        """Relay published events until the execution finishes or time runs out."""
        next_check = self.clock() + self.keepalive_seconds
        while True:
            now = self.clock()
            if now >= deadline:
                yield ": stream time limit reached, reconnect to continue\n\n"
                return
            if now >= next_check:
                yield ": keep-alive\n\n"
                # A finish whose event Redis lost still ends the stream.
                execution = Execution.objects.filter(pk=self.execution_id).first()
                if execution is None:
                    return
                if execution.is_finished:
                    yield from self._stored_messages(finished=True)
                    yield self._format(live.finished_event(execution))
                    return
                _release_database_connection()
                next_check = now + self.keepalive_seconds
                continue
            try:
                message = pubsub.get_message(
                    ignore_subscribe_messages=True,
                    timeout=min(next_check, deadline) - now,
                )
            except redis.RedisError as exc:
                logger.warning(
                    "Execution %s: reading from Redis failed, closing the "
                    "event stream so the client reconnects: %s",
                    self.execution_id,
                    exc,
                )
                return
            event = self._decode(message)
            if event is None:
                continue
            if event.get("type") == "execution_finished":
                # Messages settled at the finish are complete now.
                yield from self._stored_messages(finished=True)
                yield self._format(event)
                return
            if event.get("type") == "api_message" and self._moves_forward(event):
                yield self._format(event)

    def _decode(self, message: dict | None) -> dict | None:
        if message is None or message.get("type") != "message":
            return None
        try:
            event = json.loads(message["data"])
        except ValueError:
            logger.warning(
                "Execution %s: invalid JSON on the live channel ignored: %r",
                self.execution_id,
                message["data"][:200],
            )
            return None
        return event if isinstance(event, dict) else None

    def _stored_messages(self, *, finished: bool) -> Iterator[str]:
        for event in live.stored_message_events(self.execution_id, finished=finished):
            if self._moves_forward(event):
                yield self._format(event)

    def _moves_forward(self, event: dict) -> bool:
        """Record and return whether `event` is further on than what was sent.

        A message goes from open to a final output count to complete. Its
        output count grows between deltas, and it is marked estimated at
        most once. A model and cost that arrive late are filled in once and
        not cleared by the recorder. So the tuple grows with each update of
        one recorder, except in the case noted below.
        """
        # NOTE: a stream whose cumulative output count drops between two
        # deltas of one message keeps showing the higher count.
        progress = (
            bool(event.get("complete")),
            bool(event.get("output_final")),
            event.get("output_tokens") or 0,
            bool(event.get("estimated")),
            bool(event.get("model")),
            event.get("cost_usd") is not None,
        )
        message_id = event.get("message_id")
        sent = self.sent_progress.get(message_id)
        if sent is not None and progress <= sent:
            return False
        self.sent_progress[message_id] = progress
        return True


def _release_database_connection() -> None:
    """Close the thread's database connection while the stream waits on Redis.

    Keeps it under CONN_MAX_AGE, as at the end of a request. Inside a
    transaction, as in tests wrapped in one, the connection stays open.
    """
    if not connection.in_atomic_block:
        close_old_connections()
