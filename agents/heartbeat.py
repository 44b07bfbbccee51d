"""A background thread that marks a running execution alive for the sweeper.

The same thread reads back whether the customer asked to cancel the run,
so the runner can stop it within about `cancel_poll_seconds`.
"""

from __future__ import annotations

import logging
import threading
import time

from django.db import DatabaseError, connection
from django.utils import timezone

from agents.models import Execution

logger = logging.getLogger(__name__)


class Heartbeat:
    """Write `heartbeat_at` every `interval` seconds while the block runs.

    The thread uses its own database connection and closes it on exit.
    A failed write is logged and retried at the next beat: a missed beat or
    two is harmless, since the sweeper waits several intervals.
    """

    def __init__(
        self,
        execution_id: int,
        interval: float,
        *,
        cancel_poll_seconds: float | None = None,
    ):
        self.execution_id = execution_id
        self.interval = interval
        # Set once the execution's cancel_requested_at is seen set. Without
        # cancel_poll_seconds the flag is read at each beat.
        self.cancel_requested = threading.Event()
        self.poll_seconds = min(interval, cancel_poll_seconds or interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{execution_id}", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self.beat()
        self.check_cancel()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def beat(self) -> None:
        try:
            Execution.objects.filter(
                pk=self.execution_id,
                status__in=[Execution.Status.QUEUED, Execution.Status.RUNNING],
            ).update(heartbeat_at=timezone.now())
        except DatabaseError as exc:
            logger.warning(
                "Execution %s: heartbeat not written: %s", self.execution_id, exc
            )

    def check_cancel(self) -> bool:
        """Read whether a cancel was requested, set `cancel_requested` if so, return it."""
        if self.cancel_requested.is_set():
            return True
        try:
            requested = Execution.objects.filter(
                pk=self.execution_id, cancel_requested_at__isnull=False
            ).exists()
        except DatabaseError as exc:
            logger.warning(
                "Execution %s: reading the cancel request failed: %s",
                self.execution_id,
                exc,
            )
            return False
        if requested:
            logger.info("Execution %s: cancel requested", self.execution_id)
            self.cancel_requested.set()
        return requested

    def _run(self) -> None:
        next_beat = time.monotonic() + self.interval
        try:
            while not self._stop.wait(self.poll_seconds):
                self.check_cancel()
                if time.monotonic() >= next_beat:
                    self.beat()
                    next_beat = time.monotonic() + self.interval
        finally:
            connection.close()
