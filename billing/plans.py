"""Plan rules: field validation, graduated tiers and monthly period arithmetic.

Periods are half-open ranges of UTC dates: `start` included, `end`
excluded.
"""

from __future__ import annotations

import calendar
import dataclasses
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from billing.models import Plan, Subscription

CENT = Decimal("0.01")

# The fields each billing model uses; every other pricing field must be empty.
PRICING_FIELDS = (
    "monthly_price",
    "usage_pricing",
    "price_per_execution",
    "cost_markup",
    "success_fee_kind",
    "commission_percent",
    "fee_per_success",
    "minimum_monthly_fee",
    "included_executions",
    "overage_price",
    "overage_tiers",
)
FIELDS_BY_MODEL = {
    Plan.BillingModel.SUBSCRIPTION: {"monthly_price"},
    Plan.BillingModel.USAGE: {"usage_pricing", "price_per_execution", "cost_markup"},
    Plan.BillingModel.SUCCESS_FEE: {
        "success_fee_kind",
        "commission_percent",
        "fee_per_success",
        "minimum_monthly_fee",
    },
    Plan.BillingModel.HYBRID: {
        "monthly_price",
        "included_executions",
        "overage_price",
        "overage_tiers",
    },
}


def round_line(amount: Decimal) -> Decimal:
    """Round an invoice line amount to cents, half up. Call it once per line."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


# Validation --------------------------------------------------------------


def plan_validation_errors(plan: Plan) -> dict[str, str]:
    """Return the plan's invalid fields, each with a message, as `clean()` needs."""
    model = plan.billing_model
    if model not in FIELDS_BY_MODEL:
        return {"billing_model": f"Invalid billing model {model!r}."}
    errors = {}
    allowed = FIELDS_BY_MODEL[model]
    label = Plan.BillingModel(model).label
    for name in PRICING_FIELDS:
        if name not in allowed and _is_set(getattr(plan, name)):
            errors[name] = f"Leave this empty: {label} plans do not use it."

    def require(name: str) -> None:
        if getattr(plan, name) is None and name not in errors:
            errors[name] = f"Required for {label} plans."

    if model in (Plan.BillingModel.SUBSCRIPTION, Plan.BillingModel.HYBRID):
        require("monthly_price")
    if model == Plan.BillingModel.USAGE:
        _check_usage(plan, errors)
    if model == Plan.BillingModel.SUCCESS_FEE:
        _check_success_fee(plan, errors)
    if model == Plan.BillingModel.HYBRID:
        require("included_executions")
        _check_overage(plan, errors)
    _check_ranges(plan, errors)
    return errors


def _is_set(value) -> bool:
    return value not in (None, "", [])


def _check_usage(plan: Plan, errors: dict) -> None:
    if plan.usage_pricing == Plan.UsagePricing.PER_EXECUTION:
        if plan.price_per_execution is None:
            errors["price_per_execution"] = "Required for per-execution pricing."
        if plan.cost_markup is not None:
            errors["cost_markup"] = "Leave this empty for per-execution pricing."
    elif plan.usage_pricing == Plan.UsagePricing.COST_PLUS:
        if plan.cost_markup is None:
            errors["cost_markup"] = "Required for cost-plus pricing."
        if plan.price_per_execution is not None:
            errors["price_per_execution"] = "Leave this empty for cost-plus pricing."
    else:
        errors["usage_pricing"] = "Choose per-execution or cost-plus pricing."


def _check_success_fee(plan: Plan, errors: dict) -> None:
    if plan.success_fee_kind == Plan.SuccessFeeKind.COMMISSION:
        if plan.commission_percent is None:
            errors["commission_percent"] = "Required for a commission."
        if plan.fee_per_success is not None:
            errors["fee_per_success"] = "Leave this empty for a commission."
    elif plan.success_fee_kind == Plan.SuccessFeeKind.FIXED_FEE:
        if plan.fee_per_success is None:
            errors["fee_per_success"] = "Required for a fixed fee per success."
        if plan.commission_percent is not None:
            errors["commission_percent"] = "Leave this empty for a fixed fee."
    else:
        errors["success_fee_kind"] = "Choose a commission or a fixed fee per success."


def _check_overage(plan: Plan, errors: dict) -> None:
    if plan.overage_tiers:
        if plan.overage_price is not None:
            errors["overage_price"] = (
                "Leave this empty when overage tiers are set: the tiers price "
                "every execution above the included ones."
            )
        message = tier_validation_error(plan.overage_tiers)
        if message:
            errors["overage_tiers"] = message
    elif plan.overage_price is None:
        errors["overage_price"] = "Required for hybrid plans without overage tiers."


def _check_ranges(plan: Plan, errors: dict) -> None:
    not_negative = (
        "monthly_price",
        "price_per_execution",
        "fee_per_success",
        "minimum_monthly_fee",
        "overage_price",
    )
    for name in not_negative:
        value = getattr(plan, name)
        if value is not None and value < 0 and name not in errors:
            errors[name] = f"Must be zero or more, not {value}."
    markup = plan.cost_markup
    if markup is not None and markup <= 0 and "cost_markup" not in errors:
        errors["cost_markup"] = f"Must be above zero, not {markup}."
    percent = plan.commission_percent
    if percent is not None and not 0 < percent <= 100:
        errors.setdefault(
            "commission_percent", f"Must be above 0 and at most 100, not {percent}."
        )


@dataclasses.dataclass(frozen=True)
class Tier:
    """One graduated overage tier; `up_to` None means no upper limit."""

    up_to: int | None
    unit_price: Decimal


def tier_validation_error(tiers) -> str:
    """Return why `tiers` is not a valid list of graduated tiers, or ""."""
    if not isinstance(tiers, list) or not tiers:
        return "Must be a non-empty list of {up_to, unit_price} objects."
    previous = 0
    for number, tier in enumerate(tiers, start=1):
        if not isinstance(tier, dict) or set(tier) != {"up_to", "unit_price"}:
            return f"Tier {number}: must have exactly the keys up_to and unit_price."
        up_to = tier["up_to"]
        last = number == len(tiers)
        if up_to is None:
            if not last:
                return f"Tier {number}: only the last tier may have no up_to limit."
        elif isinstance(up_to, bool) or not isinstance(up_to, int):
            return f"Tier {number}: up_to must be a whole number, not {up_to!r}."
        elif up_to <= previous:
            return (
                f"Tier {number}: up_to must be above {previous}, not {up_to}; "
                "tiers must ascend."
            )
        else:
            previous = up_to
        if last and up_to is not None:
            return f"Tier {number}: the last tier must have up_to null (no limit)."
        price = _decimal_or_none(tier["unit_price"])
        if price is None or price <= 0:
            return (
                f"Tier {number}: unit_price must be a positive decimal string, "
                f"not {tier['unit_price']!r}."
            )
    return ""


def parse_tiers(tiers: list[dict]) -> list[Tier]:
    """Return validated tiers as Tier objects; raise ValueError when invalid."""
    message = tier_validation_error(tiers)
    if message:
        raise ValueError(message)
    return [Tier(tier["up_to"], Decimal(str(tier["unit_price"]))) for tier in tiers]


def split_into_tiers(units: int, tiers: list[Tier]) -> list[tuple[Tier, int]]:
    """Return how many of `units` fall into each tier, graduated, skipping empty tiers.

    With tiers up to 100 at $0.50 then unlimited at $0.40, 150 units are
    100 at $0.50 and 50 at $0.40.
    """
    split = []
    lower = 0
    for tier in tiers:
        upper = units if tier.up_to is None else min(units, tier.up_to)
        if upper > lower:
            split.append((tier, upper - lower))
            lower = upper
        if lower >= units:
            break
    return split


def _decimal_or_none(value) -> Decimal | None:
    if isinstance(value, float | bool):
        # A float has already lost digits; money comes as a string.
        return None
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        return None
    return price if price.is_finite() else None


# Periods ----------------------------------------------------------------


def add_months(anchor: date, months: int) -> date:
    """Return the anchor's day `months` months later, clamped to the month's end.

    Counting from the anchor, never from the previous result, keeps a
    January 31 anchor on the 31st after a short month: Feb 28, then Mar 31.
    """
    month_index = anchor.year * 12 + anchor.month - 1 + months
    year, month = divmod(month_index, 12)
    month += 1
    last_day = calendar.monthrange(year, month)[1]
    return date(year, month, min(anchor.day, last_day))


def period_containing(anchor: date, day: date) -> tuple[date, date]:
    """Return the monthly period (start, end) anchored on `anchor` that contains `day`."""
    if day < anchor:
        raise ValueError(f"{day} is before the anchor date {anchor}.")
    months = (day.year - anchor.year) * 12 + day.month - anchor.month
    if add_months(anchor, months) > day:
        months -= 1
    return add_months(anchor, months), add_months(anchor, months + 1)


def periods_between(anchor: date, start: date, until: date) -> list[tuple[date, date]]:
    """Return the periods from the one containing `start` that end on or before `until`."""
    periods = []
    period = period_containing(anchor, start)
    while period[1] <= until:
        periods.append(period)
        period = period_containing(anchor, period[1])
    return periods


def plan_on(subscription: Subscription, day: date) -> Plan:
    """Return the plan in effect for `subscription` on `day`."""
    changes = subscription.changes.select_related("from_plan", "to_plan")
    latest = changes.filter(effective_on__lte=day).order_by("effective_on", "id").last()
    if latest is not None:
        return latest.to_plan
    first = changes.order_by("effective_on", "id").first()
    return first.from_plan if first is not None else subscription.plan
