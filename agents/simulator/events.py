"""Build Messages API response bodies and server-sent events from a turn.

The shapes follow the streaming Messages API as the Claude Code CLI 2.1.332
consumes it. A stream is ``message_start`` with the whole input usage and
``output_tokens`` 1, then a ``ping`` and one start, delta and stop group per
content block. Exactly one ``message_delta`` follows with the stop reason
and the final, cumulative output count, and ``message_stop`` ends it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .scenarios import Text, ToolUse, Turn, TurnUsage

# Number of deltas a text or tool input is split into, when long enough.
DELTA_CHUNKS = 3


@dataclass(frozen=True)
class RenderedBlock:
    """A content block with its ids and inputs filled in for one response."""

    block: Text | ToolUse
    tool_use_id: str | None = None
    tool_input: dict[str, Any] | None = None

    def as_content(self) -> dict[str, Any]:
        """Return the block as it appears in a complete message."""
        if isinstance(self.block, Text):
            return {"type": "text", "text": self.block.text}
        return {
            "type": "tool_use",
            "id": self.tool_use_id,
            "name": self.block.name,
            "input": self.tool_input,
        }


def usage_body(usage: TurnUsage, output_tokens: int) -> dict[str, Any]:
    """Return a Messages API usage object for `usage` with `output_tokens`."""
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_write_5m,
            "ephemeral_1h_input_tokens": usage.cache_write_1h,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def message_body(
    message_id: str, model: str, turn: Turn, blocks: list[RenderedBlock]
) -> dict[str, Any]:
    """Return the complete message of a non-streaming response."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [block.as_content() for block in blocks],
        "stop_reason": turn.stop_reason,
        "stop_sequence": None,
        "usage": usage_body(turn.usage, turn.usage.output_tokens),
    }


def error_body(error_type: str, message: str) -> dict[str, Any]:
    """Return a Messages API error body."""
    return {"type": "error", "error": {"type": error_type, "message": message}}


def encode_event(name: str, data: dict[str, Any]) -> bytes:
    """Frame one server-sent event."""
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def split_chunks(text: str, chunks: int = DELTA_CHUNKS) -> list[str]:
    """Split `text` into up to `chunks` non-empty pieces that join back to it.

    Pieces end after whitespace where the text has any, as model output
    tends to arrive in whole words.
    """
    words = re.findall(r"\S+\s*|\s+", text)
    if len(words) < chunks:
        size = max(1, -(-len(text) // chunks))
        return [text[start : start + size] for start in range(0, len(text), size)]
    per_chunk = -(-len(words) // chunks)
    return [
        "".join(words[start : start + per_chunk])
        for start in range(0, len(words), per_chunk)
    ]


def message_start_event(message_id: str, model: str, usage: TurnUsage) -> bytes:
    message = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        # The API reports one output token at message_start; the real
        # count arrives in message_delta.
        "usage": usage_body(usage, 1),
    }
    return encode_event("message_start", {"type": "message_start", "message": message})


def block_start_event(index: int, block: RenderedBlock) -> bytes:
    if isinstance(block.block, Text):
        content_block: dict[str, Any] = {"type": "text", "text": ""}
    else:
        content_block = {
            "type": "tool_use",
            "id": block.tool_use_id,
            "name": block.block.name,
            "input": {},
        }
    return encode_event(
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": content_block},
    )


def block_delta_events(index: int, block: RenderedBlock) -> Iterator[bytes]:
    if isinstance(block.block, Text):
        pieces = split_chunks(block.block.text)
        deltas = [{"type": "text_delta", "text": piece} for piece in pieces]
    else:
        pieces = split_chunks(json.dumps(block.tool_input))
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
    for delta in deltas:
        yield encode_event(
            "content_block_delta",
            {"type": "content_block_delta", "index": index, "delta": delta},
        )


def block_stop_event(index: int) -> bytes:
    return encode_event(
        "content_block_stop", {"type": "content_block_stop", "index": index}
    )


def ping_event() -> bytes:
    return encode_event("ping", {"type": "ping"})


def stream_events(
    message_id: str, model: str, turn: Turn, blocks: list[RenderedBlock]
) -> Iterator[bytes]:
    """Yield every event of a complete streamed response, in order."""
    yield message_start_event(message_id, model, turn.usage)
    yield ping_event()
    for index, block in enumerate(blocks):
        yield block_start_event(index, block)
        yield from block_delta_events(index, block)
        yield block_stop_event(index)
    yield encode_event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": turn.stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": turn.usage.output_tokens},
        },
    )
    yield encode_event("message_stop", {"type": "message_stop"})
