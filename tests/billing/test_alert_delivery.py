"""Alert delivery by email and signed webhook, with retries, and the admin counts."""

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from billing import delivery
from billing.models import Alert
from billing.tasks import deliver_alert
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

SECRET = "test-webhook-secret"


class Endpoint:
    """A loopback HTTP server returning 500 to the first `failures` POSTs, then 204."""

    def __init__(self, failures: int):
        self.failures = failures
        # (headers, body); the headers are looked up case-insensitively.
        self.requests: list[tuple] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                endpoint.requests.append((self.headers, body))
                failing = len(endpoint.requests) <= endpoint.failures
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def alert():
    return Alert.objects.create(
        kind=Alert.Kind.PERIOD_COST,
        severity=Alert.Severity.CRITICAL,
        customer=CustomerFactory(slug="acme"),
        message="Cost this billing period is $12.00, above the limit of $10.00.",
        dedupe_key="test:period-cost",
    )


@pytest.fixture
def webhook(settings):
    settings.AGENTMARGIN_ALERT_WEBHOOK_SECRET = SECRET

    def configure(url):
        settings.AGENTMARGIN_ALERT_WEBHOOK_URL = url

    return configure


def test_webhook_retried_until_accepted(alert, webhook):
    with Endpoint(failures=2) as endpoint:
        webhook(endpoint.url)
        result = deliver_alert.apply(args=(alert.pk, delivery.WEBHOOK))

    alert.refresh_from_db()
    assert result.get() == Alert.DeliveryStatus.SENT
    assert alert.webhook_status == Alert.DeliveryStatus.SENT
    assert alert.delivery_attempts == 3
    assert len(endpoint.requests) == 3
    assert alert.last_delivery_error == "webhook: the webhook returned HTTP 500"


def test_webhook_payload_signed(alert, webhook):
    with Endpoint(failures=0) as endpoint:
        webhook(endpoint.url)
        deliver_alert.apply(args=(alert.pk, delivery.WEBHOOK))

    headers, body = endpoint.requests[0]
    timestamp, signature = (
        part.split("=", 1)[1] for part in headers["X-AgentMargin-Signature"].split(",")
    )
    expected = hmac.new(
        SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    payload = json.loads(body)
    assert headers["Content-Type"] == "application/json"
    assert hmac.compare_digest(signature, expected)
    assert payload["id"] == alert.pk
    assert payload["kind"] == "period_cost"
    assert payload["severity"] == "critical"
    assert payload["customer"] == "acme"
    assert payload["message"] == alert.message


def test_webhook_gives_up_and_keeps_alert(alert, webhook, settings, caplog):
    with Endpoint(failures=100) as endpoint:
        webhook(endpoint.url)
        with caplog.at_level(logging.WARNING, logger="billing.delivery"):
            result = deliver_alert.apply(args=(alert.pk, delivery.WEBHOOK))

    alert.refresh_from_db()
    attempts = settings.AGENTMARGIN_ALERT_DELIVERY_RETRIES + 1
    assert result.get() == "failed"
    assert len(endpoint.requests) == attempts
    assert alert.webhook_status == Alert.DeliveryStatus.FAILED
    assert alert.delivery_attempts == attempts
    failures = [
        r for r in caplog.records if "webhook delivery failed" in r.getMessage()
    ]
    assert len(failures) == attempts + 1
    assert failures[-1].levelno == logging.ERROR


def test_delivered_webhook_not_sent_again(alert, webhook):
    with Endpoint(failures=0) as endpoint:
        webhook(endpoint.url)
        deliver_alert.apply(args=(alert.pk, delivery.WEBHOOK))
        deliver_alert.apply(args=(alert.pk, delivery.WEBHOOK))

    assert len(endpoint.requests) == 1


def test_webhook_not_configured(alert, settings):
    settings.AGENTMARGIN_ALERT_WEBHOOK_URL = ""

    assert delivery.alert_deliver(alert.pk, delivery.WEBHOOK) == "not_configured"
    alert.refresh_from_db()
    assert alert.webhook_status == Alert.DeliveryStatus.NOT_CONFIGURED


def test_email_goes_to_staff(alert):
    users = get_user_model().objects
    users.create_user(username="ops", email="ops@example.com", is_staff=True)
    users.create_user(
        username="left", email="left@example.com", is_staff=True, is_active=False
    )
    users.create_user(username="client", email="client@example.com")

    result = deliver_alert.apply(args=(alert.pk, delivery.EMAIL))

    alert.refresh_from_db()
    assert result.get() == Alert.DeliveryStatus.SENT
    assert alert.email_status == Alert.DeliveryStatus.SENT
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["ops@example.com"]
    assert message.subject == "[AgentMargin] Critical: Period cost above limit (acme)"
    assert alert.message in message.body


def test_email_setting_overrides_staff(alert, settings):
    settings.AGENTMARGIN_ALERT_EMAILS = ["alerts@example.com"]
    get_user_model().objects.create_user(
        username="ops", email="ops@example.com", is_staff=True
    )

    delivery.alert_deliver(alert.pk, delivery.EMAIL)

    assert mail.outbox[0].to == ["alerts@example.com"]


def test_new_alert_queues_both_channels(
    monkeypatch, django_capture_on_commit_callbacks
):
    queued = []
    monkeypatch.setattr(
        deliver_alert, "delay", lambda alert_id, channel: queued.append(channel)
    )
    with django_capture_on_commit_callbacks(execute=True):
        Alert.objects.create(
            kind=Alert.Kind.UNPRICED_USAGE, message="Unpriced.", dedupe_key="test:new"
        )

    assert sorted(queued) == ["email", "webhook"]


def test_admin_index_counts_open_alerts(admin_client, alert):
    Alert.objects.create(
        kind=Alert.Kind.UNPRICED_USAGE,
        severity=Alert.Severity.WARNING,
        message="Unpriced.",
        dedupe_key="test:warning",
    )
    Alert.objects.create(
        kind=Alert.Kind.UNPRICED_USAGE,
        severity=Alert.Severity.WARNING,
        message="Resolved already.",
        dedupe_key="test:resolved",
        resolved_at=alert.created_at,
    )

    response = admin_client.get(reverse("admin:index"))

    counts = {row["severity"]: row["open"] for row in response.context["alert_counts"]}
    assert counts == {"critical": 1, "warning": 1}
    assert b'id="open-alerts"' in response.content


def test_admin_alert_list_shows_severity(admin_client, alert):
    response = admin_client.get(reverse("admin:billing_alert_changelist"))

    assert response.status_code == 200
    assert b"Critical" in response.content
    assert b"Acknowledge selected alerts" in response.content
    assert b"Resolve selected alerts" in response.content


def test_stuck_deliveries_queued_again(monkeypatch):
    queued = []
    monkeypatch.setattr(
        deliver_alert, "delay", lambda alert_id, channel: queued.append(alert_id)
    )
    now = timezone.now()
    ages = {"fresh": 5, "stuck": 45, "abandoned": 60 * 30}
    alerts = {
        name: Alert.objects.create(
            kind=Alert.Kind.UNPRICED_USAGE, message=name, dedupe_key=f"test:{name}"
        )
        for name in ages
    }
    for name, minutes in ages.items():
        Alert.objects.filter(pk=alerts[name].pk).update(
            created_at=now - timedelta(minutes=minutes)
        )
    Alert.objects.create(
        kind=Alert.Kind.UNPRICED_USAGE,
        message="delivered",
        dedupe_key="test:delivered",
        email_status=Alert.DeliveryStatus.SENT,
        webhook_status=Alert.DeliveryStatus.NOT_CONFIGURED,
    )
    Alert.objects.filter(dedupe_key="test:delivered").update(
        created_at=now - timedelta(minutes=45)
    )

    assert delivery.alerts_redeliver_pending(now=now) == 1
    assert queued == [alerts["stuck"].pk, alerts["stuck"].pk]


class RawServer:
    """A loopback TCP server that reads each request and replies with `respond(conn, stopped)`."""

    def __init__(self, respond):
        self.respond = respond
        self.requests = 0
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/alerts"
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            self.requests += 1
            try:
                conn.settimeout(5)
                _read_request(conn)
                self.respond(conn, self.stopped)
            except OSError:
                pass
            finally:
                conn.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stopped.set()
        self.thread.join(timeout=5)
        self.listener.close()


def _read_request(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        body += conn.recv(4096)


def test_webhook_redirect_not_followed(alert, webhook):
    with Endpoint(failures=0) as landing:
        location = landing.url.replace("/alerts", "/landed")

        def redirect(conn, stopped):
            conn.sendall(
                b"HTTP/1.1 302 Found\r\nLocation: "
                + location.encode()
                + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )

        with RawServer(redirect) as server:
            webhook(server.url)
            result = deliver_alert.apply(args=(alert.pk, delivery.WEBHOOK))

    alert.refresh_from_db()
    assert result.get() == "failed"
    assert alert.webhook_status == Alert.DeliveryStatus.FAILED
    assert server.requests == alert.delivery_attempts
    assert alert.delivery_attempts > 1
    assert landing.requests == []
    assert "HTTP 302" in alert.last_delivery_error
    assert "not followed" in alert.last_delivery_error


def test_webhook_truncated_response_retried(alert, webhook):
    def truncated(conn, stopped):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)

    with RawServer(truncated) as server:
        webhook(server.url)
        with pytest.raises(delivery.DeliveryError, match="IncompleteRead"):
            delivery.alert_deliver(alert.pk, delivery.WEBHOOK)

    alert.refresh_from_db()
    assert server.requests == 1
    assert alert.webhook_status == Alert.DeliveryStatus.PENDING
    assert "IncompleteRead" in alert.last_delivery_error


def test_webhook_truncated_then_accepted(alert, webhook):
    def truncated_once(conn, stopped):
        if server.requests == 1:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
        else:
            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")

    with RawServer(truncated_once) as server:
        webhook(server.url)
        result = deliver_alert.apply(args=(alert.pk, delivery.WEBHOOK))

    alert.refresh_from_db()
    assert result.get() == Alert.DeliveryStatus.SENT
    assert server.requests == 2
    assert alert.webhook_status == Alert.DeliveryStatus.SENT


def test_webhook_connection_refused_retried(alert, webhook):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    # Bound but not listening, so connecting is refused.
    webhook(f"http://127.0.0.1:{port}/alerts")
    try:
        with pytest.raises(delivery.DeliveryError, match="request failed"):
            delivery.alert_deliver(alert.pk, delivery.WEBHOOK)
    finally:
        listener.close()

    alert.refresh_from_db()
    assert alert.webhook_status == Alert.DeliveryStatus.PENDING


def test_webhook_trickle_hits_deadline(alert, webhook, monkeypatch):
    monkeypatch.setattr(delivery, "WEBHOOK_DEADLINE_SECONDS", 1.5)

    def trickle(conn, stopped):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        while not stopped.wait(0.2):
            conn.sendall(b"x")

    with RawServer(trickle) as server:
        webhook(server.url)
        started = time.monotonic()
        with pytest.raises(delivery.DeliveryError, match="timed out"):
            delivery.alert_deliver(alert.pk, delivery.WEBHOOK)
        elapsed = time.monotonic() - started

    alert.refresh_from_db()
    assert elapsed < 5
    assert alert.webhook_status == Alert.DeliveryStatus.PENDING
    assert "timed out" in alert.last_delivery_error


def test_webhook_slow_headers_hit_deadline(alert, webhook, monkeypatch):
    monkeypatch.setattr(delivery, "WEBHOOK_DEADLINE_SECONDS", 1.5)

    def slow_headers(conn, stopped):
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 100:
            if stopped.wait(0.2):
                return
            conn.sendall(bytes([byte]))

    with RawServer(slow_headers) as server:
        webhook(server.url)
        started = time.monotonic()
        with pytest.raises(delivery.DeliveryError, match="timed out"):
            delivery.alert_deliver(alert.pk, delivery.WEBHOOK)

    assert time.monotonic() - started < 5
