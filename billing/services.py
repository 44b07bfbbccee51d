"""Writes of the billing app that staff trigger: acknowledging and resolving alerts."""

from __future__ import annotations

import logging

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from billing.models import Alert

logger = logging.getLogger(__name__)


@transaction.atomic
def alert_acknowledge(*, alert: Alert, user: AbstractBaseUser) -> Alert:
    """Mark `alert` as acknowledged by `user`.

    An alert that is already acknowledged keeps its first acknowledgement.
    """
    alert = Alert.objects.select_for_update().get(pk=alert.pk)
    if alert.acknowledged_at is not None:
        return alert
    alert.acknowledged_at = timezone.now()
    alert.acknowledged_by = user
    alert.save(update_fields=["acknowledged_at", "acknowledged_by"])
    logger.info("Alert %s: acknowledged by %s", alert.dedupe_key, user)
    return alert


@transaction.atomic
def alert_resolve(*, alert: Alert, user: AbstractBaseUser) -> Alert:
    """Mark `alert` as resolved by `user`, and as acknowledged if it was not.

    An alert that is already resolved keeps its first resolution.
    """
    alert = Alert.objects.select_for_update().get(pk=alert.pk)
    if alert.resolved_at is not None:
        return alert
    now = timezone.now()
    alert.resolved_at = now
    alert.resolved_by = user
    fields = ["resolved_at", "resolved_by"]
    if alert.acknowledged_at is None:
        alert.acknowledged_at = now
        alert.acknowledged_by = user
        fields += ["acknowledged_at", "acknowledged_by"]
    alert.save(update_fields=fields)
    logger.info("Alert %s: resolved by %s", alert.dedupe_key, user)
    return alert
