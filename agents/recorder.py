"""Turn the Agent SDK's message stream into priced, committed usage rows.

One `StreamRecorder` belongs to one execution and receives its messages
in order. Each API response (one message id) becomes one `ApiMessage` row,
written as soon as the response starts and updated when its final output
count arrives. Each write is sent at once and commits on its own. The
recorder reads the results when it has nothing else to do (`settle()`), and
only then notifies listeners and receivers of `api_message_recorded` of
those writes (agents.message_writer). Reading results later holds back no
write, because each is sent when its message is handled and commits as
soon as the server has run it. A crash therefore loses at most the
responses that have arrived and not yet committed, which is the one in
flight while the recorder keeps up with the stream. The execution's running
totals are kept in memory and written with a message at most once a second
and at the end. After a crash the sweeper sums them from the rows.

What the stream carries (claude-agent-sdk 0.2.189, Claude Code CLI 2.1.332):

- A `message_start` stream event opens a response with its input and cache
  counts and a placeholder output count (usually 1).
- A response with several content blocks arrives as several
  `AssistantMessage`s with the same message id and the same usage; only the
  first counts.
- The `message_delta` stream event carries the cumulative output count, so
  the last one wins. Stream events carry no message id: a delta belongs to
  the response most recently started in the same (sub)agent.
- The `ResultMessage` carries the CLI's own cost estimate and per-model
  totals. Our prices stay the billing figure; the per-model output totals
  fill in responses whose final count never streamed.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import NamedTuple

from claude_agent_sdk import AssistantMessage, ResultMessage, StreamEvent, SystemMessage
from django.db import DatabaseError, transaction
from django.utils import timezone

from agents.message_writer import (
    PIPELINE_DEPTH,
    UPDATE_FIELDS,
    MessageWriter,
    insert_values,
    pipelining_enabled,
    prepared_statements_enabled,
    update_values,
)
from agents.models import TOKEN_COUNT_FIELDS, ApiMessage, Execution, cost_difference
from agents.pricing import PriceQuote, TokenUsage, price_usage
from agents.signals import api_message_recorded, execution_finished

logger = logging.getLogger(__name__)


RESULT_STATUSES = {
    "success": Execution.Status.SUCCEEDED,
    "error_max_turns": Execution.Status.MAX_TURNS,
    "error_max_budget_usd": Execution.Status.BUDGET_EXCEEDED,
}

# Terminal reasons the CLI gives when a run was stopped from outside.
INTERRUPT_REASONS = frozenset({"aborted_streaming", "aborted_tools", "interrupted"})

# The execution's running totals are written with a message at most this
# often; finish() always writes them.
TOTALS_INTERVAL_SECONDS = 1.0

# Stream event types that change usage. Text and tool-input deltas, which
# make up most of a stream, are dropped before any database work.
USAGE_EVENT_TYPES = frozenset({"message_start", "message_delta", "message_stop"})


@dataclasses.dataclass
class MessageState:
    """The recorder's state of one API response, mirrored in its row."""

    message_id: str
    sequence: int
    model: str
    parent_tool_use_id: str
    usage: TokenUsage
    arrived_at: datetime
    # Whether the row exists, or its INSERT has been sent.
    stored: bool = False
    # The MessageWriter number of the row's last write, 0 before the first.
    write_number: int = 0
    # UPDATE_FIELDS values of the row's last write by this recorder.
    written: list | None = None
    output_final: bool = False
    complete: bool = False
    estimated: bool = False
    cost_usd: Decimal | None = None
    price_source: str = ""
    price_version: str = ""
    # False while the response's usage is missing or unreadable: its tokens
    # are then unknown, so it stays unpriced rather than costing zero.
    usage_known: bool = True
    # The quote of the last full pricing. A new output count alone is
    # priced from it, without looking the rates up again.
    quote: PriceQuote | None = None

    def contribution(self) -> Contribution:
        """Return what this response adds to the execution's totals now."""
        return Contribution(
            counts=self.usage.counts(),
            cost_usd=self.cost_usd,
            estimated=self.estimated,
        )

    def token_counts(self) -> dict[str, int]:
        return {name: getattr(self.usage, name) for name in TOKEN_COUNT_FIELDS}

    def copy(self) -> MessageState:
        """Return a shallow copy, as dataclasses.replace() would, only faster."""
        copied = object.__new__(MessageState)
        copied.__dict__.update(self.__dict__)
        return copied


class MessageUpdate(NamedTuple):
    """A stored change to one API message, with the execution's new running cost.

    A named tuple rather than a frozen dataclass: two are built per API
    message, and a frozen dataclass takes twice as long to build.
    """

    message: MessageState
    running_cost_usd: Decimal
    unpriced: bool
    complete: bool


class Contribution(NamedTuple):
    """One response's share of the execution totals, in TOKEN_COUNT_FIELDS order."""

    counts: tuple[int, ...]
    cost_usd: Decimal | None
    estimated: bool


@dataclasses.dataclass
class RunningTotals:
    # Token counts in TOKEN_COUNT_FIELDS order.
    counts: list[int] = dataclasses.field(
        default_factory=lambda: [0] * len(TOKEN_COUNT_FIELDS)
    )
    cost_usd: Decimal = Decimal(0)
    unpriced_messages: int = 0
    estimated_messages: int = 0

    @property
    def tokens(self) -> dict[str, int]:
        return dict(zip(TOKEN_COUNT_FIELDS, self.counts, strict=True))

    def apply(self, contribution: Contribution, sign: int) -> None:
        counts = self.counts
        for index, value in enumerate(contribution.counts):
            counts[index] += sign * value
        if contribution.cost_usd is None:
            self.unpriced_messages += sign
        else:
            self.cost_usd += sign * contribution.cost_usd
        if contribution.estimated:
            self.estimated_messages += sign

    def replace(self, previous: Contribution, current: Contribution) -> None:
        """Swap one response's earlier contribution for its current one."""
        counts = self.counts
        for index, (old, new) in enumerate(
            zip(previous.counts, current.counts, strict=True)
        ):
            if old != new:
                counts[index] += new - old
        if previous.cost_usd is not current.cost_usd:
            if previous.cost_usd is None:
                self.unpriced_messages -= 1
            else:
                self.cost_usd -= previous.cost_usd
            if current.cost_usd is None:
                self.unpriced_messages += 1
            else:
                self.cost_usd += current.cost_usd
        if previous.estimated != current.estimated:
            self.estimated_messages += 1 if current.estimated else -1


def is_usage_message(message: object) -> bool:
    """Return whether `message` can change recorded usage or the execution's state."""
    if isinstance(message, StreamEvent):
        return message.event.get("type") in USAGE_EVENT_TYPES
    return isinstance(message, AssistantMessage | ResultMessage | SystemMessage)


class StreamRecorder:
    """Record one execution's SDK messages, committing as it goes.

    `listener`, when given, is called with a `MessageUpdate` for each write
    once it has committed; `run_agent` prints from it. Outside a
    transaction on PostgreSQL, that is at the next `settle()`: the caller
    calls it whenever it has no message to hand over, and `handle()` calls
    it when PIPELINE_DEPTH writes are in flight.
    """

    def __init__(
        self,
        execution: Execution,
        *,
        listener: Callable[[MessageUpdate], None] | None = None,
        clock: Callable[[], datetime] = timezone.now,
    ):
        self.execution = execution
        # Read on every write, where a model's pk property costs more than a
        # plain attribute.
        self.execution_id = execution.pk
        self.listener = listener
        self.clock = clock
        self.totals = RunningTotals()
        self.messages: dict[str, MessageState] = {}
        # Latest response started per agent: "" for the main agent, the
        # parent tool-use id for a subagent.
        self.open_message: dict[str, str] = {}
        self.result: ResultMessage | None = None
        self.interrupt_requested = False
        self._totals_written_at = -math.inf
        self._writer: MessageWriter | None = None
        # Updates whose writes are in flight, oldest first, each with the
        # number of the write it reports.
        self._unsent: list[tuple[int, MessageUpdate]] = []
        # Responses whose INSERT is in flight, by the INSERT's number.
        self._inserts: dict[int, MessageState] = {}
        # Text of the last API error the CLI reported, for the execution.
        self.api_error = ""
        self._load_existing_messages()

    # Entry points -------------------------------------------------------

    def handle(self, message: object) -> None:
        """Record one message from the SDK; anything without usage is ignored."""
        if isinstance(message, StreamEvent):
            self._handle_stream_event(message)
        elif isinstance(message, AssistantMessage):
            self._handle_assistant_message(message)
        elif isinstance(message, ResultMessage):
            self._handle_result(message)
        elif isinstance(message, SystemMessage) and message.subtype == "init":
            self._remember_session(message.data.get("session_id", ""))
        writer = self._writer
        if writer is not None and writer.pending >= PIPELINE_DEPTH:
            self.settle()

    def settle(self) -> None:
        """Wait until every write sent so far has committed, then send its update.

        The updates of writes that failed are not sent, and a response whose
        INSERT failed counts as not stored, so its next write inserts it.
        Then the first database error is raised.
        """
        writer = self._writer
        error = None
        failed: set[int] = set()
        if writer is not None:
            try:
                writer.sync()
            except DatabaseError as exc:
                error = exc
            failed = writer.failed_numbers
            if failed:
                for number, state in self._inserts.items():
                    if number in failed:
                        state.stored = False
                        state.written = None
            self._inserts.clear()
        if self._unsent:
            unsent = self._unsent
            self._unsent = []
            for number, update in unsent:
                if number not in failed:
                    self._notify(update)
        if error is not None:
            raise error

    def start(self) -> None:
        """Mark the execution running."""
        now = self.clock()
        self.execution.status = Execution.Status.RUNNING
        self.execution.started_at = self.execution.started_at or now
        Execution.objects.filter(pk=self.execution.pk).update(
            status=Execution.Status.RUNNING, started_at=self.execution.started_at
        )

    def finish(
        self,
        *,
        error: BaseException | str | None = None,
        interrupted: bool = False,
        budget_exceeded: bool = False,
    ) -> Execution:
        """Close the execution: settle unfinished responses, set its final status.

        `interrupted` means the run was stopped from outside (a timeout, a
        budget stop, a shutdown). Without a result message the status is
        `interrupted` for such a stop and for a stream that simply ended,
        and `failed` when `error` is given. `budget_exceeded` means the
        runner stopped the run because its recorded cost went above its
        budget, and the status is then `budget_exceeded` whatever the
        result says.
        """
        # Each step runs even when one before it failed, because the final
        # status still has to be written.
        write_errors = []
        steps = [self.settle]
        steps += [
            functools.partial(self._settle_incomplete, state)
            for state in self.messages.values()
            if not state.complete
        ]
        steps.append(self.settle)
        for step in steps:
            try:
                step()
            except DatabaseError as exc:
                write_errors.append(exc)
        if self._writer is not None and self._writer.first_error is not None:
            # Also when the error was raised earlier, by handle() or by a
            # query that waited for the writes in flight.
            write_errors.insert(0, self._writer.first_error)
        execution = self.execution
        if write_errors:
            logger.error(
                "Execution %s: a recorded write failed: %s",
                self.execution.pk,
                write_errors[0],
            )
            error = "\n".join(
                filter(None, [str(error or ""), f"A write failed: {write_errors[0]}"])
            )
            # What is stored is incomplete, whatever the result reports.
            execution.status = Execution.Status.FAILED
        else:
            execution.status = self._final_status(
                error=error, interrupted=interrupted, budget_exceeded=budget_exceeded
            )
        execution.finished_at = self.clock()
        if error:
            # The caller's reason (a timeout, a stop) comes first; the CLI's
            # own error text, if any, follows.
            execution.error = "\n".join(filter(None, [str(error), execution.error]))[
                :4000
            ]
        elif self.api_error and not execution.error:
            execution.error = self.api_error[:4000]
        if self.result is None:
            execution.num_turns = sum(
                1 for state in self.messages.values() if not state.parent_tool_use_id
            )
        with transaction.atomic():
            self._copy_totals_to_execution()
            execution.save()
            transaction.on_commit(
                lambda: execution_finished.send(
                    sender=Execution, execution_id=execution.pk, status=execution.status
                )
            )
        logger.info(
            "Execution %s: finished %s, %d API messages, cost %s",
            execution.pk,
            execution.status,
            len(self.messages),
            execution.cost_usd,
        )
        return execution

    def has_open_response(self) -> bool:
        return any(not state.complete for state in self.messages.values())

    # Stream events ------------------------------------------------------

    def _handle_stream_event(self, message: StreamEvent) -> None:
        event = message.event
        event_type = event.get("type")
        if event_type not in USAGE_EVENT_TYPES:
            return
        agent_key = message.parent_tool_use_id or ""
        if event_type == "message_start":
            body = event.get("message")
            if not isinstance(body, dict):
                logger.warning(
                    "Execution %s: message_start without a message object skipped",
                    self.execution.pk,
                )
                return
            self._open_response(
                message_id=body.get("id"),
                model=body.get("model") or "",
                usage=body.get("usage"),
                parent_tool_use_id=agent_key,
            )
            return
        state = self._current(agent_key)
        if state is None:
            return
        if event_type == "message_delta":
            usage = event.get("usage")
            self._apply_delta(
                state,
                usage if isinstance(usage, dict) else {},
                # After an interrupt the CLI closes the response it cut off
                # with its own message_delta, without a stop reason.
                final=not (self.interrupt_requested and not _stop_reason(event)),
            )
        elif event_type == "message_stop" and not state.complete:
            self._close_response(state, abandoned=bool(event.get("abandoned_blocks")))

    def _close_response(self, state: MessageState, *, abandoned: bool) -> None:
        """Mark a response complete at its message_stop.

        The CLI closes a response it gave up on (an interrupt, an error in
        the middle of the stream) with a message_stop of its own that lists
        `abandoned_blocks`. That response, and any without a final output
        count, is kept at its last counts and marked estimated.
        """
        state.complete = True
        if (abandoned or not state.output_final) and not state.estimated:
            previous = state.contribution()
            state.estimated = True
            self._price_and_store(state, previous=previous)
        else:
            self._notify_when_stored(self._snapshot(state), state.write_number)

    def _handle_assistant_message(self, message: AssistantMessage) -> None:
        if (
            message.model == SYNTHETIC_MODEL
            or not message.message_id
            or not message.usage
        ):
            # The CLI reports an API error as a message of its own, with the
            # model "<synthetic>". Nothing was billed for it, but its text
            # describes the failure.
            if message.model == SYNTHETIC_MODEL or message.error:
                self.api_error = _message_text(message) or str(message.error or "")
            return
        state = self.messages.get(message.message_id)
        if state is not None and not state.usage_known:
            # The response's message_start carried no usage; this one does.
            self._replace_usage(state, message.usage)
            return
        if state is None:
            self._open_response(
                message_id=message.message_id,
                model=message.model,
                usage=message.usage,
                parent_tool_use_id=message.parent_tool_use_id or "",
            )
        elif not state.model and message.model:
            # The response's model arrives only now: price the response by
            # it and store it, as its later writes, if any, would.
            previous = state.contribution()
            state.model = message.model
            self._price_and_store(state, previous=previous)

    def _open_response(self, *, message_id, model, usage, parent_tool_use_id) -> None:
        if not message_id:
            logger.warning(
                "Execution %s: response without a message id skipped", self.execution.pk
            )
            return
        known = self.messages.get(message_id)
        if known is not None:
            # A repeated message_start of a finished response must not take
            # the next message_delta away from the response now streaming.
            if not known.complete:
                self.open_message[parent_tool_use_id] = message_id
            return
        self.open_message[parent_tool_use_id] = message_id
        token_usage, unreadable = self._parse_usage(message_id, usage)
        state = MessageState(
            message_id=message_id,
            sequence=len(self.messages) + 1,
            model=model,
            parent_tool_use_id=parent_tool_use_id,
            usage=token_usage,
            arrived_at=self.clock(),
            estimated=unreadable,
            usage_known=not unreadable,
        )
        self.messages[message_id] = state
        self._price_and_store(state, previous=None)

    def _parse_usage(self, message_id: str, usage) -> tuple[TokenUsage, bool]:
        """Return the parsed usage, or zeros and True when it is missing or unreadable."""
        if not usage:
            return TokenUsage(), True
        try:
            return TokenUsage.from_api(usage), False
        except ValueError as exc:
            logger.warning(
                "Execution %s: unreadable usage of %s; its cost stays unknown: %s",
                self.execution.pk,
                message_id,
                exc,
            )
            return TokenUsage(), True

    def _replace_usage(self, state: MessageState, usage) -> None:
        token_usage, unreadable = self._parse_usage(state.message_id, usage)
        if unreadable:
            return
        previous = state.contribution()
        if state.output_final:
            token_usage = token_usage.with_output(state.usage.output_tokens)
        state.usage = token_usage
        state.usage_known = True
        state.estimated = False
        self._price_and_store(state, previous=previous)

    def _apply_delta(self, state: MessageState, usage: dict, *, final: bool) -> None:
        if state.complete and state.output_final:
            return
        try:
            output = usage.get("output_tokens")
            if output is not None:
                output = int(output)
            searches = (usage.get("server_tool_use") or {}).get("web_search_requests")
            if searches is not None:
                searches = int(searches)
        except (TypeError, ValueError, AttributeError):
            logger.warning(
                "Execution %s: unreadable message_delta usage of %s ignored: %r",
                self.execution.pk,
                state.message_id,
                usage,
            )
            return
        if output is None and searches is None:
            return
        usage = state.usage
        if output is None:
            output = usage.output_tokens
        if searches is None:
            searches = usage.web_search_requests
        if (
            state.output_final
            and output == usage.output_tokens
            and searches == usage.web_search_requests
        ):
            # A repeated final count: the stored row already has it.
            return
        previous = state.contribution()
        try:
            # Built directly, because dataclasses.replace() costs twice as
            # much. TokenUsage still checks the counts.
            state.usage = TokenUsage(
                input_tokens=usage.input_tokens,
                output_tokens=output,
                cache_write_5m_tokens=usage.cache_write_5m_tokens,
                cache_write_1h_tokens=usage.cache_write_1h_tokens,
                cache_read_tokens=usage.cache_read_tokens,
                web_search_requests=searches,
                service_tier=usage.service_tier,
                inference_geo=usage.inference_geo,
                speed=usage.speed,
                split_estimated=usage.split_estimated,
            )
        except ValueError as exc:
            logger.warning(
                "Execution %s: invalid message_delta usage of %s ignored: %s",
                self.execution.pk,
                state.message_id,
                exc,
            )
            return
        state.output_final = final
        # Listeners are notified by the message_stop that follows at once.
        self._price_and_store(
            state,
            previous=previous,
            notify=False,
            output_only=state.usage.web_search_requests == usage.web_search_requests,
        )

    def _current(self, agent_key: str) -> MessageState | None:
        message_id = self.open_message.get(agent_key)
        return self.messages.get(message_id) if message_id else None

    # Result -------------------------------------------------------------

    def _handle_result(self, result: ResultMessage) -> None:
        self.result = result
        execution = self.execution
        execution.result_subtype = result.subtype or ""
        execution.stop_reason = result.stop_reason or ""
        execution.num_turns = result.num_turns if _is_count(result.num_turns) else 0
        execution.reported_model_usage = result.model_usage or {}
        execution.reported_cost_usd = _reported_cost(result.total_cost_usd)
        if result.is_error:
            details = [str(error) for error in result.errors or []]
            if self.api_error:
                details.insert(0, self.api_error)
            elif result.result and not details:
                details.append(str(result.result))
            execution.error = "\n".join(details)[:4000]
        self._remember_session(result.session_id)
        self._fill_outputs_from_result(
            result.model_usage or {},
            interrupted=(
                self.interrupt_requested or result.terminal_reason in INTERRUPT_REASONS
            ),
        )

    def _fill_outputs_from_result(
        self, model_usage: dict, *, interrupted: bool = False
    ) -> None:
        """Use the result's per-model output totals for responses that never got a delta.

        The CLI's `modelUsage[model].outputTokens` is exact. When some of a
        model's responses streamed no `message_delta`, the part of that
        total not accounted for by the final ones is spread over them, the
        remainder on the last, and they are marked estimated: the
        execution's total is then exact, each response's share a guess.
        When the total equals what those responses carried, their counts
        are confirmed instead, unless the run was `interrupted`: the CLI's
        total then counts a response cut off in the middle in its own way,
        so such responses keep their streamed counts, estimated. A total
        below that (an interrupted response that the CLI leaves out)
        changes nothing.

        The CLI keys `modelUsage` by the model it asked for, while responses
        carry the model that answered; totals of keys that match no
        response are pooled with the responses whose model matches no key.
        A pooled total with no response at all (a request the CLI made
        outside the stream) is recorded as a row of its own.
        """
        reported = {
            model: usage
            for model, usage in model_usage.items()
            if isinstance(usage, dict)
        }
        answered = {state.model for state in self.messages.values()}
        for model, usage in reported.items():
            if model in answered:
                states = [s for s in self.messages.values() if s.model == model]
                self._fill_group(
                    states, _count_of(usage, "outputTokens"), interrupted=interrupted
                )
        unmatched_keys = [model for model in reported if model not in answered]
        unmatched_states = [
            s for s in self.messages.values() if s.model not in reported
        ]
        if not unmatched_keys:
            return
        if unmatched_states:
            total = sum(
                _count_of(reported[model], "outputTokens") for model in unmatched_keys
            )
            self._fill_group(unmatched_states, total, interrupted=interrupted)
            return
        for model in unmatched_keys:
            self._record_unstreamed(model, reported[model])

    def _fill_group(
        self, states: list[MessageState], reported_output: int, *, interrupted: bool
    ) -> None:
        # After an interrupt, a response closed without a final count was cut
        # off. The CLI's total counts its closing delta again, so it is left out.
        cut_off = [
            state
            for state in states
            if interrupted and state.complete and not state.output_final
        ]
        pending = [
            state
            for state in states
            if not state.output_final and not (interrupted and state.complete)
        ]
        if not pending:
            return
        known = sum(state.usage.output_tokens for state in states if state.output_final)
        missing = (
            reported_output
            - known
            - sum(state.usage.output_tokens for state in cut_off)
        )
        streamed = sum(state.usage.output_tokens for state in pending)
        if missing == streamed and interrupted:
            # finish() settles them at these counts, marked estimated.
            return
        if missing == streamed:
            # The result confirms the counts the responses carried.
            for state in pending:
                previous = state.contribution()
                state.output_final = True
                state.complete = True
                self._price_and_store(state, previous=previous)
            return
        if missing < streamed:
            return
        share, remainder = divmod(missing, len(pending))
        for index, state in enumerate(pending):
            previous = state.contribution()
            output = share + (remainder if index == len(pending) - 1 else 0)
            state.usage = state.usage.with_output(output)
            state.estimated = True
            state.complete = True
            self._price_and_store(state, previous=previous)

    def _record_unstreamed(self, model: str, usage: dict) -> None:
        """Record tokens the result reports for a model no streamed response used."""
        counts = {
            "input_tokens": _count_of(usage, "inputTokens"),
            "output_tokens": _count_of(usage, "outputTokens"),
            "cache_read_input_tokens": _count_of(usage, "cacheReadInputTokens"),
            "cache_creation_input_tokens": _count_of(usage, "cacheCreationInputTokens"),
        }
        if not any(counts.values()):
            return
        message_id = f"result:{model}"
        if message_id in self.messages:
            return
        # Cache writes without a lifetime split count as 5-minute writes.
        state = MessageState(
            message_id=message_id,
            sequence=len(self.messages) + 1,
            model=model,
            parent_tool_use_id="",
            usage=TokenUsage.from_api(counts),
            arrived_at=self.clock(),
            complete=True,
            estimated=True,
        )
        self.messages[message_id] = state
        logger.warning(
            "Execution %s: the result reports %s tokens that no streamed response "
            "carried; recorded as %s, estimated",
            self.execution.pk,
            model,
            message_id,
        )
        self._price_and_store(state, previous=None)

    def _final_status(
        self, *, error, interrupted: bool, budget_exceeded: bool = False
    ) -> str:
        if budget_exceeded:
            return Execution.Status.BUDGET_EXCEEDED
        result = self.result
        if result is not None:
            status = RESULT_STATUSES.get(result.subtype)
            if status == Execution.Status.SUCCEEDED and result.is_error:
                return Execution.Status.FAILED
            if status:
                return status
            if (
                interrupted
                or self.interrupt_requested
                or result.terminal_reason in INTERRUPT_REASONS
            ):
                return Execution.Status.INTERRUPTED
            return Execution.Status.FAILED
        if interrupted or self.interrupt_requested:
            return Execution.Status.INTERRUPTED
        return Execution.Status.FAILED if error else Execution.Status.INTERRUPTED

    # Persistence --------------------------------------------------------

    def _settle_incomplete(self, state: MessageState) -> None:
        """Keep a response that never finished, at its last known counts, as estimated."""
        previous = state.contribution()
        state.complete = True
        if not state.output_final:
            state.estimated = True
        self._price_and_store(state, previous=previous)

    def _price_and_store(
        self,
        state: MessageState,
        *,
        previous: Contribution | None,
        notify: bool = True,
        output_only: bool = False,
    ) -> None:
        """Price `state`, add it to the totals and store it.

        `output_only` means that only the output count changed since the
        last pricing, which can then reuse its quote.
        """
        quote = state.quote
        if state.usage_known and output_only and _output_repriceable(quote):
            state.cost_usd = _cost_with_output(quote, state.usage.output_tokens)
        elif state.usage_known:
            quote = price_usage(state.model, state.usage, state.arrived_at)
            state.quote = quote
            state.cost_usd = quote.cost_usd
            state.price_source = quote.source
            state.price_version = quote.version
            state.estimated = state.estimated or quote.estimated
        else:
            state.cost_usd = None
            state.price_source = ""
            state.price_version = "usage missing or unreadable"
        if previous is None:
            self.totals.apply(state.contribution(), +1)
        else:
            self.totals.replace(previous, state.contribution())
        in_transaction = self._store(state)
        if notify:
            update = self._snapshot(state)
            if in_transaction:
                transaction.on_commit(lambda: self._notify(update))
            else:
                self._notify_when_stored(update, state.write_number)

    def _store(self, state: MessageState) -> bool:
        """Write the row of `state`, with the execution's totals when they are due.

        Return whether the write happened inside a caller's transaction, and
        so has not committed yet. Outside one, every write commits on its
        own, and may still be in flight when this returns. The totals go with a message write at most every
        TOTALS_INTERVAL_SECONDS, and always at the end of the run. They are
        sums of the committed rows, which the sweeper recomputes after a
        crash. Writing the execution's wide row with every message would
        cost more than the message itself. On PostgreSQL a write is one
        statement (agents.message_writer), which outside a transaction
        commits on its own and inside a caller's transaction runs in a
        savepoint. Other databases use `atomic()`.
        """
        with_totals = self._totals_due()
        connection = transaction.get_connection()
        in_transaction = connection.in_atomic_block
        if connection.vendor != "postgresql":
            with transaction.atomic():
                self._write_message(state)
                totals = self._copy_totals_to_execution()
                if with_totals:
                    Execution.objects.filter(pk=self.execution.pk).update(**totals)
        elif in_transaction:
            with transaction.atomic():
                self._write_in_one_statement(connection, state, with_totals)
        else:
            self._write_in_one_statement(connection, state, with_totals)
        return in_transaction

    def _totals_due(self) -> bool:
        now = time.monotonic()
        if now - self._totals_written_at < TOTALS_INTERVAL_SECONDS:
            return False
        self._totals_written_at = now
        return True

    def _write_in_one_statement(
        self, connection, state: MessageState, with_totals: bool
    ) -> None:
        writer = self._writer
        if writer is None or writer.connection is not connection:
            if writer is not None:
                writer.sync()
            writer = self._writer = MessageWriter(
                connection,
                prepare=prepared_statements_enabled(),
                pipeline=pipelining_enabled(),
            )
        execution_id = self.execution_id
        totals = self._copy_totals_to_execution() if with_totals else None
        # datetime.now(UTC) is timezone.now() with USE_TZ on, minus the
        # settings lookup.
        if not state.stored:
            values = insert_values(execution_id, state, datetime.now(UTC))
            writer.insert(values, execution_id=execution_id, totals=totals)
            state.stored = True
            state.write_number = writer.last_number
            if writer.pending:
                self._inserts[state.write_number] = state
            state.written = values[len(values) - len(UPDATE_FIELDS) :]
            return
        values = update_values(state, datetime.now(UTC))
        # The row's key, ROW_KEY_FIELDS.
        values.append(execution_id)
        values.append(state.message_id)
        if (
            totals is not None
            or state.written is None
            or not writer.update_output(values, state.written)
        ):
            writer.update(values, execution_id=execution_id, totals=totals)
        state.write_number = writer.last_number
        del values[-2:]
        state.written = values

    def _write_message(self, state: MessageState) -> None:
        fields = self._message_fields(state)
        if not state.stored:
            ApiMessage.objects.create(
                execution_id=self.execution.pk,
                message_id=state.message_id,
                sequence=state.sequence,
                arrived_at=state.arrived_at,
                **fields,
            )
            state.stored = True
        else:
            ApiMessage.objects.filter(
                execution_id=self.execution.pk, message_id=state.message_id
            ).update(updated_at=self.clock(), **fields)

    @staticmethod
    def _message_fields(state: MessageState) -> dict[str, object]:
        """Return the ApiMessage fields that a write sets, by field name."""
        return {
            **state.token_counts(),
            "model": state.model,
            "parent_tool_use_id": state.parent_tool_use_id,
            "service_tier": state.usage.service_tier,
            "speed": state.usage.speed,
            "inference_geo": state.usage.inference_geo,
            "cost_usd": state.cost_usd,
            "price_source": state.price_source,
            "price_version": state.price_version,
            "output_final": state.output_final,
            "estimated": state.estimated,
        }

    def _copy_totals_to_execution(self) -> dict[str, object]:
        """Set the running totals on the execution and return them by field name."""
        execution = self.execution
        totals = self.totals
        values = {
            **totals.tokens,
            "api_message_count": len(self.messages),
            "cost_usd": totals.cost_usd,
            "unpriced": totals.unpriced_messages > 0,
            "estimated": totals.estimated_messages > 0,
        }
        if execution.reported_cost_usd is not None:
            values["cost_difference_usd"] = cost_difference(
                totals.cost_usd,
                execution.reported_cost_usd,
                unpriced=values["unpriced"],
            )
        for name, value in values.items():
            setattr(execution, name, value)
        return values

    def _remember_session(self, session_id: str) -> None:
        if session_id and not self.execution.sdk_session_id:
            self.execution.sdk_session_id = session_id
            Execution.objects.filter(pk=self.execution.pk).update(
                sdk_session_id=session_id
            )

    def _snapshot(self, state: MessageState) -> MessageUpdate:
        return MessageUpdate(
            message=state.copy(),
            running_cost_usd=self.totals.cost_usd,
            unpriced=self.totals.unpriced_messages > 0,
            complete=state.complete,
        )

    def _notify_when_stored(self, update: MessageUpdate, write_number: int) -> None:
        """Send `update` of the write numbered `write_number` once it has committed.

        That is now when no write is in flight, never when the write failed.
        """
        writer = self._writer
        if writer is not None and write_number in writer.failed_numbers:
            return
        if self._unsent or (writer is not None and writer.pending):
            self._unsent.append((write_number, update))
        else:
            self._notify(update)

    def _notify(self, update: MessageUpdate) -> None:
        if self.listener is not None:
            self.listener(update)
        api_message_recorded.send(
            sender=Execution,
            execution_id=self.execution_id,
            customer_id=self.execution.customer_id,
            update=update,
        )

    def _load_existing_messages(self) -> None:
        """Resume from rows already stored, so replaying a stream changes nothing."""
        rows: Iterable[ApiMessage] = ApiMessage.objects.filter(
            execution_id=self.execution.pk
        ).order_by("sequence")
        for row in rows:
            state = MessageState(
                message_id=row.message_id,
                sequence=row.sequence,
                model=row.model,
                parent_tool_use_id=row.parent_tool_use_id,
                usage=TokenUsage(
                    **{name: getattr(row, name) for name in TOKEN_COUNT_FIELDS},
                    service_tier=row.service_tier,
                    speed=row.speed,
                    inference_geo=row.inference_geo,
                ),
                arrived_at=row.arrived_at,
                stored=True,
                output_final=row.output_final,
                complete=row.output_final,
                estimated=row.estimated,
                cost_usd=row.cost_usd,
                price_source=row.price_source,
                price_version=row.price_version,
            )
            self.messages[row.message_id] = state
            self.totals.apply(state.contribution(), +1)


_MILLION = Decimal(1_000_000)


def _output_repriceable(quote: PriceQuote | None) -> bool:
    """Return whether `quote` can price another output count of its request.

    It can when it priced some output tokens at a rate, because the model's
    rates then have an output rate and any output count is priced.
    """
    return (
        quote is not None
        and quote.cost_usd is not None
        and bool(quote.breakdown.get("output"))
    )


def _cost_with_output(quote: PriceQuote, output_tokens: int) -> Decimal:
    """Return the cost of the quoted request with `output_tokens` of output.

    Output does not count towards the prompt length, so the long-context
    band and the tier and region multipliers stay those of the quote, and
    only its output line changes. The lines are summed in the order and
    with the operations of agents.pricing.rates.price(), so the result is
    the Decimal a fresh price_usage() returns.
    """
    breakdown = dict(quote.breakdown)
    breakdown["output"] = output_tokens * quote.rates["output"] / _MILLION
    return sum(breakdown.values(), Decimal(0))


SYNTHETIC_MODEL = "<synthetic>"

# A reported cost above this is taken as garbage, not money.
MAX_REPORTED_COST_USD = Decimal(1_000_000)


def _reported_cost(value) -> Decimal | None:
    """Return the SDK's reported cost as a Decimal, or None when it is not a sane number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or not 0 <= value <= MAX_REPORTED_COST_USD:
        return None
    # The SDK reports a float; its shortest repr is the value it printed.
    return Decimal(repr(value))


def _stop_reason(event: dict) -> str | None:
    """Return the stop reason of a message_delta event, None when it has none."""
    delta = event.get("delta")
    return delta.get("stop_reason") if isinstance(delta, dict) else None


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _message_text(message: AssistantMessage) -> str:
    return " ".join(
        block.text
        for block in message.content
        if isinstance(getattr(block, "text", None), str)
    ).strip()


def _count_of(usage: dict, key: str) -> int:
    value = usage.get(key)
    return value if _is_count(value) else 0
