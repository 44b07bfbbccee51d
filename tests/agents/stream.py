"""Builders of Agent SDK messages, shaped as the SDK yields them."""

import itertools

from claude_agent_sdk import (
    AssistantMessage,
    ResultMessage,
    StreamEvent,
    TextBlock,
    ToolUseBlock,
)

SESSION_ID = "9f0c3a52-5d1e-4d5e-9a53-0c7e1c1f2b11"
_uuids = itertools.count(1)


def usage(input=0, output=1, write_5m=0, write_1h=0, read=0):
    return {
        "input_tokens": input,
        "cache_creation_input_tokens": write_5m + write_1h,
        "cache_read_input_tokens": read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": write_5m,
            "ephemeral_1h_input_tokens": write_1h,
        },
        "output_tokens": output,
    }


def event(body, parent=None):
    return StreamEvent(
        uuid=f"uuid-{next(_uuids)}",
        session_id=SESSION_ID,
        event=body,
        parent_tool_use_id=parent,
    )


def message_start(message_id, model, message_usage, parent=None):
    return event(
        {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "usage": message_usage,
            },
        },
        parent,
    )


def message_delta(output_tokens, parent=None, stop_reason="end_turn"):
    return event(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason},
            "usage": {"output_tokens": output_tokens},
        },
        parent,
    )


def message_stop(parent=None):
    return event({"type": "message_stop"}, parent)


def text_delta(text="Looking.", parent=None):
    return event(
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": text},
        },
        parent,
    )


def assistant(message_id, model, message_usage, *, tool=False, parent=None):
    block = (
        ToolUseBlock(id=f"toolu_{message_id}", name="Grep", input={"pattern": "TODO"})
        if tool
        else TextBlock(text="Here is what I found.")
    )
    return AssistantMessage(
        content=[block],
        model=model,
        parent_tool_use_id=parent,
        usage=message_usage,
        message_id=message_id,
        session_id=SESSION_ID,
    )


def result(
    *,
    subtype="success",
    num_turns=1,
    total_cost_usd=None,
    model_usage=None,
    is_error=False,
    terminal_reason=None,
):
    return ResultMessage(
        subtype=subtype,
        duration_ms=1000,
        duration_api_ms=900,
        is_error=is_error,
        num_turns=num_turns,
        session_id=SESSION_ID,
        total_cost_usd=total_cost_usd,
        model_usage=model_usage,
        terminal_reason=terminal_reason,
    )
