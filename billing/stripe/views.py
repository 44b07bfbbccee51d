"""The Stripe webhook endpoint."""

from __future__ import annotations

import json
import logging

import stripe
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing.models import StripeWebhookEvent
from billing.stripe.webhooks import (
    EVENT_ID_MAX_LENGTH,
    MalformedEvent,
    event_id_of,
    event_is_malformed,
    event_process,
    event_store,
    event_store_unreadable,
)

logger = logging.getLogger(__name__)


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    """Verify, store and process one Stripe event.

    Returns 400 for a missing or invalid signature, and the event is not
    stored. Returns 200 for a duplicate, for a processed event and for a
    signed body that can never be processed, which is stored as failed
    with an alert. Returns 500 when processing failed otherwise (a
    database error, say), so that Stripe sends the event again.
    """
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        logger.error("Stripe webhook rejected: STRIPE_WEBHOOK_SECRET is empty")
        return HttpResponse("Webhook secret not configured.", status=400)
    header = request.headers.get("Stripe-Signature", "")
    payload_text = request.body.decode("utf-8", errors="replace")
    try:
        stripe.WebhookSignature.verify_header(
            payload_text, header, secret, settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS
        )
    except stripe.SignatureVerificationError as error:
        logger.warning("Stripe webhook rejected: invalid signature (%s)", error)
        return HttpResponse("Invalid signature.", status=400)
    event, created = _store(request.body, payload_text)
    finished = (event.Status.PROCESSED, event.Status.IGNORED)
    if not created and event.status in finished:
        logger.info("Stripe event %s: duplicate delivery", event.event_id)
        return HttpResponse("Duplicate event.", status=200)
    if not event_is_malformed(event):
        try:
            event = event_process(event)
        except Exception:
            return HttpResponse("Processing failed.", status=500)
    if event_is_malformed(event):
        # Sending it again cannot help, so the 200 stops Stripe's retries.
        return HttpResponse(
            "Malformed event; stored as failed and not processed.", status=200
        )
    return HttpResponse("OK", status=200)


def _store(body: bytes, body_text: str) -> tuple[StripeWebhookEvent, bool]:
    """Parse and store a signed body; return the event and whether it is new.

    A body that is not a JSON object with a usable id, or that the database
    rejects, is stored as a failed event (see `event_store_unreadable`).
    """
    payload = None
    try:
        payload = json.loads(body)
        event_id = event_id_of(payload, body)
        if not isinstance(payload, dict):
            raise MalformedEvent("the body is not a JSON object")
        if payload.get("id") != event_id:
            raise MalformedEvent(
                f"id is {payload.get('id')!r}, expected a non-empty string of at "
                f"most {EVENT_ID_MAX_LENGTH} characters"
            )
        return event_store(payload)
    except RecursionError:
        reason = "the body is nested too deeply to parse"
    except MalformedEvent as error:
        reason = str(error)
    except ValueError as error:
        reason = f"the body is not valid JSON: {error}"
    return event_store_unreadable(event_id_of(payload, body), body_text, reason)
