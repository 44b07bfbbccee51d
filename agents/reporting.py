"""Text and JSON lines printed by the run_agent and import_stream commands."""

from __future__ import annotations

import json

from agents.recorder import MessageUpdate
from agents.selectors import decimal_text


def message_line(update: MessageUpdate) -> str:
    """Format one API message as a line of text, with the running total."""
    state = update.message
    usage = state.usage
    cost = "unpriced" if state.cost_usd is None else f"${decimal_text(state.cost_usd)}"
    running = f"${decimal_text(update.running_cost_usd)}" + (
        " + unpriced" if update.unpriced else ""
    )
    flags = []
    if state.parent_tool_use_id:
        flags.append("subagent")
    if state.estimated:
        flags.append("estimated")
    suffix = f" [{', '.join(flags)}]" if flags else ""
    return (
        f"{state.message_id}  {state.model}  in={usage.input_tokens} out={usage.output_tokens} "
        f"cw5m={usage.cache_write_5m_tokens} cw1h={usage.cache_write_1h_tokens} "
        f"cr={usage.cache_read_tokens}  cost={cost}  total={running}{suffix}"
    )


def message_json(update: MessageUpdate) -> str:
    """Format one API message as one JSON object."""
    state = update.message
    usage = state.usage
    return json.dumps(
        {
            "type": "api_message",
            "message_id": state.message_id,
            "model": state.model,
            "parent_tool_use_id": state.parent_tool_use_id or None,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_write_5m_tokens": usage.cache_write_5m_tokens,
            "cache_write_1h_tokens": usage.cache_write_1h_tokens,
            "cache_read_tokens": usage.cache_read_tokens,
            "web_search_requests": usage.web_search_requests,
            "cost_usd": decimal_text(state.cost_usd),
            "running_cost_usd": decimal_text(update.running_cost_usd),
            "estimated": state.estimated,
        }
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
