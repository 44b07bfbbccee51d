"""The stateful fake Stripe: clock, store, request dispatch and failure injection."""

import copy
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import urlsplit

import stripe

from . import invoicing, metering, routes
from .objects import ID_PREFIXES
from .validation import validate
from .webhooks import make_event, post_to_loopback, signed_body
from .wire import (
    FakeStripeError,
    decode_form,
    decode_json,
    encode_json,
    new_id,
)

IDEMPOTENCY_WINDOW_SECONDS = 24 * 60 * 60


class ConnectionDropped(Exception):
    """The fake closes the connection without sending a response."""


@dataclass
class RecordedRequest:
    """One request the fake received, and the HTTP status of its response."""

    method: str
    path: str
    params: dict
    headers: dict
    idempotency_key: str | None
    status: int | None = None
    request_id: str | None = None
    host: str | None = None
    replayed: bool = False
    injected: bool = False


@dataclass
class Injection:
    method: str | None
    path: str
    status: int | None
    times: int
    connection_error: bool
    after: bool
    when: object = None

    def matches(self, record):
        if self.times <= 0:
            return False
        if self.method and self.method.upper() != record.method:
            return False
        if not record.path.startswith(self.path):
            return False
        return self.when is None or bool(self.when(record))


@dataclass
class Context:
    """Request details passed to a handler."""

    method: str
    path: str
    api_mode: str
    request_id: str
    idempotency_key: str | None
    headers: dict
    expand: list = field(default_factory=list)


class FakeStripe:
    """An in-memory Stripe account that stripe-python's client can talk to."""

    def __init__(self, now=None, *, api_key=None, webhook_secret=None):
        self._base_time = now
        self._offset = 0
        self.api_key = api_key or new_id("sk_test_fake_", 24)
        self.webhook_secret = webhook_secret or new_id("whsec_", 32)
        self.api_version = stripe.api_version
        self.store = {kind: {} for kind in ID_PREFIXES}
        self.requests = []
        self.meter_events = []
        self.meter_event_errors = []
        self.events = []
        self.webhook_deliveries = []
        self.retry_sleeps = []
        self._lock = threading.RLock()
        self._injections = []
        self._idempotent = {}
        self.identifiers = {}
        self.sessions = {}
        self._failing_customers = set()
        self.deleted_customers = set()
        self._listeners = []
        self._endpoints = []
        self._pending_events = []
        self._sequence = 0
        self._invoice_numbers = 0
        self.subscription_cycles = {}

    # The clock.

    @property
    def now(self):
        base = self._base_time if self._base_time is not None else int(time.time())
        return int(base) + self._offset

    def advance(self, seconds):
        self._offset += int(seconds)
        return self.now

    def set_time(self, timestamp):
        self._base_time = int(timestamp)
        self._offset = 0
        return self.now

    # Clients.

    def http_client(self, *, sleep=False):
        from .transport import FakeHTTPClient

        return FakeHTTPClient(self, sleep=sleep)

    def client(self, **kwargs):
        """Return a ``StripeClient`` for this fake.

        Without ``base_addresses`` the client talks to the fake in process;
        with them it uses stripe-python's default HTTP client over sockets.
        """
        if "base_addresses" not in kwargs:
            kwargs.setdefault("http_client", self.http_client())
        return stripe.StripeClient(
            api_key=kwargs.pop("api_key", self.api_key), **kwargs
        )

    def client_for(self, server, **kwargs):
        addresses = {"api": server.url, "meter_events": server.url}
        return self.client(base_addresses=addresses, **kwargs)

    # Failure injection and webhook targets.

    def inject(
        self,
        method=None,
        path="/",
        status=None,
        times=1,
        *,
        connection_error=False,
        after=False,
        when=None,
    ):
        """Fail the next ``times`` requests whose path starts with ``path``.

        ``status`` 429 returns Stripe's rate-limit error, a 5xx status an API
        error, and ``connection_error`` drops the connection. With ``after``
        the fake first processes the request, so Stripe would keep its
        result, and then fails the response. ``when``, if given, is called
        with the RecordedRequest (decoded ``params`` included) and picks the
        requests to fail, for example one customer's meter events.
        """
        if status is None and not connection_error:
            raise ValueError("inject() needs a status or connection_error=True.")
        with self._lock:
            self._injections.append(
                Injection(method, path, status, times, connection_error, after, when)
            )

    def fail_next_payment(self, customer_id):
        self._failing_customers.add(customer_id)

    def add_webhook_listener(self, callback):
        """Call ``callback(body_bytes, stripe_signature)`` for each event sent."""
        self._listeners.append(callback)

    def add_webhook_endpoint(self, url):
        """POST each event sent to ``url``, which must be a loopback address."""
        self._endpoints.append(url)

    def signed(self, event, *, secret=None, timestamp=None):
        return signed_body(event, secret or self.webhook_secret, timestamp)

    # State helpers for tests.

    def meter_usage(self, meter_id, customer_id, start, end):
        with self._lock:
            return metering.meter_usage(self, meter_id, customer_id, start, end)

    def close_period(self, subscription_id):
        with self._lock:
            invoice = invoicing.close_period(self, subscription_id)
        self._deliver_pending()
        return invoice

    def send_upcoming(self, subscription_id):
        """Emit ``invoice.upcoming`` with a preview of the next invoice."""
        with self._lock:
            event = invoicing.send_upcoming(self, subscription_id)
        self._deliver_pending()
        return event

    def event_types(self):
        return [event["type"] for event in self.events]

    # Identifiers, objects and events, used by the handlers.

    def next_id(self, kind):
        return new_id(ID_PREFIXES[kind], 24)

    def next_sequence(self):
        self._sequence += 1
        return self._sequence

    def get(self, kind, object_id, *, param="id", label=None):
        obj = self.store[kind].get(object_id)
        if obj is None:
            raise FakeStripeError(
                f"No such {label or kind.split('.')[-1]}: '{object_id}'",
                status=404,
                code="resource_missing",
                param=param,
            )
        return obj

    def put(self, kind, obj):
        self.store[kind][obj["id"]] = obj
        return obj

    def emit(self, event_type, obj, *, context=None, previous=None):
        request = {"id": None, "idempotency_key": None}
        if context is not None:
            request = {
                "id": context.request_id,
                "idempotency_key": context.idempotency_key,
            }
        event = make_event(
            event_type,
            obj,
            created=self.now,
            api_version=self.api_version,
            request=request,
            previous=previous,
        )
        event["id"] = self.next_id("event")
        self.events.append(event)
        self._pending_events.append(event)
        return event

    def _deliver_pending(self):
        with self._lock:
            pending, self._pending_events = self._pending_events, []
        for event in pending:
            body, header = self.signed(event)
            for listener in self._listeners:
                self._deliver(event, repr(listener), partial(listener, body, header))
            for url in self._endpoints:
                self._deliver(event, url, partial(post_to_loopback, url, body, header))

    def _deliver(self, event, target, send):
        record = {"event": event["id"], "type": event["type"], "target": target}
        try:
            record["result"] = send()
        except Exception as exc:  # noqa: BLE001 - a failed delivery is recorded
            record["error"] = repr(exc)
        self.webhook_deliveries.append(record)

    # Dispatch.

    def handle(self, method, url, headers, body):
        """Serve one HTTP request; return (status, headers, body bytes).

        Raises ConnectionDropped when an injected connection error applies.
        """
        try:
            return self._handle(method, url, headers, body)
        finally:
            self._deliver_pending()

    def _handle(self, method, url, headers, body):
        parts = urlsplit(url)
        path, host = parts.path, parts.hostname
        headers = {key.lower(): value for key, value in (headers or {}).items()}
        api_mode = "V2" if path.startswith("/v2/") else "V1"
        request_id = new_id("req_", 14)
        key = headers.get("idempotency-key")
        if isinstance(body, bytes):
            body = body.decode()
        with self._lock:
            record = RecordedRequest(
                method.upper(), path, {}, headers, key, request_id=request_id, host=host
            )
            self.requests.append(record)
            record.params = self._decode_quietly(parts.query, body, record, api_mode)
            injection = self._take_injection(record, after=False)
            if injection:
                return self._injected(injection, record, api_mode)
            status, response_headers, payload = self._process(
                method.upper(), path, host, parts.query, headers, body, record, api_mode
            )
            record.status = status
            injection = self._take_injection(record, after=True)
            if injection:
                return self._injected(injection, record, api_mode)
        response_headers["Request-Id"] = request_id
        response_headers.setdefault("Content-Type", "application/json")
        return status, response_headers, encode_json(payload)

    def _decode_quietly(self, query, body, record, api_mode):
        try:
            return self._decode(record.method, query, body, record.headers, api_mode)
        except FakeStripeError:
            return {}

    def _take_injection(self, record, *, after):
        for injection in self._injections:
            if injection.after == after and injection.matches(record):
                injection.times -= 1
                return injection
        return None

    def _injected(self, injection, record, api_mode):
        record.injected = True
        if injection.connection_error:
            record.status = None
            raise ConnectionDropped(record.path)
        record.status = injection.status
        error = _injected_error(injection.status, api_mode)
        headers = {"Request-Id": record.request_id, "Content-Type": "application/json"}
        headers.update(error.headers)
        return injection.status, headers, encode_json(_error_body(error, api_mode))

    def _process(self, method, path, host, query, headers, body, record, api_mode):
        context = Context(method, path, api_mode, record.request_id, None, headers)
        raw = {}
        try:
            route, path_args = routes.resolve(method, path)
            routes.check_host(route, host)
            raw = self._decode(method, query, body, headers, api_mode)
            record.params = raw
            routes.authenticate(self, route, headers)
            replay = self._replay(method, path, headers, raw, record)
            if replay is not None:
                return replay
            params = validate(raw, route.params_class, form=api_mode == "V1")
            record.params = params
            context.idempotency_key = headers.get("idempotency-key")
            context.expand = list(params.get("expand") or [])
            status, payload = route.call(self, context, params, path_args)
            self._remember(record, headers, raw, status, payload)
            return status, {}, payload
        except FakeStripeError as exc:
            if exc.stored:
                body = _error_body(exc, api_mode)
                self._remember(record, headers, raw, exc.status, body)
            return exc.status, dict(exc.headers), _error_body(exc, api_mode)

    def _decode(self, method, query, body, headers, api_mode):
        if method in ("GET", "DELETE") and query:
            return decode_form(query)
        if method != "POST":
            return {}
        if api_mode == "V2":
            return decode_json(body)
        return decode_form(body or "")

    def _idempotency_scope(self, method, path, headers):
        key = headers.get("idempotency-key")
        if not key or not (method == "POST" or path.startswith("/v2/")):
            return None
        return (headers.get("authorization"), key)

    def _replay(self, method, path, headers, raw, record):
        scope = self._idempotency_scope(method, path, headers)
        saved = self._idempotent.get(scope) if scope else None
        if saved is None or self.now - saved["at"] > IDEMPOTENCY_WINDOW_SECONDS:
            return None
        if (saved["method"], saved["path"]) != (method, path):
            raise FakeStripeError(
                "Keys for idempotent requests can only be used for the same "
                f"endpoint they were first used for ({saved['method']} "
                f"{saved['path']}). Try a new key for this request.",
                type="idempotency_error",
            )
        if saved["params"] != raw:
            raise FakeStripeError(
                "Keys for idempotent requests can only be used with the same "
                f"parameters they were first used with. Try using a key other "
                f"than '{scope[1]}' if you meant to execute a different request.",
                type="idempotency_error",
            )
        record.replayed = True
        headers = {
            "Idempotent-Replayed": "true",
            "Original-Request": saved["request_id"],
        }
        return saved["status"], headers, copy.deepcopy(saved["payload"])

    def _remember(self, record, headers, raw, status, payload):
        scope = self._idempotency_scope(record.method, record.path, headers)
        if scope is None:
            return
        self._idempotent[scope] = {
            "method": record.method,
            "path": record.path,
            "params": copy.deepcopy(raw),
            "status": status,
            "payload": copy.deepcopy(payload),
            "at": self.now,
            "request_id": record.request_id,
        }


def _error_body(error, api_mode):
    if api_mode == "V2":
        body = {"type": error.type, "message": error.message}
        if error.code:
            body["code"] = error.code
        if error.param:
            body["param"] = error.param
        return {"error": body}
    return error.body()


def _injected_error(status, api_mode):
    if status == 429:
        return FakeStripeError(
            "Too many requests hit the API too quickly. We recommend an "
            "exponential backoff of your requests.",
            status=429,
            type="rate_limit" if api_mode == "V2" else "invalid_request_error",
            code="rate_limit",
        )
    if status >= 500:
        return FakeStripeError(
            "An unknown error occurred.", status=status, type="api_error"
        )
    return FakeStripeError("Injected failure.", status=status)
