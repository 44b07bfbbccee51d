"""Alert rules about one execution, checked once when it finishes or stalls.

The SDK's reported cost arrives with the run's result, so the
cost-difference rule can only be checked at the end. The final cost and
unpriced flag are checked again here, because the last messages of a run
may have changed them after the real-time check.
"""

from __future__ import annotations

from datetime import UTC

from django.utils import timezone

from agents.models import Execution
from billing.alerting.rules import (
    Figures,
    alert_fire,
    crossings,
    effective_rules,
    fired_rule_ids,
)
from billing.budgets import utc_midnight
from billing.margins import customer_period
from billing.models import Alert, AlertRule
from customers.models import Customer

HUNDRED = 100

FINISH_KINDS = frozenset(
    {
        AlertRule.Kind.EXECUTION_COST,
        AlertRule.Kind.COST_DIFFERENCE,
        AlertRule.Kind.UNPRICED_USAGE,
    }
)


def execution_rules_check(execution_id: int) -> list[Alert]:
    """Check the rules about a finished execution; return the alerts raised."""
    execution = (
        Execution.objects.select_related("customer").filter(pk=execution_id).first()
    )
    if execution is None:
        return []
    rules = [
        rule
        for rule in effective_rules(execution.customer_id)
        if rule.kind in FINISH_KINDS
    ]
    if not rules:
        return []
    difference = None
    if execution.reported_cost_usd and execution.cost_difference_usd is not None:
        difference = (
            abs(execution.cost_difference_usd) * HUNDRED / execution.reported_cost_usd
        )
    figures = Figures(
        execution_cost_usd=execution.cost_usd,
        execution_id=execution.pk,
        unpriced=execution.unpriced,
        cost_difference_percent=difference,
        difference_execution_id=execution.pk,
    )
    return _fire(execution.customer, rules, figures)


def stalled_rules_check(customer_id: int) -> list[Alert]:
    """Check the stalled-executions rule of a customer after one of its runs stalled."""
    rules = [
        rule
        for rule in effective_rules(customer_id)
        if rule.kind == AlertRule.Kind.STALLED_EXECUTIONS
    ]
    if not rules:
        return []
    customer = Customer.objects.get(pk=customer_id)
    start, end = _period(customer)
    count = Alert.objects.filter(
        customer_id=customer_id,
        kind=Alert.Kind.STALLED_EXECUTION,
        created_at__gte=utc_midnight(start),
        created_at__lt=utc_midnight(end),
    ).count()
    return _fire(customer, rules, Figures(stalled_executions=count))


def _fire(customer, rules, figures) -> list[Alert]:
    start, _ = _period(customer)
    fired = fired_rule_ids(customer.pk, start)
    raised = []
    for crossing in crossings([r for r in rules if r.pk not in fired], figures):
        alert = alert_fire(crossing, customer_id=customer.pk, period_start=start)
        if alert is not None:
            raised.append(alert)
    return raised


def _period(customer):
    return customer_period(customer, timezone.now().astimezone(UTC).date())
