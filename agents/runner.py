"""Run one execution through the Claude Agent SDK and record it as it streams.

This is the only module that talks to the SDK. The SDK is asynchronous; the
recorder uses the Django ORM, so every message that can change usage is
handed to it through `sync_to_async(thread_sensitive=True)`, which keeps all
database work on the calling thread and its connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from asgiref.sync import async_to_sync, sync_to_async
from claude_agent_sdk import (
    ClaudeAgentOptions,
    ClaudeSDKClient,
    ClaudeSDKError,
    ResultMessage,
)
from django.conf import settings

from agents.heartbeat import Heartbeat
from agents.models import Execution
from agents.recorder import MessageUpdate, StreamRecorder, is_usage_message

logger = logging.getLogger(__name__)

# Seconds to wait for the CLI's closing result after an interrupt, before
# the connection is dropped.
INTERRUPT_GRACE_SECONDS = 10

# Placeholder key for the local simulator, which checks no key.
SIMULATOR_API_KEY = "sk-ant-simulator-no-key-needed"


@dataclasses.dataclass(frozen=True)
class ApiTarget:
    """Where the CLI's API requests go."""

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
    """Return whether `base_url` is a loopback server answering as the simulator."""
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


def build_options(execution: Execution, target: ApiTarget) -> ClaudeAgentOptions:
    """Translate the execution's workflow into SDK options."""
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
    if settings.AGENTMARGIN_CLAUDE_CONFIG_DIR:
        config_dir = Path(settings.AGENTMARGIN_CLAUDE_CONFIG_DIR)
        env["CLAUDE_CONFIG_DIR"] = str(config_dir)
        env["CLAUDE_CODE_TMPDIR"] = str(config_dir / "tmp")
    budget = None
    if workflow.per_run_budget_usd is not None:
        # The SDK's option is a float; it is only a hint to the CLI; our own
        # cost records stay Decimal.
        budget = float(workflow.per_run_budget_usd)
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

    Returns the execution in its final status. Errors of the SDK or the CLI
    end the execution `failed` with the error text; a timeout, or one of
    `stop_exceptions` (a worker's soft time limit), ends it `interrupted`.
    Everything recorded before either is kept. A heartbeat thread marks the
    execution alive for the sweeper while it runs.
    """
    target = target or resolve_target()
    if timeout_seconds is None:
        timeout_seconds = settings.AGENTMARGIN_RUN_TIMEOUT_SECONDS
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
    control = StreamControl()
    try:
        with Heartbeat(execution.pk, settings.AGENTMARGIN_HEARTBEAT_SECONDS):
            interrupted = async_to_sync(_stream)(
                execution, target, recorder, timeout_seconds, control
            )
        if interrupted:
            error = f"No result after {timeout_seconds:g} s; the run was interrupted."
    except stop_exceptions as exc:
        control.stop()
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
    except BaseException as exc:
        # KeyboardInterrupt or SystemExit: stop the CLI, close the execution
        # as interrupted, then let the exception go on.
        control.stop()
        recorder.finish(
            interrupted=True,
            error=f"The run was stopped before it finished ({type(exc).__name__}).",
        )
        raise
    return recorder.finish(error=error, interrupted=interrupted)


class StreamControl:
    """Lets the calling thread cancel a stream running in async_to_sync's loop.

    An exception raised in the calling thread (Ctrl-C, SIGTERM turned into
    SystemExit, a worker's soft time limit) leaves that loop running, and
    the CLI with it. `stop()` cancels the stream task so the SDK client
    closes and ends the CLI process, and waits for that.
    """

    STOP_WAIT_SECONDS = 15

    def __init__(self):
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task | None = None
        self.finished = threading.Event()

    def attach(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()

    def stop(self) -> None:
        if self.loop is None or self.task is None or self.finished.is_set():
            return
        self.loop.call_soon_threadsafe(self.task.cancel)
        if not self.finished.wait(self.STOP_WAIT_SECONDS):
            logger.warning(
                "The agent stream did not stop within %s s", self.STOP_WAIT_SECONDS
            )


async def _stream(
    execution: Execution,
    target: ApiTarget,
    recorder: StreamRecorder,
    timeout_seconds: float,
    control: StreamControl,
) -> bool:
    """Stream the run into the recorder; return whether it had to be interrupted."""
    control.attach()
    try:
        return await _stream_messages(execution, target, recorder, timeout_seconds)
    finally:
        control.finished.set()


async def _stream_messages(execution, target, recorder, timeout_seconds) -> bool:
    handle = sync_to_async(recorder.handle, thread_sensitive=True)
    options = build_options(execution, target)
    prompt = execution.workflow.render_prompt(execution.prompt)
    interrupted = False

    async with ClaudeSDKClient(options=options) as client:
        await client.query(prompt)

        async def consume() -> None:
            async for message in client.receive_response():
                if is_usage_message(message):
                    await handle(message)
                if isinstance(message, ResultMessage):
                    return

        consumer = asyncio.ensure_future(consume())
        done, _ = await asyncio.wait({consumer}, timeout=timeout_seconds)
        if not done:
            interrupted = True
            recorder.interrupt_requested = True
            logger.warning(
                "Execution %s: no result after %s s, interrupting",
                execution.pk,
                timeout_seconds,
            )
            await _interrupt(client, consumer)
        if consumer.done() and not consumer.cancelled():
            consumer.result()  # re-raises an error the stream ended with
    return interrupted


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
