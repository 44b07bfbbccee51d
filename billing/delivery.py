"""Delivery of staff alerts by email and to an optional webhook.

The Alert row is committed before any delivery starts, so an alert is in
the admin whatever happens to its delivery. Each channel is sent by its
own Celery task (`billing.tasks.deliver_alert`), retried with backoff on
failure. Each attempt and each failure is recorded on the alert and
logged. Delivery is at least once: a receiver may get an alert twice and
can tell by its `id`.

The webhook receives the alert as JSON in a POST. The header
`X-AgentMargin-Signature: t=<unix time>,v1=<hex>` carries an HMAC-SHA256,
keyed with AGENTMARGIN_ALERT_WEBHOOK_SECRET, of `<unix time>.` followed
by the request body, so the receiver can check both origin and age.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import socket
import threading
import time
import urllib.parse
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db.models import F, Q
from django.utils import timezone

from billing.models import Alert

logger = logging.getLogger(__name__)

EMAIL = "email"
WEBHOOK = "webhook"
CHANNELS = (EMAIL, WEBHOOK)
STATUS_FIELDS = {EMAIL: "email_status", WEBHOOK: "webhook_status"}

SIGNATURE_HEADER = "X-AgentMargin-Signature"
# Each connect, send and read times out after WEBHOOK_TIMEOUT_SECONDS, and
# the whole attempt after WEBHOOK_DEADLINE_SECONDS.
WEBHOOK_TIMEOUT_SECONDS = 10
WEBHOOK_DEADLINE_SECONDS = 30
READ_CHUNK_BYTES = 65536

# Retry delays grow from RETRY_BASE_SECONDS, doubling, up to
# RETRY_MAX_SECONDS. A delivery still pending after REDELIVER_AFTER (its
# task was lost with a broker restart, say) is queued again by the
# periodic job, until the alert is older than REDELIVER_UNTIL.
RETRY_BASE_SECONDS = 10
RETRY_MAX_SECONDS = 300
REDELIVER_AFTER = timedelta(minutes=30)
REDELIVER_UNTIL = timedelta(days=1)


class DeliveryError(Exception):
    """One attempt to deliver an alert failed; another may succeed."""


def retry_delay(retries: int) -> int:
    """Return the seconds to wait before retry number `retries` + 1."""
    return min(RETRY_BASE_SECONDS * 2**retries, RETRY_MAX_SECONDS)


def alert_deliveries_queue(alert_id: int) -> None:
    """Send one delivery task per channel of the alert; a failed send is logged."""
    from billing.tasks import deliver_alert

    for channel in CHANNELS:
        try:
            deliver_alert.delay(alert_id, channel)
        except Exception:  # noqa: BLE001 - the periodic job queues it again
            logger.exception(
                "Alert %s: %s delivery could not be queued; it stays pending",
                alert_id,
                channel,
            )


def alert_deliver(alert_id: int, channel: str) -> str:
    """Deliver the alert on one channel unless done already; return the channel status.

    Raises DeliveryError when the attempt failed and may be retried.
    """
    alert = Alert.objects.select_related("customer").filter(pk=alert_id).first()
    if alert is None:
        logger.warning("Alert %s: not found; nothing to deliver", alert_id)
        return "missing"
    status = getattr(alert, STATUS_FIELDS[channel])
    if status != Alert.DeliveryStatus.PENDING:
        return status
    Alert.objects.filter(pk=alert_id).update(
        delivery_attempts=F("delivery_attempts") + 1
    )
    sender = _send_email if channel == EMAIL else _send_webhook
    try:
        status = sender(alert)
    except DeliveryError as exc:
        logger.warning("Alert %s: %s delivery failed: %s", alert_id, channel, exc)
        Alert.objects.filter(pk=alert_id).update(
            last_delivery_error=f"{channel}: {exc}"[:2000]
        )
        raise
    _set_status(alert_id, channel, status)
    logger.info("Alert %s: %s delivery %s", alert_id, channel, status)
    return status


def alert_delivery_failed(alert_id: int, channel: str, error: BaseException) -> None:
    """Mark a channel failed after its last retry; the alert itself stays."""
    _set_status(alert_id, channel, Alert.DeliveryStatus.FAILED)
    logger.error(
        "Alert %s: %s delivery failed after every retry, giving up: %s",
        alert_id,
        channel,
        error,
    )


def alerts_redeliver_pending(*, now=None) -> int:
    """Queue again the deliveries left pending too long; return how many were queued."""
    now = now or timezone.now()
    pending = Q(email_status=Alert.DeliveryStatus.PENDING) | Q(
        webhook_status=Alert.DeliveryStatus.PENDING
    )
    alerts = Alert.objects.filter(
        pending,
        created_at__lt=now - REDELIVER_AFTER,
        created_at__gte=now - REDELIVER_UNTIL,
    ).values_list("pk", flat=True)
    queued = 0
    for alert_id in alerts:
        alert_deliveries_queue(alert_id)
        queued += 1
    if queued:
        logger.warning("Queued the deliveries of %d alerts again", queued)
    return queued


def alert_payload(alert: Alert) -> dict:
    """Return the JSON object the webhook receives for `alert`."""
    return {
        "id": alert.pk,
        "kind": alert.kind,
        "severity": alert.severity,
        "message": alert.message,
        "customer": alert.customer.slug if alert.customer_id else None,
        "execution_id": alert.execution_id,
        "rule_id": alert.rule_id,
        "period_start": alert.period_start.isoformat() if alert.period_start else None,
        "created_at": alert.created_at.isoformat(),
    }


def signature_header(body: bytes, secret: str, timestamp: int) -> str:
    """Return the signature header value of a webhook body sent at `timestamp`."""
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def staff_recipients() -> list[str]:
    """Return AGENTMARGIN_ALERT_EMAILS, or else every active staff user's address."""
    if settings.AGENTMARGIN_ALERT_EMAILS:
        return list(settings.AGENTMARGIN_ALERT_EMAILS)
    users = get_user_model().objects.filter(is_staff=True, is_active=True)
    return sorted(set(users.exclude(email="").values_list("email", flat=True)))


def _send_email(alert: Alert) -> str:
    recipients = staff_recipients()
    if not recipients:
        return Alert.DeliveryStatus.NOT_CONFIGURED
    customer = alert.customer.slug if alert.customer_id else "no customer"
    subject = (
        f"[AgentMargin] {alert.get_severity_display()}: "
        f"{alert.get_kind_display()} ({customer})"
    )
    raised_at = f"{alert.created_at:%Y-%m-%d %H:%M} UTC"
    body = f"{alert.message}\n\nAlert {alert.pk}, raised at {raised_at}."
    try:
        send_mail(subject, body, None, recipients, fail_silently=False)
    except OSError as exc:  # smtplib.SMTPException is an OSError
        raise DeliveryError(f"sending the email failed: {exc}") from exc
    return Alert.DeliveryStatus.SENT


def _send_webhook(alert: Alert) -> str:
    url = settings.AGENTMARGIN_ALERT_WEBHOOK_URL
    if not url:
        return Alert.DeliveryStatus.NOT_CONFIGURED
    secret = settings.AGENTMARGIN_ALERT_WEBHOOK_SECRET
    if not secret:
        # The settings reject this combination at start-up; never send unsigned.
        logger.error(
            "Alert %s: AGENTMARGIN_ALERT_WEBHOOK_SECRET is empty; webhook not sent",
            alert.pk,
        )
        return Alert.DeliveryStatus.FAILED
    body = json.dumps(alert_payload(alert), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "AgentMargin-alerts",
        SIGNATURE_HEADER: signature_header(body, secret, int(time.time())),
    }
    status = _post(url, body, headers)
    if 300 <= status < 400:
        raise DeliveryError(
            f"the webhook returned HTTP {status}, a redirect, which is not followed; "
            "set AGENTMARGIN_ALERT_WEBHOOK_URL to the final address"
        )
    if not 200 <= status < 300:
        raise DeliveryError(f"the webhook returned HTTP {status}")
    return Alert.DeliveryStatus.SENT


def _post(url: str, body: bytes, headers: dict) -> int:
    """POST `body` to `url` once, read the whole response and return its HTTP status.

    Redirects are not followed. The whole attempt, from connecting to the
    last byte of the response, must end within WEBHOOK_DEADLINE_SECONDS.
    A timer shuts the socket down at that deadline, so a server sending its
    response a byte at a time cannot hold the worker. Any connection error,
    timeout or truncated response raises DeliveryError.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryError(
            f"the webhook URL {url!r} is invalid; set AGENTMARGIN_ALERT_WEBHOOK_URL "
            "to an http or https URL"
        )
    connection_class = (
        http.client.HTTPSConnection
        if parts.scheme == "https"
        else http.client.HTTPConnection
    )
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    expired = threading.Event()
    try:
        connection = connection_class(
            parts.hostname, parts.port, timeout=WEBHOOK_TIMEOUT_SECONDS
        )
    except (http.client.HTTPException, ValueError) as exc:
        raise DeliveryError(f"the webhook URL {url!r} is invalid: {exc}") from exc

    def expire():
        expired.set()
        sock = connection.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # NOTE: the timer cannot stop a slow DNS lookup, which happens before a socket exists.
    timer = threading.Timer(WEBHOOK_DEADLINE_SECONDS, expire)
    timer.daemon = True
    timer.start()
    try:
        connection.connect()
        if expired.is_set():
            raise TimeoutError("deadline reached while connecting")
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        while response.read(READ_CHUNK_BYTES):
            pass
        # read(amt) returns b"" at an early end of the body rather than raising,
        # so a body shorter than its Content-Length is caught here.
        if response.length:
            raise http.client.IncompleteRead(b"", response.length)
        return response.status
    except (http.client.HTTPException, OSError, ValueError) as exc:
        if expired.is_set():
            raise DeliveryError(
                f"the webhook request timed out: no complete response within "
                f"{WEBHOOK_DEADLINE_SECONDS} seconds"
            ) from exc
        raise DeliveryError(
            f"the webhook request failed: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        timer.cancel()
        connection.close()


def _set_status(alert_id: int, channel: str, status: str) -> None:
    Alert.objects.filter(pk=alert_id).update(**{STATUS_FIELDS[channel]: status})
