"""Scripted scenarios of the Messages API simulator.

A request picks its scenario with a marker such as ``[sim:tool-loop]``
anywhere in the text of its first user message; without one it gets
``default``. The turn number is derived from the request alone: it is the
number of assistant messages already in ``messages``, plus one. So the
server keeps no conversation state, and a retried request gets the same
turn. Only the overloaded and error-midstream scenarios remember requests,
to fail the first attempt of each turn.

Every number of every response comes from the tables below, so a test can
compute exact costs with ``scenario_usage()``. Each row gives, per response:
uncached input tokens, tokens written to the 5-minute and to the 1-hour
cache, tokens read from the cache, and output tokens. The prompt of a
response is input + 5m + 1h + read, as in the Messages API. A request for a
turn past the end of its table gets the last row again.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any

MARKER_PATTERN = re.compile(r"\[sim:([a-z0-9][a-z0-9-]*)\]")
DEFAULT_SCENARIO = "default"

# The CLI states the session's working directory in a block of its own
# that it puts before the prompt in the first user message (seen with
# Claude Code 2.1.332).
WORKING_DIRECTORY_PATTERN = re.compile(r"Primary working directory: (\S[^\n]*)")

# Placeholder in tool inputs, replaced by the session's working directory.
CWD = "{cwd}"


class UnknownScenarioError(ValueError):
    """A request names a scenario that does not exist."""


class Fault(enum.Enum):
    """A failure a scenario injects in place of, or into, a response."""

    # message_start and one text delta, then no more bytes.
    STALL = "stall"
    # HTTP 529 on the first attempt of each turn.
    OVERLOADED = "overloaded"
    # An SSE error event after message_start on the first attempt of each turn.
    ERROR_MIDSTREAM = "error-midstream"


@dataclass(frozen=True)
class TurnUsage:
    """Token counts of one response, as the Messages API reports them."""

    input_tokens: int
    cache_write_5m: int
    cache_write_1h: int
    cache_read: int
    output_tokens: int

    @property
    def cache_creation_input_tokens(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    def as_dict(self) -> dict[str, int]:
        """Return the counts under the Messages API field names."""
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "ephemeral_5m_input_tokens": self.cache_write_5m,
            "ephemeral_1h_input_tokens": self.cache_write_1h,
            "cache_read_input_tokens": self.cache_read,
            "output_tokens": self.output_tokens,
        }


@dataclass(frozen=True)
class Text:
    """A text content block."""

    text: str


@dataclass(frozen=True)
class ToolUse:
    """A tool_use content block; string inputs may contain ``{cwd}``."""

    name: str
    input: dict[str, Any]

    def render_input(self, cwd: str) -> dict[str, Any]:
        return {
            key: value.replace(CWD, cwd) if isinstance(value, str) else value
            for key, value in self.input.items()
        }


@dataclass(frozen=True)
class Turn:
    """One scripted response: its usage and its content blocks."""

    usage: TurnUsage
    content: tuple[Text | ToolUse, ...]

    @property
    def stop_reason(self) -> str:
        if any(isinstance(block, ToolUse) for block in self.content):
            return "tool_use"
        return "end_turn"


@dataclass(frozen=True)
class Scenario:
    """A named script of turns, with an optional fault or model swap."""

    name: str
    description: str
    turns: tuple[Turn, ...]
    fault: Fault | None = None
    # Requested model id -> model id the responses report instead.
    substitute_models: dict[str, str] = field(default_factory=dict)

    def turn(self, number: int) -> Turn:
        """Return turn `number` (1-based); past the end, the last turn."""
        if number < 1:
            raise ValueError(f"Turn numbers start at 1, got {number}.")
        return self.turns[min(number, len(self.turns)) - 1]

    def reported_model(self, requested: str) -> str:
        if not self.substitute_models:
            return requested
        return self.substitute_models.get(
            requested, self.substitute_models[SUBSTITUTE_FALLBACK]
        )


# Key of the model reported for any requested id not listed.
SUBSTITUTE_FALLBACK = "*"


def _read(relative_path: str) -> ToolUse:
    return ToolUse("Read", {"file_path": f"{CWD}/{relative_path}"})


# default: one text response.
#
# | turn | input | 5m write | 1h write | cache read | output | content |
# |------|-------|----------|----------|------------|--------|---------|
# | 1    | 120   | 2,400    | 0        | 9,600      | 36     | text    |
DEFAULT = Scenario(
    name="default",
    description="One turn with one text block.",
    turns=(
        Turn(
            TurnUsage(120, 2_400, 0, 9_600, 36),
            (Text("Hello from the AgentMargin simulator. The run worked."),),
        ),
    ),
)

# multi-block: one response with a text block and two tool_use blocks, so
# the SDK yields three AssistantMessages with one message id and one usage.
#
# | turn | input | 5m write | 1h write | cache read | output | content              |
# |------|-------|----------|----------|------------|--------|----------------------|
# | 1    | 150   | 2,600    | 0        | 9,600      | 84     | text, Read, Read     |
# | 2    | 420   | 380      | 0        | 12,200     | 52     | text                 |
MULTI_BLOCK = Scenario(
    name="multi-block",
    description="A text block and two Read calls in one response, then text.",
    turns=(
        Turn(
            TurnUsage(150, 2_600, 0, 9_600, 84),
            (
                Text("I will read both notes files before answering."),
                _read("notes.txt"),
                _read("README.md"),
            ),
        ),
        Turn(
            TurnUsage(420, 380, 0, 12_200, 52),
            (Text("Both files are read. The summary is ready."),),
        ),
    ),
)

# tool-loop: three tool turns, then a final text response. Each turn reads the
# whole prompt cached so far (the previous read plus the previous write) and
# writes the new tail to the 5-minute cache.
#
# | turn | input | 5m write | 1h write | cache read | output | content |
# |------|-------|----------|----------|------------|--------|---------|
# | 1    | 140   | 2,500    | 0        | 9,600      | 61     | Read    |
# | 2    | 310   | 240      | 0        | 12,100     | 58     | Read    |
# | 3    | 330   | 260      | 0        | 12,340     | 63     | Read    |
# | 4    | 350   | 280      | 0        | 12,600     | 95     | text    |
TOOL_LOOP = Scenario(
    name="tool-loop",
    description="Three turns that each call Read, then a final text.",
    turns=(
        Turn(TurnUsage(140, 2_500, 0, 9_600, 61), (_read("notes.txt"),)),
        Turn(TurnUsage(310, 240, 0, 12_100, 58), (_read("README.md"),)),
        Turn(TurnUsage(330, 260, 0, 12_340, 63), (_read("notes.txt"),)),
        Turn(
            TurnUsage(350, 280, 0, 12_600, 95),
            (Text("I read the files three times. Nothing in them changed."),),
        ),
    ),
)

# cache: the first turn writes to both cache lifetimes, later turns only
# read what it wrote.
#
# | turn | input | 5m write | 1h write | cache read | output | content |
# |------|-------|----------|----------|------------|--------|---------|
# | 1    | 90    | 1,800    | 8,000    | 0          | 45     | Read    |
# | 2    | 160   | 0        | 0        | 9,800      | 38     | Read    |
# | 3    | 170   | 0        | 0        | 9,800      | 70     | text    |
CACHE = Scenario(
    name="cache",
    description="Turn 1 writes 5-minute and 1-hour cache, later turns read it.",
    turns=(
        Turn(TurnUsage(90, 1_800, 8_000, 0, 45), (_read("notes.txt"),)),
        Turn(TurnUsage(160, 0, 0, 9_800, 38), (_read("README.md"),)),
        Turn(
            TurnUsage(170, 0, 0, 9_800, 70),
            (Text("Done. Later turns were served from the prompt cache."),),
        ),
    ),
)

# stall: message_start, one text block start and one delta, then silence
# until the client disconnects, the stall limit passes or the server stops.
# Only message_start's usage is ever sent, so output stays at 1.
#
# | turn | input | 5m write | 1h write | cache read | output | content        |
# |------|-------|----------|----------|------------|--------|----------------|
# | 1    | 100   | 2,000    | 0        | 9,600      | 1      | partial text   |
STALL = Scenario(
    name="stall",
    description="Starts a text response, then sends nothing more.",
    turns=(
        Turn(
            TurnUsage(100, 2_000, 0, 9_600, 1),
            (Text("Thinking about it"),),
        ),
    ),
    fault=Fault.STALL,
)

# overloaded: the first attempt of each turn gets HTTP 529; the retry gets
# the row below. The 529 responses carry no usage.
#
# | turn | input | 5m write | 1h write | cache read | output | content |
# |------|-------|----------|----------|------------|--------|---------|
# | 1    | 130   | 2,450    | 0        | 9,600      | 48     | Read    |
# | 2    | 290   | 210      | 0        | 12,050     | 41     | text    |
OVERLOADED = Scenario(
    name="overloaded",
    description="HTTP 529 on the first attempt of each turn; retries succeed.",
    turns=(
        Turn(TurnUsage(130, 2_450, 0, 9_600, 48), (_read("notes.txt"),)),
        Turn(
            TurnUsage(290, 210, 0, 12_050, 41),
            (Text("Finished after the API recovered from overload."),),
        ),
    ),
    fault=Fault.OVERLOADED,
)

# error-midstream: the first attempt of each turn sends message_start with
# the row's input counts and output 1, then an overloaded_error event, and
# closes the stream. A non-streaming first attempt gets HTTP 529 instead.
# The retry gets the full row.
#
# | turn | input | 5m write | 1h write | cache read | output | content |
# |------|-------|----------|----------|------------|--------|---------|
# | 1    | 100   | 2,000    | 0        | 9,600      | 29     | text    |
ERROR_MIDSTREAM = Scenario(
    name="error-midstream",
    description="An overloaded_error event after message_start, then a retry.",
    turns=(
        Turn(
            TurnUsage(100, 2_000, 0, 9_600, 29),
            (Text("Answered on the second attempt."),),
        ),
    ),
    fault=Fault.ERROR_MIDSTREAM,
)

# substitute: reports another model id than the request named, because the
# product must price by the model the response reports.
#
# | turn | input | 5m write | 1h write | cache read | output | content |
# |------|-------|----------|----------|------------|--------|---------|
# | 1    | 110   | 2,300    | 0        | 9,600      | 33     | text    |
SUBSTITUTE = Scenario(
    name="substitute",
    description="Reports claude-sonnet-4-5-20250929 whatever the request named.",
    turns=(
        Turn(
            TurnUsage(110, 2_300, 0, 9_600, 33),
            (Text("This answer comes from a substitute model."),),
        ),
    ),
    substitute_models={
        "claude-sonnet-4-5-20250929": "claude-haiku-4-5-20251001",
        SUBSTITUTE_FALLBACK: "claude-sonnet-4-5-20250929",
    },
)

# max-turns: calls a tool on every turn, so only the turn limit ends the
# run. Turns after the second repeat the second row.
#
# | turn | input | 5m write | 1h write | cache read | output | content |
# |------|-------|----------|----------|------------|--------|---------|
# | 1    | 140   | 2,500    | 0        | 9,600      | 57     | Read    |
# | 2+   | 300   | 230      | 0        | 12,100     | 57     | Read    |
MAX_TURNS = Scenario(
    name="max-turns",
    description="Calls Read on every turn and never ends with text.",
    turns=(
        Turn(TurnUsage(140, 2_500, 0, 9_600, 57), (_read("notes.txt"),)),
        Turn(TurnUsage(300, 230, 0, 12_100, 57), (_read("notes.txt"),)),
    ),
)

CHILD_MARKER = "[sim:child]"

# subagent: turn 1 starts a subagent through the CLI's Agent tool with a
# prompt that carries the child marker, so the subagent's requests get the
# child scenario. Turn 2 is the parent's final text.
#
# NOTE: Claude Code CLI 2.1.332 passes the child's AssistantMessages to the
# SDK only with CLAUDE_CODE_FORWARD_SUBAGENT_TEXT=1, and never the child's
# stream events, so the child's output count is not in the SDK stream.
#
# | turn | input | 5m write | 1h write | cache read | output | content |
# |------|-------|----------|----------|------------|--------|---------|
# | 1    | 160   | 2,700    | 0        | 9,600      | 120    | Agent   |
# | 2    | 520   | 310      | 0        | 12,300     | 64     | text    |
SUBAGENT = Scenario(
    name="subagent",
    description="Delegates to one subagent, then ends with a text.",
    turns=(
        Turn(
            TurnUsage(160, 2_700, 0, 9_600, 120),
            (
                ToolUse(
                    "Agent",
                    {
                        "description": "Summarize notes file",
                        "prompt": f"{CHILD_MARKER} Summarize notes.txt in one line.",
                        "subagent_type": "general-purpose",
                        # CLI 2.1.332 runs agents in the background by
                        # default, and the parent must wait for this result.
                        "run_in_background": False,
                    },
                ),
            ),
        ),
        Turn(
            TurnUsage(520, 310, 0, 12_300, 64),
            (Text("The subagent finished its summary."),),
        ),
    ),
)

# child: the subagent started by the subagent scenario.
#
# | turn | input | 5m write | 1h write | cache read | output | content |
# |------|-------|----------|----------|------------|--------|---------|
# | 1    | 60    | 1,900    | 0        | 4,100      | 70     | text    |
CHILD = Scenario(
    name="child",
    description="The subagent of the subagent scenario: one text.",
    turns=(
        Turn(
            TurnUsage(60, 1_900, 0, 4_100, 70),
            (Text("The notes file lists three tasks, all done."),),
        ),
    ),
)

SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        DEFAULT,
        MULTI_BLOCK,
        TOOL_LOOP,
        CACHE,
        STALL,
        OVERLOADED,
        ERROR_MIDSTREAM,
        SUBSTITUTE,
        MAX_TURNS,
        SUBAGENT,
        CHILD,
    )
}


def get_scenario(name: str) -> Scenario:
    """Return the scenario called `name`, or raise UnknownScenarioError."""
    try:
        return SCENARIOS[name]
    except KeyError:
        known = ", ".join(sorted(SCENARIOS))
        raise UnknownScenarioError(
            f"Unknown simulator scenario {name!r}. Known scenarios: {known}."
        ) from None


def scenario_usage(name: str) -> list[dict[str, int]]:
    """Return the per-turn usage table of scenario `name`, turn 1 first.

    Each row uses the Messages API field names, with the 5m and 1h parts of
    ``cache_creation_input_tokens`` as top-level keys.
    """
    return [turn.usage.as_dict() for turn in get_scenario(name).turns]


def first_user_text(body: dict[str, Any]) -> str:
    """Return all text of the first user message, blocks joined by newlines."""
    for message in body.get("messages") or []:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            texts = [
                block.get("text", "")
                for block in content
                if isinstance(block, dict) and block.get("type") == "text"
            ]
            return "\n".join(text for text in texts if isinstance(text, str))
        return ""
    return ""


def select_scenario(body: dict[str, Any]) -> Scenario:
    """Return the scenario of the first marker in the first user message.

    Raises UnknownScenarioError for a marker naming no scenario.
    """
    match = MARKER_PATTERN.search(first_user_text(body))
    return get_scenario(match.group(1) if match else DEFAULT_SCENARIO)


def turn_number(body: dict[str, Any]) -> int:
    """Return the 1-based turn of a request: prior assistant messages + 1."""
    messages = body.get("messages") or []
    prior = sum(
        1
        for message in messages
        if isinstance(message, dict) and message.get("role") == "assistant"
    )
    return prior + 1


def working_directory(body: dict[str, Any]) -> str:
    """Return the session's working directory as the CLI states it.

    Falls back to ``.`` when the request does not state one.

    NOTE: tool inputs built on the ``.`` fallback are relative paths, which
    the CLI's Read tool rejects with an error result.
    """
    match = WORKING_DIRECTORY_PATTERN.search(first_user_text(body))
    return match.group(1).strip() if match else "."
