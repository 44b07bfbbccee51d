"""Run one execution through the Claude Agent SDK and record it as it streams.

This is the only module that talks to the SDK. The SDK is asynchronous and
runs in a thread of its own (AgentStream). Every message that can change
usage is handed back to the calling thread, which records it, so all
database work stays on that thread and its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import queue
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import claude_agent_sdk
from claude_agent_sdk import (
    ClaudeAgentOptions,
    ClaudeSDKClient,
    ClaudeSDKError,
    ResultMessage,
)
from django.conf import settings

from agents.admission import execution_admit, run_budget_limit
from agents.heartbeat import Heartbeat
from agents.models import Execution
from agents.recorder import MessageUpdate, StreamRecorder, is_usage_message

logger = logging.getLogger(__name__)

# Seconds to wait for the CLI's closing result after an interrupt, before
# the connection is dropped.
INTERRUPT_GRACE_SECONDS = 10

CANCELED_WHILE_RUNNING = (
    "Canceled by the customer while it ran; the run was interrupted."
)

# The CLI bundled in claude-agent-sdk, and a wrapper that makes the kernel
# kill it when the process running it dies.
BUNDLED_CLI = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
CHILD_CLI_WRAPPER = Path(__file__).parent / "bin" / "claude-child"

# Placeholder key for the local simulator, which checks no key.
SIMULATOR_API_KEY = "sk-ant-simulator-no-key-needed"


@dataclasses.dataclass(frozen=True)
class ApiTarget:
    """The endpoint and key the CLI's API requests go to."""

    base_url: str  # "" means the SDK's default, Anthropic's API
    api_key: str
    simulated: bool

    @property
    def description(self) -> str:
        if self.simulated:
            return f"local Anthropic API simulator at {self.base_url}"
        if self.base_url:
            return f"Anthropic-compatible API at {self.base_url}"
        return "the real Anthropic API"


class RunnerConfigurationError(Exception):
    """The run cannot start: no API key for the real API, or a bad setting."""


def resolve_target(
    base_url: str | None = None, api_key: str | None = None
) -> ApiTarget:
    """Choose the API endpoint and key from the arguments, then the settings.

    A base URL on a loopback address is probed for the project's simulator,
    so runs against it are marked simulated.
    """
    base_url = (settings.ANTHROPIC_BASE_URL if base_url is None else base_url).rstrip(
        "/"
    )
    api_key = settings.ANTHROPIC_API_KEY if api_key is None else api_key
    simulated = bool(base_url) and is_simulator(base_url)
    if simulated and not api_key:
        api_key = SIMULATOR_API_KEY
    if not api_key and base_url:
        raise RunnerConfigurationError(
            f"ANTHROPIC_BASE_URL is {base_url}, which is not a running simulator, "
            "and ANTHROPIC_API_KEY is not set. Start the simulator there "
            "(python manage.py run_simulator) or set ANTHROPIC_API_KEY."
        )
    if not api_key:
        raise RunnerConfigurationError(
            "ANTHROPIC_API_KEY is not set. Set it to run against the real API, "
            "or set ANTHROPIC_BASE_URL to a running simulator "
            "(python manage.py run_simulator)."
        )
    return ApiTarget(base_url=base_url, api_key=api_key, simulated=simulated)


def is_simulator(base_url: str) -> bool:
    """Return whether `base_url` is a loopback server that reports itself as the simulator."""
    host = urlsplit(base_url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return False
    try:
        with urllib.request.urlopen(
            f"{base_url}/simulator/health", timeout=2
        ) as response:
            return bool(json.load(response).get("simulator"))
    except (OSError, ValueError, urllib.error.URLError):
        return False


def build_options(
    execution: Execution, target: ApiTarget, *, budget_usd: Decimal | None = None
) -> ClaudeAgentOptions:
    """Translate the execution's workflow into SDK options.

    `budget_usd` is the run's cost limit (see `agents.admission`); without
    it the workflow's per-run budget applies.
    """
    workflow = execution.workflow
    cwd = Path(settings.AGENTMARGIN_AGENT_CWD)
    cwd.mkdir(parents=True, exist_ok=True)
    env = {
        "ANTHROPIC_API_KEY": target.api_key,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        # Without this the CLI (2.1.332) keeps a subagent's messages to
        # itself, and their tokens would go unrecorded.
        "CLAUDE_CODE_FORWARD_SUBAGENT_TEXT": "1",
    }
    if target.base_url:
        env["ANTHROPIC_BASE_URL"] = target.base_url
    cli_path = None
    if shutil.which("setpriv") and BUNDLED_CLI.exists():
        cli_path = CHILD_CLI_WRAPPER
        env["AGENTMARGIN_CLAUDE_CLI"] = str(BUNDLED_CLI)
    if settings.AGENTMARGIN_CLAUDE_CONFIG_DIR:
        config_dir = Path(settings.AGENTMARGIN_CLAUDE_CONFIG_DIR)
        env["CLAUDE_CONFIG_DIR"] = str(config_dir)
        env["CLAUDE_CODE_TMPDIR"] = str(config_dir / "tmp")
    if budget_usd is None:
        budget_usd = workflow.per_run_budget_usd
    budget = None
    if budget_usd is not None:
        # The SDK takes a float. It only steers the CLI, which checks it
        # between turns, while every cost we record stays Decimal.
        budget = float(budget_usd)
    return ClaudeAgentOptions(
        model=execution.requested_model,
        fallback_model=workflow.fallback_model or None,
        max_turns=execution.max_turns or workflow.max_turns,
        allowed_tools=list(workflow.allowed_tools or []),
        permission_mode="acceptEdits",
        system_prompt=workflow.system_prompt or None,
        include_partial_messages=True,
        max_budget_usd=budget,
        setting_sources=[],
        cwd=str(cwd),
        cli_path=cli_path,
        env=env,
        stderr=_log_cli_stderr(execution.pk),
    )


def _log_cli_stderr(execution_id: int) -> Callable[[str], None]:
    def log_line(line: str) -> None:
        logger.debug("Execution %s: CLI stderr: %s", execution_id, line.rstrip())

    return log_line


def run_execution(
    execution: Execution,
    *,
    target: ApiTarget | None = None,
    listener: Callable[[MessageUpdate], None] | None = None,
    timeout_seconds: float | None = None,
    stop_exceptions: tuple[type[BaseException], ...] = (),
) -> Execution:
    """Run `execution` to its end, recording every API message as it arrives.

    Returns the execution in its final status. An error of the SDK or the
    CLI ends the execution `failed` with the error text. A timeout, or one of
    `stop_exceptions` (a worker's soft time limit), ends it `interrupted`.
    A recorded cost above the run's budget interrupts the run through the
    SDK client and ends it `budget_exceeded`. Everything recorded before
    any of these is kept. A heartbeat thread marks the execution alive for
    the sweeper while it runs.

    A queued execution goes through admission first (a claimed one went
    through it in `execution_claim`); a rejected one is returned closed,
    without running.
    """
    target = target or resolve_target()
    if timeout_seconds is None:
        timeout_seconds = settings.AGENTMARGIN_RUN_TIMEOUT_SECONDS
    if execution.status == Execution.Status.QUEUED and execution_admit(execution):
        return execution
    budget_usd = run_budget_limit(execution)
    recorder = StreamRecorder(execution, listener=listener)
    if target.simulated and not execution.simulated:
        execution.simulated = True
        Execution.objects.filter(pk=execution.pk).update(simulated=True)
    recorder.start()
    logger.info(
        "Execution %s: starting %s on %s against %s",
        execution.pk,
        execution.workflow.slug,
        execution.requested_model,
        target.description,
    )
    error: BaseException | str | None = None
    interrupted = False
    budget_stop = False
    canceled = False
    stream = AgentStream(
        execution, target, recorder, timeout_seconds, budget_usd=budget_usd
    )
    try:
        with Heartbeat(
            execution.pk,
            settings.AGENTMARGIN_HEARTBEAT_SECONDS,
            cancel_poll_seconds=settings.AGENTMARGIN_CANCEL_POLL_SECONDS,
        ) as heartbeat:
            stream.start()
            for message in stream.messages(stop=heartbeat.cancel_requested):
                recorder.handle(message)
                if budget_usd is not None and recorder.totals.cost_usd > budget_usd:
                    budget_stop = True
                    break
            # A write that failed in flight is raised here, as any other
            # failure of the run.
            recorder.settle()
            if budget_stop:
                logger.warning(
                    "Execution %s: recorded cost %s is above the run's budget %s; "
                    "interrupting",
                    execution.pk,
                    recorder.totals.cost_usd,
                    budget_usd,
                )
                stream.interrupt_and_drain(recorder)
            elif heartbeat.cancel_requested.is_set() and not stream.ended:
                canceled = True
                recorder.interrupt_requested = True
                logger.info("Execution %s: canceled by the customer", execution.pk)
                stream.interrupt_and_drain(recorder)
        stream.raise_error()
        if budget_stop:
            interrupted = True
            error = (
                f"The recorded cost ${recorder.totals.cost_usd} went above the run's "
                f"budget of ${budget_usd}; the run was interrupted."
            )
        elif canceled:
            interrupted = True
            error = CANCELED_WHILE_RUNNING
        elif stream.interrupted:
            interrupted = True
            error = f"No result after {timeout_seconds:g} s; the run was interrupted."
    except stop_exceptions as exc:
        stream.stop_and_drain(recorder)
        interrupted = True
        error = f"The worker's time limit stopped the run ({type(exc).__name__})."
        logger.warning("Execution %s: stopped: %r", execution.pk, exc)
    except ClaudeSDKError as exc:
        if recorder.result is None:
            error = exc
            logger.warning("Execution %s: SDK error: %s", execution.pk, exc)
    except Exception as exc:  # noqa: BLE001 - whatever the failure, keep what was recorded
        error = exc
        logger.exception("Execution %s: run failed", execution.pk)
        # Stop the CLI, which would otherwise go on calling the API. What it
        # sends from now on is not recorded: the failure may be the
        # recorder's own.
        stream.stop_and_drain(recorder, record=False)
    except BaseException as exc:
        # KeyboardInterrupt or SystemExit: stop the CLI, record what it had
        # sent, close the execution as interrupted, then let the exception go on.
        stream.stop_and_drain(recorder)
        recorder.finish(
            interrupted=True,
            error=f"The run was stopped before it finished ({type(exc).__name__}).",
        )
        raise
    return recorder.finish(
        error=error, interrupted=interrupted, budget_exceeded=budget_stop
    )


_END = object()


class AgentStream:
    """The SDK client, run in a thread of its own, handing messages to the caller.

    The calling thread records each message, so all database work stays on
    its thread and connection. It waits for messages with a short timeout,
    so a signal it receives (Ctrl-C, SIGTERM turned into SystemExit, a
    worker's soft time limit) is handled at once rather than when the next
    message arrives. `stop_and_drain()` then cancels the
    stream, which makes the SDK client close and end the CLI process, and
    records what the CLI had sent until then.
    """

    POLL_SECONDS = 0.2
    STOP_WAIT_SECONDS = 15

    def __init__(self, execution, target, recorder, timeout_seconds, budget_usd=None):
        self.execution = execution
        self.target = target
        self.recorder = recorder
        self.timeout_seconds = timeout_seconds
        self.budget_usd = budget_usd
        self.client: ClaudeSDKClient | None = None
        self.queue: queue.Queue = queue.Queue()
        self.interrupted = False
        self.ended = False
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task | None = None
        self.finished = threading.Event()
        self.thread = threading.Thread(
            target=self._run, name=f"agent-stream-{execution.pk}", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def messages(
        self,
        *,
        deadline: float | None = None,
        stop: threading.Event | None = None,
        settle: bool = True,
    ):
        """Yield the messages the stream delivers until it ends, `deadline` or `stop`.

        `ended` is set when it stopped because the stream ended.
        """
        while True:
            if deadline is not None and time.monotonic() > deadline:
                return
            if stop is not None and stop.is_set():
                return
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                # Nothing to record: wait for the writes in flight, so that
                # their updates go out before the stream goes quiet.
                if settle:
                    self.recorder.settle()
                try:
                    item = self.queue.get(timeout=self.POLL_SECONDS)
                except queue.Empty:
                    continue
            if item is _END:
                self.ended = True
                return
            yield item

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def stop_and_drain(self, recorder: StreamRecorder, *, record: bool = True) -> None:
        if (
            not self.finished.is_set()
            and self.loop is not None
            and self.task is not None
        ):
            self.loop.call_soon_threadsafe(self.task.cancel)
        deadline = time.monotonic() + self.STOP_WAIT_SECONDS
        for message in self.messages(deadline=deadline, settle=record):
            if record:
                recorder.handle(message)
        if not self.finished.is_set():
            logger.warning(
                "Execution %s: the agent stream did not stop within %s s",
                self.execution.pk,
                self.STOP_WAIT_SECONDS,
            )

    def interrupt_and_drain(self, recorder: StreamRecorder) -> None:
        """Interrupt the run through the SDK client and record what it still sends.

        The CLI closes an interrupted turn with a result. When none comes
        within INTERRUPT_GRACE_SECONDS, the stream is cancelled as in
        `stop_and_drain()`.
        """
        if self.loop is not None and self.client is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                asyncio.run_coroutine_threadsafe(
                    _interrupt_client(self.client), self.loop
                )
        deadline = time.monotonic() + INTERRUPT_GRACE_SECONDS
        for message in self.messages(deadline=deadline):
            recorder.handle(message)
        if not self.finished.is_set():
            self.stop_and_drain(recorder)

    def _run(self) -> None:
        try:
            asyncio.run(self._stream())
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            self.error = exc
        finally:
            self.finished.set()
            self.queue.put(_END)

    async def _stream(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        options = build_options(self.execution, self.target, budget_usd=self.budget_usd)
        prompt = self.execution.workflow.render_prompt(self.execution.prompt)
        async with ClaudeSDKClient(options=options) as client:
            self.client = client
            await client.query(prompt)
            consumer = asyncio.ensure_future(self._consume(client))
            try:
                done, _ = await asyncio.wait({consumer}, timeout=self.timeout_seconds)
            except asyncio.CancelledError:
                # Stopped from the calling thread. Interrupt the turn first:
                # on close the SDK gives the CLI five seconds to exit, in
                # which it would go on calling the API. The consumer reads
                # on meanwhile, so a response the CLI starts before the
                # interrupt lands is still recorded.
                with contextlib.suppress(TimeoutError, ClaudeSDKError):
                    await asyncio.wait_for(client.interrupt(), timeout=2)
                consumer.cancel()
                await asyncio.gather(consumer, return_exceptions=True)
                raise
            if not done:
                self.interrupted = True
                self.recorder.interrupt_requested = True
                logger.warning(
                    "Execution %s: no result after %s s, interrupting",
                    self.execution.pk,
                    self.timeout_seconds,
                )
                await _interrupt(client, consumer)
            if consumer.done() and not consumer.cancelled():
                consumer.result()  # re-raises an error the stream ended with

    async def _consume(self, client: ClaudeSDKClient) -> None:
        async for message in client.receive_response():
            if is_usage_message(message):
                self.queue.put(message)
            if isinstance(message, ResultMessage):
                return


async def _interrupt_client(client: ClaudeSDKClient) -> None:
    """Ask the CLI to stop the current turn; a failed request is only logged."""
    try:
        await asyncio.wait_for(client.interrupt(), timeout=INTERRUPT_GRACE_SECONDS)
    except (TimeoutError, ClaudeSDKError) as exc:
        logger.warning("Interrupt request failed: %s", exc)


async def _interrupt(client: ClaudeSDKClient, consumer: asyncio.Future) -> None:
    """Ask the CLI to stop and wait briefly for its closing result."""
    try:
        await asyncio.wait_for(client.interrupt(), timeout=INTERRUPT_GRACE_SECONDS)
    except (TimeoutError, ClaudeSDKError) as exc:
        logger.warning("Interrupt request failed: %s", exc)
    done, _ = await asyncio.wait({consumer}, timeout=INTERRUPT_GRACE_SECONDS)
    if not done:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
