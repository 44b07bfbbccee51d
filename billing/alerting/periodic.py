"""Every alert rule checked for every customer, on a schedule.

Period cost, unpriced usage and margins come from the rollup tables, so
they are as fresh as the last rollup run. Single-execution figures
(the costliest execution, the largest difference from the SDK's cost)
come from the executions of the period, one indexed query each, and
stalled executions from their alerts.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime
from decimal import Decimal

from django.db.models import ExpressionWrapper, F, Func, Q
from django.utils import timezone

from agents.models import Execution
from billing.alerting.rules import (
    Figures,
    alert_fire,
    crossings,
    effective_rules,
    fired_rule_ids,
)
from billing.budgets import customer_budget, utc_midnight
from billing.margins import customer_margin, customer_period
from billing.models import Alert, AlertRule
from billing.selectors import usage_totals
from customers.models import Customer

logger = logging.getLogger(__name__)

MARGIN_KINDS = frozenset({AlertRule.Kind.MARGIN, AlertRule.Kind.PROJECTED_MARGIN})


@dataclasses.dataclass
class EvaluationResult:
    customers: int = 0
    raised: list[int] = dataclasses.field(default_factory=list)


def alert_rules_evaluate(*, now: datetime | None = None) -> EvaluationResult:
    """Check every active rule for every active customer; return the alerts raised."""
    now = now or timezone.now()
    # Inactive customer rules count too: they silence a global default.
    all_rules = list(
        AlertRule.objects.filter(Q(is_active=True) | Q(customer__isnull=False))
    )
    result = EvaluationResult()
    if not any(rule.is_active for rule in all_rules):
        return result
    for customer in Customer.objects.filter(status=Customer.Status.ACTIVE):
        rules = effective_rules(customer.pk, all_rules)
        if not rules:
            continue
        result.customers += 1
        result.raised.extend(_evaluate_customer(customer, rules, now))
    if result.raised:
        logger.info(
            "Alert rules checked for %d customers; %d alerts raised",
            result.customers,
            len(result.raised),
        )
    return result


def _evaluate_customer(
    customer: Customer, rules: list[AlertRule], now: datetime
) -> list[int]:
    today = now.astimezone(UTC).date()
    start, end = customer_period(customer, today)
    fired = fired_rule_ids(customer.pk, start)
    pending = [rule for rule in rules if rule.pk not in fired]
    if not pending:
        return []
    kinds = {rule.kind for rule in pending}
    figures = _figures(customer, kinds, start, end, now)
    raised = []
    for crossing in crossings(pending, figures):
        alert = alert_fire(crossing, customer_id=customer.pk, period_start=start)
        if alert is not None:
            raised.append(alert.pk)
    return raised


def _figures(customer, kinds, start, end, now) -> Figures:
    """Read the figures that the rule kinds in `kinds` need, and only those."""
    today = now.astimezone(UTC).date()
    values: dict = {}

    if kinds & MARGIN_KINDS:
        margin = customer_margin(customer=customer, day=today, now=now)
        usage = margin.usage
        values["margin_percent"] = margin.margin_percent
        projected_revenue = margin.projected_revenue
        if projected_revenue:
            values["projected_margin_percent"] = (
                margin.projected_margin * 100 / projected_revenue
            )
    else:
        usage = usage_totals(start=start, end=end, customer=customer)
    values["period_cost_usd"] = usage.cost_usd
    values["unpriced"] = usage.unpriced_messages > 0
    limits = customer_budget(customer, today)
    values["hard_budget_usd"] = limits.hard_usd
    values["soft_budget_usd"] = limits.soft_usd

    executions = Execution.objects.filter(
        customer=customer,
        created_at__gte=utc_midnight(start),
        created_at__lt=utc_midnight(end),
    )
    if AlertRule.Kind.COST_DIFFERENCE in kinds:
        difference = (
            executions.filter(
                reported_cost_usd__gt=0, cost_difference_usd__isnull=False
            )
            .annotate(
                difference_percent=ExpressionWrapper(
                    Func(F("cost_difference_usd"), function="ABS")
                    * 100
                    / F("reported_cost_usd"),
                    output_field=Execution._meta.get_field("cost_usd"),
                )
            )
            .order_by("-difference_percent")
            .values_list("pk", "difference_percent")
            .first()
        )
        if difference is not None:
            values["difference_execution_id"], percent = difference
            values["cost_difference_percent"] = Decimal(percent)

    if AlertRule.Kind.EXECUTION_COST in kinds:
        costliest = (
            executions.order_by("-cost_usd").values_list("pk", "cost_usd").first()
        )
        if costliest is not None:
            values["execution_id"], values["execution_cost_usd"] = costliest

    if AlertRule.Kind.STALLED_EXECUTIONS in kinds:
        values["stalled_executions"] = Alert.objects.filter(
            customer=customer,
            kind=Alert.Kind.STALLED_EXECUTION,
            created_at__gte=utc_midnight(start),
            created_at__lt=utc_midnight(end),
        ).count()
    return Figures(**values)
