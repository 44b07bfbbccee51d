"""Read Claude Code session logs into one usage record per API response.

Claude Code, and the Agent SDK's CLI, append every session to
`<config>/projects/<project>/<session>.jsonl` (the config folder is
`~/.claude` unless CLAUDE_CONFIG_DIR is set), and since CLI 2.1 a
subagent's lines to `<session>/subagents/agent-<id>.jsonl`. Each line is one
JSON object. Only `assistant` lines carry API usage, and a response with
several content blocks is written once per block, each copy with the
response's usage. Copies written while the response streamed can carry a
smaller `output_tokens` than the last one, so the largest count wins,
whatever the order of the lines. Lines of other types (user turns,
attachments, queue operations, summaries, cost state, request shapes)
carry no usage and are skipped.

Files are read as bytes, one line at a time, so memory does not grow with
a file's size, only with the number of distinct responses of one session.
A line that cannot contain usage is not parsed as JSON at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from agents.pricing import TokenUsage

LOG_SUFFIX = ".jsonl"
SUBAGENTS_FOLDER = "subagents"

# The model the CLI gives its own error messages; nothing was billed for them.
SYNTHETIC_MODEL = "<synthetic>"

# Errors kept for the summary; the rest are only counted.
MAX_REPORTED_ERRORS = 100

# Lines read between two progress reports.
PROGRESS_EVERY_LINES = 20_000


class SessionFiles(NamedTuple):
    """The log files of one session: the main file and its subagents' files."""

    project: str
    session_key: str
    files: tuple[Path, ...]


@dataclasses.dataclass
class LoggedResponse:
    """One API response as the session log records it, merged over its copies."""

    key: str
    message_id: str
    request_id: str
    model: str
    usage: dict
    output_tokens: int
    timestamp: datetime | None
    agent_key: str
    stop_reason: str

    def rank(self) -> tuple[int, int]:
        """Return the sort key that picks the copy to keep: the largest output wins."""
        usage = self.usage
        others = sum(
            value
            for key in (
                "input_tokens",
                "cache_creation_input_tokens",
                "cache_read_input_tokens",
            )
            if isinstance(value := usage.get(key), int)
        )
        return self.output_tokens, others


@dataclasses.dataclass
class SessionLog:
    """The distinct API responses of one session id, by deduplication key."""

    session_id: str
    responses: dict[str, LoggedResponse] = dataclasses.field(default_factory=dict)
    # Request id -> message id, to merge copies that name only the request.
    request_keys: dict[str, str] = dataclasses.field(default_factory=dict)

    def add(self, response: LoggedResponse) -> bool:
        """Merge `response` into the session; return False when it was a copy."""
        if response.message_id and response.request_id:
            self.request_keys[response.request_id] = response.message_id
        existing = self.responses.get(response.key)
        if existing is None:
            self.responses[response.key] = response
            return True
        self.responses[response.key] = merge_copies(existing, response)
        return False

    def merge_request_only_copies(self) -> int:
        """Fold copies keyed by request id into their message id's; return how many."""
        merged = 0
        for key in [key for key in self.responses if key.startswith("request:")]:
            message_id = self.request_keys.get(key.removeprefix("request:"))
            if message_id is None:
                continue
            copy = self.responses.pop(key)
            target = self.responses.get(message_id)
            self.responses[message_id] = (
                copy if target is None else merge_copies(target, copy)
            )
            merged += 1
        return merged

    def last_main_response(self) -> LoggedResponse | None:
        main = [r for r in self.responses.values() if not r.agent_key]
        return max(main, key=response_order) if main else None


@dataclasses.dataclass
class ReadStats:
    """Counts of what the reader saw, across all files of one import."""

    files: int = 0
    lines: int = 0
    bytes: int = 0
    usage_lines: int = 0
    duplicate_lines: int = 0
    skipped_lines: int = 0
    malformed_lines: int = 0
    before_since: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)

    def malformed(self, where: str, reason: str) -> None:
        """Count a malformed line; `where` is its file and line number."""
        self.malformed_lines += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(f"{where}: {reason}")


def response_order(response: LoggedResponse) -> tuple[str, str]:
    """Return the order responses are recorded in: by time, then by key."""
    stamp = response.timestamp.isoformat() if response.timestamp else ""
    return stamp, response.key


def merge_copies(first: LoggedResponse, second: LoggedResponse) -> LoggedResponse:
    """Return the copy with the largest counts, with the earliest time of both.

    The result does not depend on which copy came first: equal ranks with
    different usage objects are settled by their JSON text.
    """
    if second.rank() > first.rank():
        kept, other = second, first
    elif second.rank() < first.rank() or second.usage == first.usage:
        kept, other = first, second
    elif _usage_text(second.usage) > _usage_text(first.usage):
        kept, other = second, first
    else:
        kept, other = first, second
    stamps = [stamp for stamp in (first.timestamp, second.timestamp) if stamp]
    return dataclasses.replace(
        kept,
        message_id=kept.message_id or other.message_id,
        request_id=kept.request_id or other.request_id,
        timestamp=min(stamps) if stamps else None,
        stop_reason=kept.stop_reason or other.stop_reason,
    )


def _usage_text(usage: dict) -> str:
    return json.dumps(usage, sort_keys=True)


def discover_sessions(paths: Iterable[Path]) -> list[SessionFiles]:
    """Group the `.jsonl` files under `paths` by session, in a stable order.

    A path is a folder, searched recursively, or a single log file. A file
    in a `<session>/subagents/` folder belongs to that session, and its
    project is the folder above the session's. Raise FileNotFoundError for a
    path that does not exist.
    """
    groups: dict[tuple[str, str], list[Path]] = {}
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(path)
        candidates = sorted(path.rglob(f"*{LOG_SUFFIX}")) if path.is_dir() else [path]
        for file in candidates:
            if not file.is_file():
                continue
            project, session_key = _session_of(file)
            files = groups.setdefault((project, session_key), [])
            if file not in files:
                files.append(file)
    return [
        SessionFiles(project, session_key, tuple(files))
        for (project, session_key), files in sorted(groups.items())
    ]


def _session_of(file: Path) -> tuple[str, str]:
    if file.parent.name == SUBAGENTS_FOLDER:
        session_folder = file.parent.parent
        return session_folder.parent.name, session_folder.name
    return file.parent.name, file.name.removesuffix(LOG_SUFFIX)


def read_session_files(
    group: SessionFiles,
    stats: ReadStats,
    *,
    since: datetime | None = None,
    progress: Callable[[ReadStats], None] | None = None,
) -> dict[str, SessionLog]:
    """Read the files of `group` and return their responses by session id.

    Lines name their session in `sessionId`; a line without one belongs to
    the session its file is named after. With `since`, files last modified
    before it are not read and responses written before it are dropped.
    """
    sessions: dict[str, SessionLog] = {}
    for path in group.files:
        if since is not None and _modified_at(path) < since.timestamp():
            continue
        stats.files += 1
        for number, data, text in _usage_lines(path, stats, progress):
            response = _response_of(data, text, stats, f"{path}:{number}")
            if response is None:
                continue
            session_id = data.get("sessionId")
            if not isinstance(session_id, str) or not session_id:
                session_id = group.session_key
            session = sessions.get(session_id)
            if session is None:
                session = sessions[session_id] = SessionLog(session_id)
            stats.usage_lines += 1
            if not session.add(response):
                stats.duplicate_lines += 1
    for session in sessions.values():
        stats.duplicate_lines += session.merge_request_only_copies()
        if since is not None:
            for key, response in list(session.responses.items()):
                if response.timestamp is not None and response.timestamp < since:
                    del session.responses[key]
                    stats.before_since += 1
    if progress is not None:
        progress(stats)
    return sessions


def _modified_at(path: Path) -> float:
    return os.stat(path).st_mtime


def _usage_lines(
    path: Path, stats: ReadStats, progress: Callable[[ReadStats], None] | None
) -> Iterator[tuple[int, dict, bytes]]:
    """Yield the number, parsed object and text of each line that may carry usage.

    Other lines are counted as skipped without being parsed, unless they
    are cut off (no closing brace), which counts them as malformed.
    """
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            stats.lines += 1
            stats.bytes += len(raw)
            if progress is not None and stats.lines % PROGRESS_EVERY_LINES == 0:
                progress(stats)
            text = raw.strip()
            if not text:
                continue
            if b'"usage"' not in text:
                if text[:1] == b"{" and text[-1:] == b"}":
                    stats.skipped_lines += 1
                else:
                    stats.malformed(f"{path}:{number}", "not a complete JSON object")
                continue
            try:
                data = json.loads(text)
            except ValueError as exc:
                stats.malformed(f"{path}:{number}", f"invalid JSON ({exc})")
                continue
            if not isinstance(data, dict):
                stats.malformed(f"{path}:{number}", "not a JSON object")
                continue
            yield number, data, text


def _response_of(
    data: dict, text: bytes, stats: ReadStats, where: str
) -> LoggedResponse | None:
    message = data.get("message")

    if (
        data.get("type") != "assistant"
        or not isinstance(message, dict)
        or message.get("usage") is None
    ):
        stats.skipped_lines += 1
        return None
    model = message.get("model")
    if model == SYNTHETIC_MODEL:
        stats.skipped_lines += 1
        return None
    usage = message["usage"]
    try:
        TokenUsage.from_api(usage)
    except ValueError as exc:
        stats.malformed(where, str(exc))
        return None
    if not isinstance(model, str) or not model:
        stats.malformed(where, "assistant message without a model")
        return None

    message_id = _text(message.get("id"))
    request_id = _text(data.get("requestId"))
    if message_id:
        key = message_id
    elif request_id:
        key = f"request:{request_id}"
    else:
        # Neither id: identical lines are one response, any other line its own.
        key = "line:" + hashlib.sha1(text, usedforsecurity=False).hexdigest()
    agent_key = ""
    if data.get("isSidechain"):
        agent_key = "agent:" + (_text(data.get("agentId")) or "sidechain")
    return LoggedResponse(
        key=key,
        message_id=message_id,
        request_id=request_id,
        model=model,
        usage=usage,
        output_tokens=usage.get("output_tokens") or 0,
        timestamp=_timestamp(data.get("timestamp")),
        agent_key=agent_key,
        stop_reason=_text(message.get("stop_reason")),
    )


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
