"""Alert rule conditions, the rules that apply to a customer, and raising their alerts.

A rule is checked against `Figures`, the customer's numbers for one
billing period. A figure left as None is unknown to the caller (the
real-time check has no revenue projection, say), and rules that need it
are skipped rather than treated as crossed.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from datetime import date
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Q

from billing.budgets import usd
from billing.models import Alert, AlertRule

logger = logging.getLogger(__name__)

HUNDRED = Decimal(100)


@dataclasses.dataclass(frozen=True)
class Figures:
    """A customer's numbers for one billing period, as far as the caller knows them.

    `execution_cost_usd` belongs to the execution `execution_id` (the
    costliest, or the one that just recorded a message), and
    `cost_difference_percent` to `difference_execution_id`.
    """

    period_cost_usd: Decimal | None = None
    execution_cost_usd: Decimal | None = None
    execution_id: int | None = None
    margin_percent: Decimal | None = None
    projected_margin_percent: Decimal | None = None
    hard_budget_usd: Decimal | None = None
    soft_budget_usd: Decimal | None = None
    unpriced: bool | None = None
    cost_difference_percent: Decimal | None = None
    difference_execution_id: int | None = None
    stalled_executions: int | None = None

    @property
    def budget_used_percent(self) -> Decimal | None:
        if self.period_cost_usd is None or not self.hard_budget_usd:
            return None
        return self.period_cost_usd * HUNDRED / self.hard_budget_usd


@dataclasses.dataclass(frozen=True)
class Crossing:
    """A rule whose condition holds, with the alert text to raise."""

    rule: AlertRule
    message: str
    execution_id: int | None = None


def _period_cost(rule: AlertRule, figures: Figures) -> str | None:
    cost = figures.period_cost_usd
    if cost is None or cost <= rule.threshold:
        return None
    return (
        f"Cost this billing period is ${usd(cost)}, above the limit of "
        f"${usd(rule.threshold)}."
    )


def _execution_cost(rule: AlertRule, figures: Figures) -> str | None:
    cost = figures.execution_cost_usd
    if cost is None or cost <= rule.threshold:
        return None
    return (
        f"Execution {figures.execution_id} cost ${usd(cost)}, above the limit "
        f"of ${usd(rule.threshold)} for one execution."
    )


def _margin(rule: AlertRule, figures: Figures) -> str | None:
    percent = figures.margin_percent
    if percent is None or percent >= rule.threshold:
        return None
    return (
        f"Margin this billing period so far is {_percent(percent)}%, below "
        f"{_percent(rule.threshold)}%."
    )


def _projected_margin(rule: AlertRule, figures: Figures) -> str | None:
    percent = figures.projected_margin_percent
    if percent is None or percent >= rule.threshold:
        return None
    return (
        f"Margin projected to the end of the billing period is "
        f"{_percent(percent)}%, below {_percent(rule.threshold)}%."
    )


def _budget_used(rule: AlertRule, figures: Figures) -> str | None:
    percent = figures.budget_used_percent
    if percent is None or percent < rule.threshold:
        return None
    return (
        f"{_percent(percent)}% of the ${usd(figures.hard_budget_usd)} budget is "
        f"used (${usd(figures.period_cost_usd)}); the alert level is "
        f"{_percent(rule.threshold)}%."
    )


def _soft_budget(rule: AlertRule, figures: Figures) -> str | None:
    soft, cost = figures.soft_budget_usd, figures.period_cost_usd
    if soft is None or cost is None or cost < soft:
        return None
    return (
        f"Cost this billing period is ${usd(cost)}, at or above the soft budget "
        f"of ${usd(soft)}."
    )


def _unpriced(rule: AlertRule, figures: Figures) -> str | None:
    if not figures.unpriced:
        return None
    return (
        "Some usage this billing period has no known price, so its cost is "
        "missing from every total. Add a model price and run reprice_usage."
    )


def _cost_difference(rule: AlertRule, figures: Figures) -> str | None:
    percent = figures.cost_difference_percent
    if percent is None or percent <= rule.threshold:
        return None
    return (
        f"Execution {figures.difference_execution_id}: our cost differs from the SDK's "
        f"reported cost by {_percent(percent)}%, more than "
        f"{_percent(rule.threshold)}%. Check the price table."
    )


def _stalled(rule: AlertRule, figures: Figures) -> str | None:
    count = figures.stalled_executions
    if count is None or count < rule.threshold:
        return None
    return f"{count} executions stalled this billing period."


CONDITIONS: dict[str, Callable[[AlertRule, Figures], str | None]] = {
    AlertRule.Kind.PERIOD_COST: _period_cost,
    AlertRule.Kind.EXECUTION_COST: _execution_cost,
    AlertRule.Kind.MARGIN: _margin,
    AlertRule.Kind.PROJECTED_MARGIN: _projected_margin,
    AlertRule.Kind.BUDGET_USED: _budget_used,
    AlertRule.Kind.SOFT_BUDGET: _soft_budget,
    AlertRule.Kind.UNPRICED_USAGE: _unpriced,
    AlertRule.Kind.COST_DIFFERENCE: _cost_difference,
    AlertRule.Kind.STALLED_EXECUTIONS: _stalled,
}

# The Figures field naming the execution that an alert of the kind is about.
EXECUTION_FIELDS = {
    AlertRule.Kind.EXECUTION_COST: "execution_id",
    AlertRule.Kind.COST_DIFFERENCE: "difference_execution_id",
}


def crossings(rules: Iterable[AlertRule], figures: Figures) -> list[Crossing]:
    """Return the rules whose condition holds for `figures`."""
    found = []
    for rule in rules:
        if (
            rule.threshold is None
            and rule.kind not in AlertRule.KINDS_WITHOUT_THRESHOLD
        ):
            continue
        message = CONDITIONS[rule.kind](rule, figures)
        if message is None:
            continue
        field = EXECUTION_FIELDS.get(rule.kind)
        execution_id = getattr(figures, field) if field else None
        found.append(Crossing(rule, message, execution_id))
    return found


def effective_rules(
    customer_id: int, rules: Iterable[AlertRule] | None = None
) -> list[AlertRule]:
    """Return the active rules that apply to a customer.

    The customer's own rules of a kind replace every global rule of that
    kind, even when the customer's rules are inactive. `rules` may be
    every rule, loaded once for many customers.
    """
    if rules is None:
        rules = AlertRule.objects.filter(
            Q(customer_id=customer_id) | Q(customer__isnull=True)
        )
    candidates = [rule for rule in rules if rule.customer_id in (None, customer_id)]
    overridden = {rule.kind for rule in candidates if rule.customer_id is not None}
    return [
        rule
        for rule in candidates
        if rule.is_active
        and (rule.customer_id is not None or rule.kind not in overridden)
    ]


def fired_rule_ids(customer_id: int, period_start: date) -> set[int]:
    """Return the ids of the rules that already fired for the customer in the period."""
    return set(
        Alert.objects.filter(
            customer_id=customer_id, period_start=period_start, rule__isnull=False
        ).values_list("rule_id", flat=True)
    )


def alert_fire(
    crossing: Crossing, *, customer_id: int, period_start: date
) -> Alert | None:
    """Create the alert of a crossing, once per rule, customer and period.

    Returns the new alert, or None when the rule already fired for the
    customer in the period. The unique constraint decides, so two
    processes seeing the same crossing at once create one alert.
    """
    rule = crossing.rule
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                kind=rule.kind,
                severity=rule.severity,
                customer_id=customer_id,
                execution_id=crossing.execution_id,
                rule=rule,
                period_start=period_start,
                message=crossing.message,
                dedupe_key=f"rule:{rule.pk}:customer:{customer_id}:{period_start}",
            )
    except IntegrityError:
        return None
    logger.warning(
        "Customer %s: alert %s raised by rule %s: %s",
        customer_id,
        alert.pk,
        rule.pk,
        crossing.message,
    )
    return alert


def _percent(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01')):f}"
