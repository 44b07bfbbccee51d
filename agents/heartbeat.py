"""A background thread that marks a running execution alive for the sweeper."""

from __future__ import annotations

import logging
import threading

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

    def __init__(self, execution_id: int, interval: float):
        self.execution_id = execution_id
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{execution_id}", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self.beat()
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

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                self.beat()
        finally:
            connection.close()
