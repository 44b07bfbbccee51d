"""Record Claude Code session logs as imported executions.

Each session becomes one execution, found again by its session id, so
importing the same logs twice changes nothing and a session that grew is
topped up with its new responses. The responses go through the same
`StreamRecorder` and cost engine as a live run: each is replayed as the
`message_start`, `message_delta` and `message_stop` stream events the API
sent, priced at the time its first copy was written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from claude_agent_sdk import ResultMessage, StreamEvent
from django.db import connection
from django.db.models import Q

from agents.logs.reader import (
    LoggedResponse,
    ReadStats,
    SessionFiles,
    SessionLog,
    discover_sessions,
    read_session_files,
    response_order,
)
from agents.models import ApiMessage, Execution, Workflow
from agents.recorder import StreamRecorder
from agents.transcripts import (
    TranscriptClock,
    TranscriptError,
    date_from_messages,
    execution_for_session,
    import_lock,
    mark_simulated,
)
from customers.models import Customer

logger = logging.getLogger(__name__)

SESSION_PROMPT = "(imported Claude Code session)"

# The workflow of imported sessions when the import names none.
DEFAULT_WORKFLOW_SLUG = "claude-code"

# Message ids looked up per query when checking other sessions.
LOOKUP_BATCH = 2000


@dataclasses.dataclass
class SessionImport:
    """The outcome of one session's import: what it recorded, or its error."""

    session_id: str
    project: str
    execution_id: int | None = None
    created: bool = False
    new_messages: int = 0
    api_messages: int = 0
    output_tokens: int = 0
    models: list[str] = dataclasses.field(default_factory=list)
    unpriced_models: list[str] = dataclasses.field(default_factory=list)
    priced_cost_usd: Decimal = Decimal(0)
    status: str = ""
    error: str = ""

    @property
    def cost_usd(self) -> Decimal | None:
        """The session's cost, or None while some of its tokens have no price."""
        return None if self.unpriced_models else self.priced_cost_usd


@dataclasses.dataclass
class LogImport:
    """The outcome of one import of session logs."""

    stats: ReadStats
    sessions: list[SessionImport] = dataclasses.field(default_factory=list)
    # Project folder -> files left out because no customer was given for it.
    unattributed: dict[str, int] = dataclasses.field(default_factory=dict)
    # Responses already recorded under another imported session.
    copied_responses: int = 0
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def api_messages(self) -> int:
        return sum(session.api_messages for session in self.sessions)

    @property
    def new_messages(self) -> int:
        return sum(session.new_messages for session in self.sessions)

    @property
    def priced_cost_usd(self) -> Decimal:
        return sum((session.priced_cost_usd for session in self.sessions), Decimal(0))

    @property
    def unpriced_models(self) -> list[str]:
        return sorted({m for s in self.sessions for m in s.unpriced_models})


def claude_logs_import(
    *,
    paths: Iterable[Path],
    customer: Customer | None = None,
    workflow: Workflow | None = None,
    project_customers: dict[str, Customer] | None = None,
    since: datetime | None = None,
    progress: Callable[[ReadStats], None] | None = None,
) -> LogImport:
    """Import every session log under `paths`.

    A session is attributed to the customer mapped to its project folder in
    `project_customers`, else to `customer`. A session with neither is left
    out and counted in `unattributed`. Sessions go to `workflow`, else to
    the `claude-code` workflow, created when missing. A session that fails
    is reported in its `error` and the import goes on.

    Raise FileNotFoundError when a path does not exist.
    """
    project_customers = project_customers or {}
    report = LogImport(stats=ReadStats())
    with _asynchronous_commit():
        _import_groups(
            discover_sessions(paths),
            customer,
            workflow,
            project_customers,
            since,
            progress,
            report,
        )
    logger.info(
        "Imported session logs: %d files, %d lines, %d sessions, %d new API "
        "messages, %d malformed lines",
        report.stats.files,
        report.stats.lines,
        len(report.sessions),
        report.new_messages,
        report.stats.malformed_lines,
    )
    return report


@contextlib.contextmanager
def _asynchronous_commit():
    """Let this connection's commits return before their WAL reaches the disk.

    Each recorded message commits on its own. The logs stay on disk, and
    importing them again restores anything that a server crash in the
    following fraction of a second would lose, so the import need not wait
    for a disk flush per message. Set for this session only; other
    connections and the server's setting are unchanged.
    """
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO off")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET synchronous_commit")


def _import_groups(
    groups: list[SessionFiles],
    customer: Customer | None,
    workflow: Workflow | None,
    project_customers: dict[str, Customer],
    since: datetime | None,
    progress: Callable[[ReadStats], None] | None,
    report: LogImport,
) -> None:
    for group in groups:
        owner = project_customers.get(group.project, customer)
        if owner is None:
            report.unattributed[group.project] = report.unattributed.get(
                group.project, 0
            ) + len(group.files)
            continue
        sessions = read_session_files(
            group, report.stats, since=since, progress=progress
        )
        for session in sessions.values():
            if not session.responses:
                continue
            outcome = _import_session(session, group, owner, workflow, report)
            if outcome is not None:
                report.sessions.append(outcome)


def _import_session(
    session: SessionLog,
    group: SessionFiles,
    customer: Customer,
    workflow: Workflow | None,
    report: LogImport,
) -> SessionImport | None:
    """Import one session; return None when all its responses were copies."""
    outcome = SessionImport(session_id=session.session_id, project=group.project)
    responses = _not_recorded_elsewhere(
        session.session_id,
        sorted(session.responses.values(), key=response_order),
        report,
    )
    if not responses:
        return None

    first = responses[0]
    recorded_at = first.timestamp or _modified_at(group.files[0])
    try:
        execution, created = execution_for_session(
            customer=customer,
            workflow=workflow or _default_workflow(first.model),
            session_id=session.session_id,
            model=first.model,
            recorded_at=recorded_at,
            prompt=SESSION_PROMPT,
        )
    except TranscriptError as exc:
        outcome.error = str(exc)
        logger.warning("Session %s: not imported: %s", session.session_id, exc)
        return outcome

    outcome.execution_id = execution.pk
    outcome.created = created
    with import_lock(execution.pk):
        try:
            # Outside a transaction each recorder write commits on its own in
            # one round trip, as in a live run. A transaction would add a
            # savepoint and its release to each write. An import that stops
            # half way keeps what it stored, and importing again tops it up.
            outcome.new_messages = _record(
                execution, responses, session, recorded_at, report
            )
        except Exception as exc:
            # Close the execution so it is not left queued, and go on with
            # the next session.
            logger.exception(
                "Execution %s: import of session %s failed",
                execution.pk,
                session.session_id,
            )
            StreamRecorder(execution).finish(error=f"The import failed: {exc}")
            outcome.error = f"import failed: {exc}"
        if created:
            date_from_messages(execution)
        mark_simulated(execution)

    _fill_outcome(outcome, execution.pk)
    return outcome


def _default_workflow(model: str) -> Workflow:
    workflow, _ = Workflow.objects.get_or_create(
        slug=DEFAULT_WORKFLOW_SLUG,
        defaults={
            "name": "Claude Code sessions (imported)",
            "model": model,
            # Imported history only: not a workflow that can be run.
            "is_active": False,
        },
    )
    return workflow


def _not_recorded_elsewhere(
    session_id: str, responses: list[LoggedResponse], report: LogImport
) -> list[LoggedResponse]:
    """Drop responses that an execution other than this session's recorded.

    One API response must count once. A resumed session's log repeats the
    earlier session's responses under their own ids, and the CLI also logs
    the sessions of live runs, whose responses the recorder stored already.
    """
    seen: set[str] = set()
    keys = [response.key for response in responses]
    this_session = Q(
        execution__source=Execution.Source.IMPORTED,
        execution__sdk_session_id=session_id,
    )
    for start in range(0, len(keys), LOOKUP_BATCH):
        seen.update(
            ApiMessage.objects.filter(message_id__in=keys[start : start + LOOKUP_BATCH])
            .exclude(this_session)
            .values_list("message_id", flat=True)
        )
    report.copied_responses += len(seen)
    return [response for response in responses if response.key not in seen]


def _record(
    execution: Execution,
    responses: list[LoggedResponse],
    session: SessionLog,
    recorded_at: datetime,
    report: LogImport,
) -> int:
    """Replay the responses not yet stored through the recorder; return how many."""
    clock = TranscriptClock(recorded_at)
    recorder = StreamRecorder(execution, clock=clock.now)
    new = [r for r in responses if r.key not in recorder.messages]
    for response in responses:
        stored = recorder.messages.get(response.key)
        if stored is not None and stored.usage.output_tokens < response.output_tokens:
            # NOTE: the recorder never lowers or raises a finished response's
            # output count, so a copy that grew after an earlier import is
            # reported, not applied.
            report.warnings.append(
                f"Session {session.session_id}: response {response.key} now "
                f"reports {response.output_tokens} output tokens, "
                f"{stored.usage.output_tokens} are recorded; not changed."
            )
    if not new:
        return 0
    for response in new:
        clock.current = response.timestamp or clock.current
        for event in _stream_events(response):
            recorder.handle(
                StreamEvent(
                    uuid=str(uuid.uuid4()),
                    session_id=session.session_id,
                    event=event,
                    parent_tool_use_id=response.agent_key or None,
                )
            )
    last = session.last_main_response()
    if last is not None and last.stop_reason == "end_turn":
        recorder.handle(_finished_turn(session, recorder))
    # A write that failed in flight is raised here, and fails the session.
    recorder.settle()
    recorder.finish()
    return len(new)


def _stream_events(response: LoggedResponse) -> list[dict]:
    usage = response.usage
    delta_usage = {"output_tokens": response.output_tokens}
    if isinstance(usage.get("server_tool_use"), dict):
        delta_usage["server_tool_use"] = usage["server_tool_use"]
    return [
        {
            "type": "message_start",
            "message": {
                "id": response.key,
                "model": response.model,
                "usage": usage,
            },
        },
        {"type": "message_delta", "usage": delta_usage},
        {"type": "message_stop"},
    ]


def _finished_turn(session: SessionLog, recorder: StreamRecorder) -> ResultMessage:
    """Return a result for a session whose agent ended its last turn itself.

    Session logs have no result message. The status is `succeeded` when
    the main agent's last response ended with `end_turn`, and `interrupted`
    otherwise, as for a stream-json transcript cut off before its result.
    """
    turns = sum(
        1 for state in recorder.messages.values() if not state.parent_tool_use_id
    )
    return ResultMessage(
        subtype="success",
        duration_ms=0,
        duration_api_ms=0,
        is_error=False,
        num_turns=turns,
        session_id=session.session_id,
        stop_reason="end_turn",
        model_usage={},
    )


def _fill_outcome(outcome: SessionImport, execution_id: int) -> None:
    execution = Execution.objects.get(pk=execution_id)
    messages = ApiMessage.objects.filter(execution_id=execution_id)
    outcome.api_messages = execution.api_message_count
    outcome.output_tokens = execution.output_tokens
    outcome.priced_cost_usd = execution.cost_usd
    outcome.status = execution.status
    outcome.models = sorted(set(messages.values_list("model", flat=True)))
    outcome.unpriced_models = sorted(
        set(messages.filter(cost_usd__isnull=True).values_list("model", flat=True))
    )


def _modified_at(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
