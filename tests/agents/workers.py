"""A real Celery worker process for tests, on its own queue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from django.db import connection

from config.celery import app as celery_app

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 60


class CeleryWorker:
    """Start `celery worker` against the test database and a fresh queue."""

    def __init__(
        self, tmp_path: Path, simulator_url: str, *, concurrency: int = 2, **settings
    ):
        self.queue = celery_app.conf.task_default_queue
        self.log_path = tmp_path / f"worker-{uuid.uuid4().hex[:8]}.log"
        database = connection.settings_dict
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": (
                f"postgres://{database['USER'] or 'postgres'}@{database['HOST'] or '127.0.0.1'}:"
                f"{database['PORT'] or 5432}/{database['NAME']}"
            ),
            "AGENTMARGIN_TASK_QUEUE": self.queue,
            "AGENTMARGIN_TEST_SIMULATOR_URL": simulator_url,
            "AGENTMARGIN_AGENT_CWD": str(tmp_path / "worker-workspace"),
            "AGENTMARGIN_CLAUDE_CONFIG_DIR": str(tmp_path / "worker-claude-config"),
            "AGENTMARGIN_HEARTBEAT_SECONDS": "1",
            "LOG_LEVEL": "INFO",
            **{name: str(value) for name, value in settings.items()},
        }
        self.concurrency = concurrency
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> CeleryWorker:
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--queues",
                self.queue,
                "--hostname",
                f"{self.log_path.stem}@%h",
                "--concurrency",
                str(self.concurrency),
                "--pool",
                "prefork",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while " ready." not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Celery worker did not start:\n{self.log()}")
            time.sleep(0.2)
        return self

    def __exit__(self, *exc_info) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()
        with celery_app.connection_for_write() as broker:
            channel = broker.default_channel
            channel.queue_purge(self.queue)
            # kombu's Redis transport keeps each queue's binding in a key of
            # its own; this run's queue name is never used again.
            channel.client.delete(f"_kombu.binding.{self.queue}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pool_pids(self) -> list[int]:
        """Return the process ids of the worker's pool children."""
        output = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)],
            capture_output=True,
            text=True,
        ).stdout
        return [int(pid) for pid in output.split()]
