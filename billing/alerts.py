"""Raising staff alerts; one alert per dedupe key, however often it is raised."""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction

from billing.models import Alert

logger = logging.getLogger(__name__)


def alert_raise(
    *,
    kind: str,
    dedupe_key: str,
    message: str,
    severity: str = Alert.Severity.WARNING,
    customer_id: int | None = None,
    execution_id: int | None = None,
) -> tuple[Alert, bool]:
    """Create the alert for `dedupe_key` unless it exists; return it and whether it is new."""
    existing = Alert.objects.filter(dedupe_key=dedupe_key).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                kind=kind,
                dedupe_key=dedupe_key,
                message=message,
                severity=severity,
                customer_id=customer_id,
                execution_id=execution_id,
            )
    except IntegrityError:
        # Raised at the same moment by another process.
        return Alert.objects.get(dedupe_key=dedupe_key), False
    logger.warning("Alert %s raised: %s", dedupe_key, message)
    return alert, True
