"""Text and JSON lines printed by the agent commands (run_agent, import_stream, show_execution)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal

from agents.models import TOKEN_COUNT_FIELDS, ApiMessage
from agents.recorder import MessageUpdate
from agents.selectors import decimal_text


class MessagePrinter:
    """Print each API message once it is complete, with the total of those printed.

    A message's cost can still change after it was printed (the run's result
    fills in output counts that never streamed); printing it again replaces
    its share of the total.
    """

    def __init__(self, write: Callable[[str], None], *, as_json: bool = False):
        self.write = write
        self.format = message_json if as_json else message_line
        self.costs: dict[str, Decimal | None] = {}

    def __call__(self, update: MessageUpdate) -> None:
        if not update.complete:
            return
        state = update.message
        self.costs[state.message_id] = state.cost_usd
        known = [cost for cost in self.costs.values() if cost is not None]
        record = _record(
            state.message_id,
            state.model,
            state.parent_tool_use_id,
            {key: getattr(state.usage, key) for key in TOKEN_COUNT_FIELDS},
            state.cost_usd,
            sum(known, Decimal(0)),
            unpriced=len(known) < len(self.costs),
            estimated=state.estimated,
        )
        self.write(self.format(record))


def row_records(rows: Iterable[ApiMessage]) -> Iterator[dict]:
    """Yield stored API messages as the dicts the commands print, with running totals."""
    running = Decimal(0)
    unpriced = False
    for row in rows:
        if row.cost_usd is None:
            unpriced = True
        else:
            running += row.cost_usd
        yield _record(
            row.message_id,
            row.model,
            row.parent_tool_use_id,
            {key: getattr(row, key) for key in TOKEN_COUNT_FIELDS},
            row.cost_usd,
            running,
            unpriced=unpriced,
            estimated=row.estimated,
        )


def _record(
    message_id,
    model,
    parent_tool_use_id,
    counts,
    cost,
    priced_running,
    *,
    unpriced,
    estimated,
) -> dict:
    """Return the record of one message, named as in the live `api_message` events.

    `running_cost_usd` is null once any message so far is unpriced, and
    `priced_running_cost_usd` is then the priced part.
    """
    return {
        "type": "api_message",
        "message_id": message_id,
        "model": model,
        "parent_tool_use_id": parent_tool_use_id or None,
        **counts,
        "cost_usd": decimal_text(cost),
        "running_cost_usd": None if unpriced else decimal_text(priced_running),
        "priced_running_cost_usd": decimal_text(priced_running),
        "unpriced": unpriced,
        "estimated": estimated,
    }


def message_json(record: dict) -> str:
    """Format one API message record as one JSON object."""
    return json.dumps(record)


def message_line(record: dict) -> str:
    """Format one API message record as a line of text, with the running total."""
    cost = "unpriced" if record["cost_usd"] is None else f"${record['cost_usd']}"
    running = f"${record['priced_running_cost_usd']}"
    if record["unpriced"]:
        running += " + unpriced"
    flags = []
    if record["parent_tool_use_id"]:
        flags.append("subagent")
    if record["estimated"]:
        flags.append("estimated")
    suffix = f" [{', '.join(flags)}]" if flags else ""
    return (
        f"{record['message_id']}  {record['model']}  in={record['input_tokens']} "
        f"out={record['output_tokens']} cw5m={record['cache_write_5m_tokens']} "
        f"cw1h={record['cache_write_1h_tokens']} cr={record['cache_read_tokens']}  "
        f"cost={cost}  total={running}{suffix}"
    )


def summary_lines(summary: dict) -> list[str]:
    """Format an execution summary as readable lines."""
    cost = summary["cost_usd"]
    if cost is None:
        cost = f"unknown (priced part ${summary['priced_cost_usd']}; some models have no price)"
    else:
        cost = f"${cost}"
    reported = summary["reported_cost_usd"]
    lines = [
        f"Execution {summary['execution_id']}: {summary['status']}"
        + (" (simulated)" if summary["simulated"] else ""),
        f"  models: {', '.join(summary['models']) or '-'}",
        f"  API messages: {summary['api_messages']}, turns: {summary['num_turns']}",
        f"  tokens: input {summary['input_tokens']}, output {summary['output_tokens']}, "
        f"cache write 5m {summary['cache_write_5m_tokens']}, "
        f"cache write 1h {summary['cache_write_1h_tokens']}, "
        f"cache read {summary['cache_read_tokens']}",
        f"  cost: {cost}" + (" (estimated counts)" if summary["estimated"] else ""),
        f"  SDK-reported cost: {'$' + reported if reported is not None else 'none'}"
        + (
            f" (ours minus reported: {summary['cost_difference_usd']})"
            if summary["cost_difference_usd"] is not None
            else ""
        ),
    ]
    if summary["error"]:
        lines.append(f"  error: {summary['error']}")
    return lines
