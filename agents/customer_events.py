"""The customer's view of an execution's live events: tokens and status, no cost.

The staff stream in agents.views sends our cost with every event. The
portal and the REST API reuse that stream with `customer_event` as its
filter, which keeps only the fields listed here, so a field added to the
events later stays hidden from customers until it is listed.
"""

from __future__ import annotations

from agents.models import TOKEN_COUNT_FIELDS

MESSAGE_FIELDS = frozenset(
    {
        "type",
        "execution_id",
        "message_id",
        "sequence",
        "model",
        "parent_tool_use_id",
        *TOKEN_COUNT_FIELDS,
        "estimated",
        "output_final",
        "complete",
    }
)
SUMMARY_FIELDS = frozenset(
    {
        "execution_id",
        "status",
        "workflow",
        "models",
        "api_messages",
        "num_turns",
        *TOKEN_COUNT_FIELDS,
    }
)
FINISHED_FIELDS = frozenset({"type", "execution_id", "status", "summary"})


def customer_event(event: dict) -> dict:
    """Return the event with only the fields a customer may see."""
    if event.get("type") == "execution_finished":
        summary = event.get("summary") or {}
        visible = {key: value for key, value in event.items() if key in FINISHED_FIELDS}
        visible["summary"] = {
            key: value for key, value in summary.items() if key in SUMMARY_FIELDS
        }
        return visible
    return {key: value for key, value in event.items() if key in MESSAGE_FIELDS}
