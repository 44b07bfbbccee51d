"""A loopback HTTP server that speaks the Anthropic Messages API.

It serves ``POST /v1/messages`` (streaming and not),
``POST /v1/messages/count_tokens``, ``HEAD`` on any path and
``GET /simulator/health``, with responses scripted in ``scenarios``. The
Claude Code CLI runs whole agent sessions against it when
``ANTHROPIC_BASE_URL`` points here. It checks no API key.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import secrets
import select
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from . import events
from .scenarios import (
    Fault,
    ToolUse,
    Turn,
    UnknownScenarioError,
    select_scenario,
    turn_number,
    working_directory,
)

logger = logging.getLogger(__name__)

# Every message id the simulator issues starts with this, so a transcript of
# a simulated run can be told apart from one of a real run.
SIMULATOR_MESSAGE_ID_PREFIX = "msg_sim_"
SIMULATOR_NAME = "agentmargin-simulator"
SIMULATOR_VERSION = "1.0"
HEALTH_PATH = "/simulator/health"
MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"

DEFAULT_STALL_SECONDS = 300.0
# Request bodies of the CLI are about 60 KB for a short session and grow
# with the conversation. Larger bodies are rejected with HTTP 413.
MAX_BODY_BYTES = 64 * 1024 * 1024
# How often a stalled response checks for a disconnect or a server stop.
STALL_POLL_SECONDS = 0.1
# Rough size of a token for count_tokens, in characters of request JSON.
CHARS_PER_TOKEN = 4
OVERLOADED_STATUS = 529


@dataclass(frozen=True)
class RequestRecord:
    """One request the simulator received and the HTTP status it returned.

    A stalled response is recorded with status 200 although it never
    completes.
    """

    method: str
    path: str
    status: int
    model: str | None = None
    scenario: str | None = None
    turn: int | None = None
    stream: bool = False
    message_id: str | None = None
    reported_model: str | None = None


class _SimulatorState:
    """State shared by the handler threads of one server."""

    def __init__(self, stall_seconds: float):
        self.stall_seconds = stall_seconds
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._counter = 0
        self._attempted: set[str] = set()

    def new_id(self, prefix: str) -> str:
        """Return an id unique to this server: a counter and a random part."""
        with self._lock:
            self._counter += 1
            number = self._counter
        return f"{prefix}{number:06d}_{secrets.token_hex(6)}"

    def is_first_attempt(self, key: str) -> bool:
        """Return True the first time `key` is seen, False afterwards."""
        with self._lock:
            if key in self._attempted:
                return False
            self._attempted.add(key)
            return True

    def add_record(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)


def attempt_key(body: dict[str, Any], session_id: str) -> str:
    """Return a key that is equal for every attempt of one request.

    The CLI resends the same messages when it retries, so a hash of them
    and the session id distinguishes a retry from the first attempt. The
    session id (the CLI's X-Claude-Code-Session-Id header) keeps two runs
    with the same prompt apart.
    """
    digest = hashlib.sha256(session_id.encode())
    digest.update(json.dumps(body.get("messages"), sort_keys=True).encode())
    return digest.hexdigest()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"{SIMULATOR_NAME}/{SIMULATOR_VERSION}"
    server: _HTTPServer

    @property
    def state(self) -> _SimulatorState:
        return self.server.state

    def log_message(self, format: str, *args: Any) -> None:
        # One line per request is logged by _record; the default access log
        # would write to stderr a second time.
        logger.debug("Simulator HTTP: %s", format % args)

    # Routing

    def do_HEAD(self) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self._record(status=HTTPStatus.OK)

    def do_GET(self) -> None:
        if urlsplit(self.path).path == HEALTH_PATH:
            body = {
                "simulator": True,
                "name": SIMULATOR_NAME,
                "version": SIMULATOR_VERSION,
            }
            self._send_json(HTTPStatus.OK, body)
            self._record(status=HTTPStatus.OK)
            return
        self._send_error(HTTPStatus.NOT_FOUND, "not_found_error", "Not found.")
        self._record(status=HTTPStatus.NOT_FOUND)

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        body = self._read_json_body()
        if body is None:
            return
        if path == MESSAGES_PATH:
            self._handle_messages(body)
        elif path == COUNT_TOKENS_PATH:
            self._handle_count_tokens(body)
        else:
            self._send_error(HTTPStatus.NOT_FOUND, "not_found_error", "Not found.")
            self._record(status=HTTPStatus.NOT_FOUND, model=body.get("model"))

    # Endpoints

    def _handle_count_tokens(self, body: dict[str, Any]) -> None:
        # An estimate, but a deterministic one: the same request always
        # gets the same count.
        counted = {key: body.get(key) for key in ("system", "messages", "tools")}
        size = len(json.dumps(counted, sort_keys=True))
        self._send_json(
            HTTPStatus.OK, {"input_tokens": max(1, size // CHARS_PER_TOKEN)}
        )
        self._record(status=HTTPStatus.OK, model=body.get("model"))

    def _handle_messages(self, body: dict[str, Any]) -> None:
        model = body.get("model")
        stream = bool(body.get("stream", False))
        if not isinstance(model, str) or not model:
            message = "model: Field required."
            self._send_error(HTTPStatus.BAD_REQUEST, "invalid_request_error", message)
            self._record(status=HTTPStatus.BAD_REQUEST, stream=stream)
            return
        try:
            scenario = select_scenario(body)
        except UnknownScenarioError as error:
            self._send_error(
                HTTPStatus.BAD_REQUEST, "invalid_request_error", str(error)
            )
            self._record(status=HTTPStatus.BAD_REQUEST, model=model, stream=stream)
            return

        turn = turn_number(body)
        fields = {"model": model, "scenario": scenario.name, "turn": turn}
        first_attempt = True
        if scenario.fault in (Fault.OVERLOADED, Fault.ERROR_MIDSTREAM):
            session_id = self.headers.get("X-Claude-Code-Session-Id", "")
            first_attempt = self.state.is_first_attempt(attempt_key(body, session_id))

        # A non-streaming request cannot fail mid-stream, so it gets the 529.
        fails_before_start = scenario.fault is Fault.OVERLOADED or (
            scenario.fault is Fault.ERROR_MIDSTREAM and not stream
        )
        if fails_before_start and first_attempt:
            self._send_error(OVERLOADED_STATUS, "overloaded_error", "Overloaded")
            self._record(status=OVERLOADED_STATUS, stream=stream, **fields)
            return

        message_id = self.state.new_id(SIMULATOR_MESSAGE_ID_PREFIX)
        reported_model = scenario.reported_model(model)
        fields.update(message_id=message_id, reported_model=reported_model)
        spec = scenario.turn(turn)
        blocks = self._render_blocks(spec, working_directory(body))
        self._record(status=HTTPStatus.OK, stream=stream, **fields)

        if scenario.fault is Fault.STALL:
            self._stall(message_id, reported_model, spec, blocks, stream)
        elif scenario.fault is Fault.ERROR_MIDSTREAM and first_attempt:
            self._fail_midstream(message_id, reported_model, spec)
        elif stream:
            self._write_stream(
                events.stream_events(message_id, reported_model, spec, blocks)
            )
        else:
            message = events.message_body(message_id, reported_model, spec, blocks)
            self._send_json(HTTPStatus.OK, message)

    def _render_blocks(self, spec: Turn, cwd: str) -> list[events.RenderedBlock]:
        blocks = []
        for block in spec.content:
            if isinstance(block, ToolUse):
                tool_use_id = self.state.new_id("toolu_sim_")
                rendered = events.RenderedBlock(
                    block, tool_use_id=tool_use_id, tool_input=block.render_input(cwd)
                )
            else:
                rendered = events.RenderedBlock(block)
            blocks.append(rendered)
        return blocks

    # Faults

    def _stall(
        self,
        message_id: str,
        model: str,
        spec: Turn,
        blocks: list[events.RenderedBlock],
        stream: bool,
    ) -> None:
        """Send the start of a response, then hold the connection open.

        A non-streaming request gets no bytes at all. Either way the
        connection is closed without a complete response when the wait ends.
        """
        if stream:
            first = blocks[0]
            head = [
                events.message_start_event(message_id, model, spec.usage),
                events.ping_event(),
                events.block_start_event(0, first),
                next(events.block_delta_events(0, first)),
            ]
            if not self._write_stream(head):
                return
        outcome = self._wait_while_connected(self.state.stall_seconds)
        logger.info("Simulator message %s: stall ended (%s)", message_id, outcome)
        self.close_connection = True

    def _fail_midstream(self, message_id: str, model: str, spec: Turn) -> None:
        error = events.error_body("overloaded_error", "Overloaded")
        self._write_stream(
            [
                events.message_start_event(message_id, model, spec.usage),
                events.ping_event(),
                events.encode_event("error", error),
            ]
        )

    def _wait_while_connected(self, seconds: float) -> str:
        """Block until the client disconnects, `seconds` pass or the server stops.

        Returns which of the three happened.
        """
        deadline = time.monotonic() + seconds
        while True:
            if self.state.stopping.is_set():
                return "server stopping"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "stall limit reached"
            timeout = min(STALL_POLL_SECONDS, remaining)
            readable, _, _ = select.select([self.connection], [], [], timeout)
            if readable:
                try:
                    data = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    return "client disconnected"
                if not data:
                    return "client disconnected"
                # No API client sends more bytes on a connection that is
                # streaming a response, so the wait ends here.
                return "client sent unexpected data"

    # Wire helpers

    def _write_stream(self, chunks: Iterable[bytes]) -> bool:
        """Send a 200 event stream of `chunks`; return False if the client left.

        The connection closes after the last chunk, which ends the stream
        for the client.
        """
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.send_header("request-id", self.state.new_id("req_sim_"))
        self.end_headers()
        self.close_connection = True
        try:
            for chunk in chunks:
                self.wfile.write(chunk)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            logger.info("Simulator %s: client disconnected mid-stream", self.path)
            return False
        return True

    def _read_json_body(self) -> dict[str, Any] | None:
        length_header = self.headers.get("Content-Length")
        try:
            length = int(length_header) if length_header is not None else -1
        except ValueError:
            length = -1
        if length < 0:
            self._send_error(
                HTTPStatus.LENGTH_REQUIRED,
                "invalid_request_error",
                "Missing or invalid Content-Length header.",
            )
            self._record(status=HTTPStatus.LENGTH_REQUIRED)
            return None
        if length > MAX_BODY_BYTES:
            self._send_error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                "request_too_large",
                f"Request body of {length} bytes exceeds {MAX_BODY_BYTES} bytes.",
            )
            self.close_connection = True
            self._record(status=HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            return None
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            body = None
            reason = f"Request body is not valid JSON: {error}."
        else:
            reason = "Request body must be a JSON object."
        if not isinstance(body, dict):
            self._send_error(HTTPStatus.BAD_REQUEST, "invalid_request_error", reason)
            self._record(status=HTTPStatus.BAD_REQUEST)
            return None
        return body

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("request-id", self.state.new_id("req_sim_"))
        self.end_headers()
        self.wfile.write(payload)

    def _send_error(self, status: int, error_type: str, message: str) -> None:
        if status < HTTPStatus.INTERNAL_SERVER_ERROR:
            logger.warning(
                "Simulator %s %s: rejected with %s %s: %s",
                self.command,
                self.path,
                int(status),
                error_type,
                message,
            )
        self._send_json(status, events.error_body(error_type, message))

    def _record(self, *, status: int, **fields: Any) -> None:
        record = RequestRecord(
            method=self.command, path=self.path, status=int(status), **fields
        )
        self.state.add_record(record)
        if record.scenario is None:
            logger.info(
                "Simulator %s %s: status=%s", record.method, record.path, record.status
            )
            return
        logger.info(
            "Simulator %s %s: status=%s scenario=%s turn=%s stream=%s model=%s "
            "reported_model=%s message=%s",
            record.method,
            record.path,
            record.status,
            record.scenario,
            record.turn,
            record.stream,
            record.model,
            record.reported_model,
            record.message_id,
        )


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Handler threads are daemons and stalled ones stop on the state's
    # stopping event, so closing the server does not wait for them.
    block_on_close = False

    def __init__(self, address, state: _SimulatorState):
        self.state = state
        super().__init__(address, _Handler)


class _HTTPServerV6(_HTTPServer):
    address_family = socket.AF_INET6


def check_loopback(host: str) -> None:
    """Raise ValueError unless `host` is ``localhost`` or a loopback IP."""
    if host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise ValueError(
            f"The simulator binds only to loopback addresses, got {host!r}. "
            "Use 127.0.0.1, ::1 or localhost."
        )


class SimulatorServer:
    """A Messages API simulator serving from a daemon thread.

    Use ``start()`` and ``stop()``, or a ``with`` block. Port 0 picks a free
    port; ``url`` then gives the base URL to put in ANTHROPIC_BASE_URL.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
    ):
        check_loopback(host)
        if stall_seconds < 0:
            raise ValueError(f"stall_seconds must be 0 or more, got {stall_seconds}.")
        self.host = "127.0.0.1" if host == "localhost" else host
        self.port = port
        self._state = _SimulatorState(stall_seconds)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of the running server, without a trailing slash."""
        if self._httpd is None:
            raise RuntimeError("The simulator is not running; call start() first.")
        host, port = self._httpd.server_address[:2]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the requests received so far, oldest first."""
        return self._state.records()

    def start(self) -> str:
        """Bind, serve from a daemon thread and return the base URL."""
        if self._httpd is not None:
            raise RuntimeError("The simulator is already running.")
        self._state.stopping.clear()
        server_class = _HTTPServerV6 if ":" in self.host else _HTTPServer
        self._httpd = server_class((self.host, self.port), self._state)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"simulator-{self._httpd.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        logger.info("Simulator listening on %s", self.url)
        return self.url

    def stop(self) -> None:
        """Stop serving, end stalled responses and close the socket."""
        if self._httpd is None:
            return
        url = self.url
        self._state.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None
        logger.info("Simulator on %s stopped", url)

    def __enter__(self) -> SimulatorServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
