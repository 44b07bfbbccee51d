"""The Stripe webhook endpoint."""

from __future__ import annotations

import json
import logging

import stripe
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing.stripe.webhooks import event_process, event_store

logger = logging.getLogger(__name__)


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    """Verify, store and process one Stripe event.

    Returns 400 for a missing or invalid signature (the event is not
    stored), 200 for a duplicate and for a processed event, and 500 when
    processing failed, so that Stripe sends it again.
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
    try:
        payload = json.loads(request.body)
        valid = isinstance(payload, dict) and bool(payload.get("id"))
    except ValueError:
        valid = False
    if not valid:
        logger.warning("Stripe webhook rejected: body is not an event")
        return HttpResponse("Invalid event body.", status=400)
    event, created = event_store(payload)
    finished = (event.Status.PROCESSED, event.Status.IGNORED)
    if not created and event.status in finished:
        logger.info("Stripe event %s: duplicate delivery", event.event_id)
        return HttpResponse("Duplicate event.", status=200)
    try:
        event_process(event)
    except Exception:
        return HttpResponse("Processing failed.", status=500)
    return HttpResponse("OK", status=200)
