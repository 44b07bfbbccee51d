"""Alert rules checked as each API message is recorded, from running totals.

`api_message_recorded` fires after every committed message write, on the
recording hot path, so the check must not query the database per message.
The first message of an execution loads a `Watch`: the customer's rules,
budgets, period dates, the recorded cost of the customer's other
executions in the period, and the rules that already fired. Later
messages compare the execution's running cost with those figures in
memory. The database is read again only when the watch is older than
AGENTMARGIN_ALERT_CACHE_SECONDS, and written only when a rule fires.

Every real-time condition is monotonic in the execution's running cost, so
a watch also keeps the lowest running cost at which any pending rule can
hold (`trigger_cost_usd`). Below it a message costs one comparison; at or
above it the rules are evaluated in full, and they alone decide.

The watch's base figures are up to that many seconds old, so a crossing
caused by another process's executions may be seen late here. The
periodic check (`billing.alerting.periodic`) catches it in any case.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from datetime import UTC, date
from decimal import Decimal

from django.conf import settings
from django.db.models import Sum
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
from billing.models import AlertRule
from customers.models import Customer

logger = logging.getLogger(__name__)

# Rules a message can make true. The rest need figures known only at the
# end of a run or from the rollups.
REALTIME_KINDS = frozenset(
    {
        AlertRule.Kind.PERIOD_COST,
        AlertRule.Kind.EXECUTION_COST,
        AlertRule.Kind.MARGIN,
        AlertRule.Kind.BUDGET_USED,
        AlertRule.Kind.SOFT_BUDGET,
        AlertRule.Kind.UNPRICED_USAGE,
    }
)

# Maximum watches kept per process. Past it, the oldest one is dropped.
MAX_WATCHES = 1000


# Subtracted from each computed trigger cost, so that rounding in the
# rules' own arithmetic can never make a crossing happen below it.
TRIGGER_SLACK_USD = Decimal("0.000001")
INFINITY = Decimal("Infinity")


@dataclasses.dataclass
class Watch:
    """Rules and base figures of one execution's real-time check, reloaded per TTL."""

    customer_id: int
    period_start: date
    loaded_at: float
    rules: list[AlertRule]
    other_cost_usd: Decimal
    hard_budget_usd: Decimal | None
    soft_budget_usd: Decimal | None
    revenue_usd: Decimal | None
    fired: set[int]
    # Monotonic time after which the watch is reloaded.
    expires_at: float = float("inf")
    # Rules not fired yet, the lowest running cost at which one of them can
    # hold, and whether one of them fires on unpriced usage.
    pending: list[AlertRule] = dataclasses.field(default_factory=list)
    trigger_cost_usd: Decimal = INFINITY
    watches_unpriced: bool = False

    def __post_init__(self):
        self.refresh_pending()

    def refresh_pending(self) -> None:
        """Recompute the pending rules and their trigger after rules load or fire."""
        self.pending = [rule for rule in self.rules if rule.pk not in self.fired]
        self.watches_unpriced = any(
            rule.kind == AlertRule.Kind.UNPRICED_USAGE for rule in self.pending
        )
        self.trigger_cost_usd = min(
            (self.trigger_cost(rule) for rule in self.pending), default=INFINITY
        )

    def trigger_cost(self, rule: AlertRule) -> Decimal:
        """Return the lowest running cost of the execution at which `rule` can hold.

        The value errs low by TRIGGER_SLACK_USD. Minus infinity means the rule
        is evaluated on every message, infinity that it cannot hold in this
        watch.
        """
        kind, threshold, other = rule.kind, rule.threshold, self.other_cost_usd
        if kind == AlertRule.Kind.UNPRICED_USAGE:
            return INFINITY
        if kind == AlertRule.Kind.SOFT_BUDGET:
            if self.soft_budget_usd is None:
                return INFINITY
            return self.soft_budget_usd - other - TRIGGER_SLACK_USD
        if threshold is None:
            return INFINITY
        if kind == AlertRule.Kind.PERIOD_COST:
            level = threshold - other
        elif kind == AlertRule.Kind.EXECUTION_COST:
            level = threshold
        elif kind == AlertRule.Kind.BUDGET_USED:
            hard = self.hard_budget_usd
            if not hard:
                return INFINITY
            if hard < 0:
                return -INFINITY
            level = threshold * hard / 100 - other
        elif kind == AlertRule.Kind.MARGIN:
            revenue = self.revenue_usd
            if not revenue:
                return INFINITY
            if revenue < 0:
                return -INFINITY
            level = revenue - other - threshold * revenue / 100
        else:
            return -INFINITY
        return level - TRIGGER_SLACK_USD

    def figures(
        self, execution_id: int, running_cost_usd: Decimal, unpriced: bool
    ) -> Figures:
        period_cost = self.other_cost_usd + running_cost_usd
        margin = None
        if self.revenue_usd:
            margin = (self.revenue_usd - period_cost) * 100 / self.revenue_usd
        return Figures(
            period_cost_usd=period_cost,
            execution_cost_usd=running_cost_usd,
            execution_id=execution_id,
            margin_percent=margin,
            hard_budget_usd=self.hard_budget_usd,
            soft_budget_usd=self.soft_budget_usd,
            unpriced=unpriced,
        )


_watches: dict[int, Watch] = {}
_lock = threading.Lock()


def on_api_message_recorded(
    sender, execution_id: int, customer_id: int, update, **kwargs
) -> None:
    """Check the customer's real-time rules against the execution's running totals."""
    watch = _watch(execution_id, customer_id)
    running_cost = update.running_cost_usd
    if running_cost < watch.trigger_cost_usd and not (
        update.unpriced and watch.watches_unpriced
    ):
        return
    figures = watch.figures(execution_id, running_cost, update.unpriced)
    found = crossings(watch.pending, figures)
    for crossing in found:
        # Marked first: a failed insert must not be retried on every message.
        watch.fired.add(crossing.rule.pk)
        alert_fire(crossing, customer_id=customer_id, period_start=watch.period_start)
    if found:
        watch.refresh_pending()


def forget(execution_id: int) -> None:
    """Drop the watch of a finished execution."""
    with _lock:
        _watches.pop(execution_id, None)


def clear() -> None:
    """Drop every watch, so the next message of each execution reloads its figures."""
    with _lock:
        _watches.clear()


def _watch(execution_id: int, customer_id: int) -> Watch:
    now = time.monotonic()
    # A dict read needs no lock. The lock keeps writers from interleaving.
    watch = _watches.get(execution_id)
    if watch is not None and now < watch.expires_at:
        return watch
    watch = _load(execution_id, customer_id, now)
    watch.expires_at = now + settings.AGENTMARGIN_ALERT_CACHE_SECONDS
    with _lock:
        if len(_watches) >= MAX_WATCHES:
            oldest = min(_watches, key=lambda key: _watches[key].loaded_at)
            _watches.pop(oldest)
        _watches[execution_id] = watch
    return watch


def _load(execution_id: int, customer_id: int, now: float) -> Watch:
    customer = Customer.objects.get(pk=customer_id)
    moment = timezone.now()
    today = moment.astimezone(UTC).date()
    start, end = customer_period(customer, today)
    rules = [
        rule for rule in effective_rules(customer_id) if rule.kind in REALTIME_KINDS
    ]
    if not rules:
        return Watch(customer_id, start, now, [], Decimal(0), None, None, None, set())
    limits = customer_budget(customer, today)
    other_cost = (
        Execution.objects.filter(
            customer_id=customer_id,
            created_at__gte=utc_midnight(start),
            created_at__lt=utc_midnight(end),
        )
        .exclude(pk=execution_id)
        .aggregate(total=Sum("cost_usd"))["total"]
    )
    revenue = None
    if any(rule.kind == AlertRule.Kind.MARGIN for rule in rules):
        revenue = customer_margin(customer=customer, day=today, now=moment).revenue
    return Watch(
        customer_id=customer_id,
        period_start=start,
        loaded_at=now,
        rules=rules,
        other_cost_usd=Decimal(other_cost or 0),
        hard_budget_usd=limits.hard_usd,
        soft_budget_usd=limits.soft_usd,
        revenue_usd=revenue,
        fired=fired_rule_ids(customer_id, start),
    )
