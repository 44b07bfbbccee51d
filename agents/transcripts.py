"""Record an execution from a transcript written by the Claude Code CLI.

`claude -p --output-format stream-json --verbose` writes one JSON message a
line: the same messages the SDK reads from the CLI, so each line goes
through the SDK's own parser and then through the same recorder as a live
run. With `--include-partial-messages` the transcript has stream events and
exact per-response output counts; without, the result's per-model totals
fill them in.

Importing the same transcript twice changes nothing: the execution is
found again by customer, workflow and session id, and messages already
stored are skipped by message id.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

# The SDK's parser turns the CLI's JSON lines into typed messages. Both are
# private modules of claude-agent-sdk, pinned in the lock file; using them
# keeps imported and live runs identical to the recorder.
from claude_agent_sdk._errors import MessageParseError
from claude_agent_sdk._internal.message_parser import parse_message
from django.db import IntegrityError, connection, transaction

from agents.models import ApiMessage, Execution, Workflow
from agents.recorder import MessageUpdate, StreamRecorder, is_usage_message
from agents.simulator import SIMULATOR_MESSAGE_ID_PREFIX
from customers.models import Customer

logger = logging.getLogger(__name__)


# First key of the advisory locks taken by imports (an arbitrary constant).
IMPORT_LOCK_SPACE = 7301


class TranscriptClock:
    """The time a transcript line was written, for pricing it at that time."""

    def __init__(self, start: datetime):
        self.current = start

    def now(self) -> datetime:
        return self.current

    def advance(self, timestamp: object) -> None:
        if not isinstance(timestamp, str):
            return
        try:
            moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        except ValueError:
            return
        if moment.tzinfo is not None:
            self.current = moment


class TranscriptError(Exception):
    """The file is not a transcript that can be imported; nothing was recorded."""


@dataclasses.dataclass
class TranscriptImport:
    """The outcome of one import: the execution and line counts."""

    execution: Execution
    created: bool
    lines: int = 0
    skipped_lines: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)


class TranscriptLine(NamedTuple):
    number: int
    data: dict | None
    error: str | None


def read_transcript(path: Path) -> Iterator[TranscriptLine]:
    """Yield each non-empty line of a stream-json file, parsed or with its error."""
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, text in enumerate(handle, start=1):
            text = text.strip()
            if not text:
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                yield TranscriptLine(
                    number, None, f"line {number}: invalid JSON ({exc.msg})"
                )
                continue
            if not isinstance(data, dict):
                yield TranscriptLine(number, None, f"line {number}: not a JSON object")
                continue
            yield TranscriptLine(number, data, None)


def transcript_import(
    *,
    customer: Customer,
    workflow: Workflow,
    path: Path,
    recorded_at: datetime,
    line_timestamps: bool = True,
    listener: Callable[[MessageUpdate], None] | None = None,
) -> TranscriptImport:
    """Record the run in the transcript at `path` as an imported execution.

    Each message is priced at the time it was sent: the `timestamp` the CLI
    writes on assistant lines when `line_timestamps` is true and the line
    has one, else `recorded_at`. Malformed lines are counted and skipped,
    never fatal.
    """
    lines = read_transcript(path)
    head: list[TranscriptLine] = []
    first: dict = {}
    for line in lines:
        head.append(line)
        if line.data and line.data.get("session_id"):
            first = line.data
            break
    if not first:
        raise TranscriptError(
            f"{path} has no Claude Code message with a session id in "
            f"{len(head)} non-empty lines; expected the output of "
            "`claude -p --output-format stream-json --verbose`."
        )
    clock = TranscriptClock(recorded_at)
    execution, created = execution_for_session(
        customer=customer,
        workflow=workflow,
        session_id=first["session_id"],
        model=first.get("model") or workflow.model,
        recorded_at=recorded_at,
    )
    with import_lock(execution.pk):
        return _import_lines(
            execution,
            created,
            itertools.chain(head, lines),
            path,
            clock,
            line_timestamps,
            listener,
        )


@contextlib.contextmanager
def import_lock(execution_id: int):
    """Hold a session lock on the execution while it is imported.

    Two imports of one transcript at once would otherwise both insert the
    same messages. SQLite allows one writer at a time, so it needs none.
    """
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_lock(%s, %s)", [IMPORT_LOCK_SPACE, execution_id]
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_unlock(%s, %s)", [IMPORT_LOCK_SPACE, execution_id]
            )


def _import_lines(execution, created, lines, path, clock, line_timestamps, listener):
    # Created after the lock, so it loads what a concurrent import stored.
    recorder = StreamRecorder(execution, listener=listener, clock=clock.now)
    report = TranscriptImport(execution=execution, created=created)
    try:
        for line in lines:
            report.lines += 1
            if line_timestamps and line.data:
                clock.advance(line.data.get("timestamp"))
            message = _parse(line, report)
            if message is not None and is_usage_message(message):
                recorder.handle(message)
        # A write that failed in flight is raised here.
        recorder.settle()
    except Exception as exc:
        # Keep what was recorded, but never leave the execution running.
        logger.exception("Execution %s: import of %s failed", execution.pk, path)
        recorder.finish(error=f"The import failed at line {report.lines}: {exc}")
        raise TranscriptError(
            f"Import of {path} failed at line {report.lines}: {exc}. Execution "
            f"{execution.pk} keeps the {len(recorder.messages)} messages recorded before."
        ) from exc
    if recorder.result is None:
        report.errors.append(
            "the transcript has no result message, so the run was cut off"
        )
    recorder.finish()
    if created:
        date_from_messages(execution)
    mark_simulated(execution)
    logger.info(
        "Execution %s: imported %s (%d lines, %d skipped)",
        execution.pk,
        path,
        report.lines,
        report.skipped_lines,
    )
    return report


# The prompt stored on an execution recorded from a stream-json transcript.
TRANSCRIPT_PROMPT = "(imported transcript)"


def execution_for_session(
    *,
    customer: Customer,
    workflow: Workflow,
    session_id: str,
    model: str,
    recorded_at: datetime,
    prompt: str = TRANSCRIPT_PROMPT,
) -> tuple[Execution, bool]:
    """Return the imported execution of `session_id`, creating it when new.

    Return it with True when it was created. Raise TranscriptError when the
    session was imported for another customer or workflow.
    """
    arguments = (customer, workflow, session_id, model, recorded_at, prompt)
    try:
        return _find_or_create_execution_once(*arguments)
    except IntegrityError:
        # Another import of the same session created it first; use that one.
        return _find_or_create_execution_once(*arguments)


@transaction.atomic
def _find_or_create_execution_once(
    customer, workflow, session_id: str, model: str, recorded_at: datetime, prompt
):
    execution = (
        Execution.objects.select_for_update()
        .select_related("customer", "workflow")
        .filter(source=Execution.Source.IMPORTED, sdk_session_id=session_id)
        .first()
    )
    if execution is not None:
        if (execution.customer_id, execution.workflow_id) != (customer.pk, workflow.pk):
            # One session billed to two customers would double its cost.
            raise TranscriptError(
                f"Session {session_id} was already imported as execution "
                f"{execution.pk} for customer {execution.customer.slug}, "
                f"workflow {execution.workflow.slug}."
            )
        return execution, False
    execution = Execution.objects.create(
        customer=customer,
        workflow=workflow,
        prompt=prompt,
        source=Execution.Source.IMPORTED,
        requested_model=model,
        sdk_session_id=session_id,
        started_at=recorded_at,
    )
    # The run happened at `recorded_at`, so that is the day it counts on.
    Execution.objects.filter(pk=execution.pk).update(created_at=recorded_at)
    execution.created_at = recorded_at
    return execution, True


def date_from_messages(execution: Execution) -> None:
    """Date a new import by its first message, so it counts on the day it ran."""
    first = (
        ApiMessage.objects.filter(execution=execution).order_by("arrived_at").first()
    )
    if first is not None and first.arrived_at != execution.created_at:
        Execution.objects.filter(pk=execution.pk).update(
            created_at=first.arrived_at, started_at=first.arrived_at
        )
        execution.created_at = execution.started_at = first.arrived_at


def mark_simulated(execution: Execution) -> None:
    """Flag an imported run whose responses all came from the local simulator."""
    messages = ApiMessage.objects.filter(execution=execution)
    simulated = (
        messages.exists()
        and not messages.exclude(
            message_id__startswith=SIMULATOR_MESSAGE_ID_PREFIX
        ).exists()
    )
    if simulated != execution.simulated:
        execution.simulated = simulated
        Execution.objects.filter(pk=execution.pk).update(simulated=simulated)


def _parse(line: TranscriptLine, report: TranscriptImport):
    if line.error:
        report.skipped_lines += 1
        report.errors.append(line.error)
        return None
    try:
        return parse_message(line.data)
    except MessageParseError as exc:
        report.skipped_lines += 1
        report.errors.append(
            f"line {line.number}: unreadable {line.data.get('type')!r} message ({exc})"
        )
        return None
