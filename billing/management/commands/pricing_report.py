import json
import logging
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from billing.analysis import (
    check_target_margin,
    hybrid_price,
    per_execution_price,
    subscription_price,
    workflow_cost_stats,
)
from billing.margins import elapsed_fraction, margin_report
from billing.rollups import next_month_start

logger = logging.getLogger(__name__)

CENT = Decimal("0.01")
COST_PLACES = Decimal("0.000001")


class Command(BaseCommand):
    help = (
        "Print each customer's revenue, cost and gross margin for a billing "
        "period, projected to the period end, and each workflow's cost per "
        "execution with the prices that reach a target margin."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--period",
            metavar="YYYY-MM",
            help=(
                "UTC month to report. Each customer's billing period is the one "
                "containing the month's last day, or today in the current month. "
                "Default: the current month."
            ),
        )
        parser.add_argument(
            "--target-margin",
            default="0.7",
            metavar="FRACTION",
            help="Gross margin to price for, from 0 up to but excluding 1. Default: 0.7.",
        )
        parser.add_argument(
            "--json", action="store_true", help="Print JSON instead of tables."
        )

    def handle(self, *args, **options):
        now = timezone.now()
        today = now.astimezone(UTC).date()
        month = parse_period(options["period"], today)
        if month > today:
            raise CommandError(
                f"Invalid --period {options['period']}: it starts after today "
                f"({today}). Choose the current month or an earlier one."
            )
        target_margin = parse_margin(options["target_margin"])

        day = min(next_month_start(month) - timedelta(days=1), today)
        report = margin_report(day=day, now=now)
        workflows = workflow_rows(month, now, target_margin)
        logger.info(
            "Pricing report for %s: %s customers, %s workflow rows",
            month.strftime("%Y-%m"),
            len(report.customers),
            len(workflows),
        )

        customers = [customer_row(row) for row in report.customers]
        allocations = {
            "workflows": [allocation_row(row) for row in report.workflows],
            "models": [allocation_row(row) for row in report.models],
        }
        if options["json"]:
            document = {
                "period": month.strftime("%Y-%m"),
                "target_margin": str(target_margin),
                "customers": customers,
                "allocations": allocations,
                "workflow_prices": workflows,
            }
            self.stdout.write(json.dumps(document, indent=2))
            return

        self.stdout.write(
            f"Pricing report for {month:%Y-%m}, target margin {target_margin}"
        )
        if not customers and not workflows:
            self.stdout.write(
                "No customers with a subscription or usage, and no finished "
                "executions, in this period."
            )
            return

        self.write_section("Customers, lowest margin first", customers)
        self.write_section(
            "Workflows (revenue allocated by share of executions)",
            allocations["workflows"],
        )
        self.write_section(
            "Models (revenue allocated by share of executions)", allocations["models"]
        )
        self.write_section(
            "Cost per execution and suggested prices (finished executions)",
            workflows,
        )
        self.stdout.write(
            "Cost comes from the usage rollups. Projected figures divide cost and "
            "usage revenue so far by the elapsed part of the period. Fixed charges "
            "stay as they are."
        )

    def write_section(self, title, rows):
        self.stdout.write("")
        self.stdout.write(title)
        if not rows:
            self.stdout.write("  none")
            return
        columns = list(rows[0])
        table = [columns] + [[display(row[name]) for name in columns] for row in rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
        for line in table:
            cells = zip(line, widths, strict=True)
            self.stdout.write(
                "  " + "  ".join(cell.ljust(width) for cell, width in cells).rstrip()
            )


def customer_row(row) -> dict:
    """Return one customer's margin figures as display strings."""
    return {
        "customer": row.customer.slug,
        "period": f"{row.period_start} to {row.period_end}",
        "currency": row.currency,
        "revenue": money(row.revenue),
        "cost": cost_text(row.cost, row.usage.unpriced_messages),
        "margin": money(row.margin),
        "margin_percent": percent(row.margin_percent),
        "projected_revenue": money(row.projected_revenue),
        "projected_cost": money(row.projected_cost),
        "projected_margin": money(row.projected_margin),
        "status": "closed" if row.closed else "open",
        "flag": "UNPROFITABLE" if row.unprofitable else "",
    }


def allocation_row(row) -> dict:
    return {
        "name": row.key,
        "executions": row.executions,
        "revenue": money(row.revenue),
        "cost": cost_text(row.cost, row.unpriced_messages),
        "margin": money(row.margin),
        "margin_percent": percent(row.margin_percent),
        "flag": "UNPROFITABLE" if row.unprofitable else "",
    }


def workflow_rows(month: date, now: datetime, target_margin: Decimal) -> list[dict]:
    """Return cost statistics and suggested prices per workflow and model for the month.

    The subscription price covers the month's cost per customer, and the
    hybrid price includes the month's executions per customer. Both are
    projected to the whole month by the elapsed fraction of it.
    """
    end = next_month_start(month)
    elapsed = elapsed_fraction(month, end, now)
    if not elapsed:
        return []
    stats = workflow_cost_stats(
        start=datetime.combine(month, time.min, tzinfo=UTC),
        end=datetime.combine(end, time.min, tzinfo=UTC),
    )
    rows = []
    for row in stats:
        prices = {"per_execution": None, "subscription": None, "hybrid": None}
        if row.cost_mean is not None:
            monthly_cost = row.total_cost / row.customers / elapsed
            included = int(
                (Decimal(row.executions) / row.customers / elapsed).to_integral_value(
                    rounding=ROUND_HALF_UP
                )
            )
            hybrid = hybrid_price(
                included_executions=included,
                cost_per_execution=row.cost_mean,
                target_margin=target_margin,
            )
            prices = {
                "per_execution": per_execution_price(
                    cost_per_execution=row.cost_mean, target_margin=target_margin
                ).display,
                "subscription": subscription_price(
                    monthly_cost=monthly_cost, target_margin=target_margin
                ).display,
                "hybrid": (
                    f"{hybrid.base.display} for {included} + "
                    f"{hybrid.overage.display} each"
                ),
            }
        rows.append(
            {
                "workflow": row.workflow_slug,
                "model": row.model,
                "executions": row.executions,
                "unpriced": row.unpriced_executions,
                "cost_mean": round_text(row.cost_mean, COST_PLACES),
                "cost_median": round_text(row.cost_median, COST_PLACES),
                "cost_p95": round_text(row.cost_p95, COST_PLACES),
                "price_per_execution": round_text(prices["per_execution"], CENT),
                "subscription_per_month": round_text(prices["subscription"], CENT),
                "hybrid": prices["hybrid"],
            }
        )
    return rows


def round_text(value: Decimal | None, places: Decimal) -> str | None:
    """Return `value` rounded half up to `places` as text, or None."""
    if value is None:
        return None
    return str(value.quantize(places, rounding=ROUND_HALF_UP))


def money(value: Decimal | None) -> str | None:
    return round_text(value, CENT)


def percent(value: Decimal | None) -> str | None:
    return None if value is None else f"{round_text(value, CENT)}%"


def cost_text(cost: Decimal, unpriced_messages: int) -> str:
    """Return the cost to cents, marked when some messages have no known price."""
    text = money(cost)
    return text if not unpriced_messages else f"{text} + unpriced"


def display(value) -> str:
    return "-" if value is None or value == "" else str(value)


def parse_period(text: str | None, today: date) -> date:
    """Return the first day of the month `text` names, or of today's month."""
    if text is None:
        return today.replace(day=1)
    try:
        return date.fromisoformat(f"{text}-01")
    except ValueError:
        raise CommandError(
            f"Invalid --period {text!r}: expected YYYY-MM, for example 2026-11."
        ) from None


def parse_margin(text: str) -> Decimal:
    try:
        return check_target_margin(Decimal(text))
    except (InvalidOperation, ValueError):
        raise CommandError(
            f"Invalid --target-margin {text!r}: expected a fraction at least 0 and "
            "below 1, for example 0.7 for 70%."
        ) from None
