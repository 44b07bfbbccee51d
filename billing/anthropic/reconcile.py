"""Compare our recorded cost of a UTC day with Anthropic's reports, and store it.

Each report row goes to the customer of its API key, else of its workspace
(`AnthropicAccount`), else to the unmapped group. Our messages go to their
execution's customer when that customer has a mapping, else to the
unmapped group too, so with no mapping at all the whole organization is
compared model by model. A comparison whose difference is above the
threshold raises one alert per day, customer and model.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, date, timedelta
from decimal import Decimal, InvalidOperation

import anthropic
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from agents.pricing.reprice import PeriodRepriceResult, reprice_period
from billing.alerts import alert_raise
from billing.anthropic.client import anthropic_admin_client, anthropic_reports_enabled
from billing.anthropic.report import ReportError, ReportRow, day_bounds, day_report
from billing.anthropic.selectors import RecordedUsage, recorded_usage
from billing.models import Alert, AnthropicAccount, AnthropicComparison

logger = logging.getLogger(__name__)

HUNDRED = Decimal(100)

# Days the beat job compares each time, ending yesterday.
RECENT_DAYS = 2


@dataclasses.dataclass
class TheirUsage:
    """Anthropic's figures of one customer (or the unmapped group) and model."""

    cost_usd: Decimal = Decimal(0)
    list_cost_usd: Decimal = Decimal(0)
    prompt_tokens: int = 0
    output_tokens: int = 0


@dataclasses.dataclass
class ReconciliationResult:
    """The stored comparisons of one day and the alerts they raised."""

    day: date
    comparisons: list[AnthropicComparison]
    alerts_raised: int

    @property
    def our_cost_usd(self) -> Decimal:
        return sum((c.our_cost_usd for c in self.comparisons), Decimal(0))

    @property
    def their_cost_usd(self) -> Decimal:
        return sum((c.their_cost_usd for c in self.comparisons), Decimal(0))


def anthropic_reconcile(
    *, day: date, client: anthropic.Anthropic | None = None
) -> ReconciliationResult:
    """Read Anthropic's report of `day`, compare it with ours and store the result.

    Raise ReportError when the report cannot be read (nothing is stored
    then) and AnthropicNotConfigured without an Admin API key.
    """
    rows = day_report(client or anthropic_admin_client(), day)
    return _comparisons_store(day, _theirs_by_customer(rows))


def anthropic_reconcile_recent(*, days: int = RECENT_DAYS) -> dict:
    """Reconcile each of the last `days` full UTC days; the beat job's service.

    Anthropic's figures of a day can still change for some hours after it
    ends, so each day is compared again on the next run. Return a summary;
    `skipped` is set when no Admin API key is configured.
    """
    if not anthropic_reports_enabled():
        return {"skipped": "ANTHROPIC_ADMIN_API_KEY is empty"}
    client = anthropic_admin_client()
    today = timezone.now().astimezone(UTC).date()
    summary = {"days": [], "alerts_raised": 0, "failed": []}
    for offset in range(days, 0, -1):
        day = today - timedelta(days=offset)
        try:
            result = anthropic_reconcile(day=day, client=client)
        except ReportError as exc:
            logger.warning("Anthropic reconciliation of %s failed: %s", day, exc)
            summary["failed"].append(day.isoformat())
            continue
        summary["days"].append(day.isoformat())
        summary["alerts_raised"] += result.alerts_raised
    return summary


def anthropic_comparisons_refresh(*, day: date) -> ReconciliationResult:
    """Compare our current cost of `day` with the Anthropic figures stored for it.

    Used after a reprice, so Anthropic's API is not called again.
    """
    theirs = {
        (row.customer_id, row.model): TheirUsage(
            cost_usd=row.their_cost_usd,
            list_cost_usd=row.their_list_cost_usd,
            prompt_tokens=row.their_prompt_tokens,
            output_tokens=row.their_output_tokens,
        )
        for row in AnthropicComparison.objects.filter(day=day)
    }
    return _comparisons_store(day, theirs)


def anthropic_day_reprice(
    *, day: date
) -> tuple[PeriodRepriceResult, ReconciliationResult]:
    """Price `day`'s messages again from the current price table and compare again."""
    start, end = day_bounds(day)
    repriced = reprice_period(start=start, end=end)
    return repriced, anthropic_comparisons_refresh(day=day)


def _theirs_by_customer(
    rows: list[ReportRow],
) -> dict[tuple[int | None, str], TheirUsage]:
    by_key: dict[str, int] = {}
    by_workspace: dict[str, int] = {}
    for account in AnthropicAccount.objects.all():
        if account.api_key_id:
            by_key[account.api_key_id] = account.customer_id
        else:
            by_workspace[account.workspace_id] = account.customer_id
    theirs: dict[tuple[int | None, str], TheirUsage] = {}
    for row in rows:
        customer_id = by_key.get(row.api_key_id) or by_workspace.get(row.workspace_id)
        total = theirs.setdefault((customer_id, row.model), TheirUsage())
        total.cost_usd += row.cost_usd
        total.list_cost_usd += row.list_cost_usd
        total.prompt_tokens += row.prompt_tokens
        total.output_tokens += row.output_tokens
    return theirs


@transaction.atomic
def _comparisons_store(
    day: date, theirs: dict[tuple[int | None, str], TheirUsage]
) -> ReconciliationResult:
    threshold_percent, min_difference = _thresholds()
    mapped = set(AnthropicAccount.objects.values_list("customer_id", flat=True))
    ours: dict[tuple[int | None, str], RecordedUsage] = {}
    for (customer_id, model), usage in recorded_usage(day).items():
        key = (customer_id if customer_id in mapped else None, model)
        total = ours.setdefault(key, RecordedUsage())
        total.cost_usd += usage.cost_usd
        total.prompt_tokens += usage.prompt_tokens
        total.output_tokens += usage.output_tokens
        total.unpriced_messages += usage.unpriced_messages

    now = timezone.now()
    comparisons = []
    alerts_raised = 0
    keys = sorted(set(ours) | set(theirs), key=lambda key: (key[0] or 0, key[1]))
    for customer_id, model in keys:
        our = ours.get((customer_id, model), RecordedUsage())
        their = theirs.get((customer_id, model), TheirUsage())
        difference = our.cost_usd - their.cost_usd
        percent = (
            (difference / their.cost_usd * HUNDRED).quantize(Decimal("0.0001"))
            if their.cost_usd
            else None
        )
        above = abs(difference) > min_difference and (
            percent is None or abs(percent) > threshold_percent
        )
        comparison, _ = AnthropicComparison.objects.update_or_create(
            day=day,
            customer_id=customer_id,
            model=model,
            defaults={
                "our_cost_usd": our.cost_usd,
                "their_cost_usd": their.cost_usd,
                "their_list_cost_usd": their.list_cost_usd,
                "difference_usd": difference,
                "difference_percent": percent,
                "our_prompt_tokens": our.prompt_tokens,
                "their_prompt_tokens": their.prompt_tokens,
                "our_output_tokens": our.output_tokens,
                "their_output_tokens": their.output_tokens,
                "our_unpriced_messages": our.unpriced_messages,
                "above_threshold": above,
                "compared_at": now,
            },
        )
        comparisons.append(comparison)
        if above and _variance_alert(comparison):
            alerts_raised += 1
    AnthropicComparison.objects.filter(day=day).exclude(
        pk__in=[comparison.pk for comparison in comparisons]
    ).delete()
    logger.info(
        "Anthropic reconciliation of %s: %d comparisons, %d above the threshold, "
        "%d alerts raised",
        day,
        len(comparisons),
        sum(1 for comparison in comparisons if comparison.above_threshold),
        alerts_raised,
    )
    return ReconciliationResult(
        day=day, comparisons=comparisons, alerts_raised=alerts_raised
    )


def _variance_alert(comparison: AnthropicComparison) -> bool:
    scope = comparison.customer_id or "unmapped"
    percent = (
        f"{comparison.difference_percent}%"
        if comparison.difference_percent is not None
        else "no cost reported by Anthropic"
    )
    who = comparison.customer.slug if comparison.customer else "unmapped usage"
    _, created = alert_raise(
        kind=Alert.Kind.ANTHROPIC_VARIANCE,
        dedupe_key=f"anthropic_variance:{comparison.day}:{scope}:{comparison.model}",
        message=(
            f"{comparison.day}, {who}, {comparison.model or 'no model'}: our "
            f"cost {comparison.our_cost_usd.normalize():f} USD, Anthropic's "
            f"{comparison.their_cost_usd.normalize():f} USD (difference "
            f"{comparison.difference_usd.normalize():f} USD, {percent})."
        ),
        customer_id=comparison.customer_id,
    )
    return created


def _thresholds() -> tuple[Decimal, Decimal]:
    values = []
    for name in (
        "ANTHROPIC_RECONCILE_THRESHOLD_PERCENT",
        "ANTHROPIC_RECONCILE_MIN_DIFFERENCE_USD",
    ):
        raw = getattr(settings, name)
        try:
            value = Decimal(str(raw))
        except InvalidOperation:
            value = Decimal(-1)
        if not value.is_finite() or value < 0:
            raise ImproperlyConfigured(
                f"{name} must be a decimal number of 0 or more, got {raw!r}."
            )
        values.append(value)
    return values[0], values[1]
