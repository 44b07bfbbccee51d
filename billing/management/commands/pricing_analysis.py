import json
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from agents.models import Workflow
from billing.analysis import (
    MONTH_DAYS,
    check_target_margin,
    suggested_price_row,
    workflow_cost_stats,
)

DEFAULT_DAYS = 30


class Command(BaseCommand):
    help = (
        "Print cost per execution of each workflow and requested model over a "
        "window of finished executions, with the subscription and per-execution "
        "prices that reach a target margin. Unpriced executions are counted but "
        "left out of the cost figures."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--start",
            metavar="YYYY-MM-DD",
            help=f"First UTC day of the window. Default: {DEFAULT_DAYS} days before --end.",
        )
        parser.add_argument(
            "--end",
            metavar="YYYY-MM-DD",
            help="UTC day after the window, excluded. Default: tomorrow, so today counts.",
        )
        parser.add_argument(
            "--target-margin",
            default="0.7",
            metavar="FRACTION",
            help="Gross margin to reach, from 0 up to but excluding 1. Default: 0.7.",
        )
        parser.add_argument("--workflow", metavar="SLUG", help="Only this workflow.")
        parser.add_argument(
            "--json", action="store_true", help="Print JSON instead of a table."
        )

    def handle(self, *args, **options):
        end = parse_date(options["end"], "--end") or (
            timezone.now().astimezone(UTC).date() + timedelta(days=1)
        )
        start = parse_date(options["start"], "--start") or (
            end - timedelta(days=DEFAULT_DAYS)
        )
        if end <= start:
            raise CommandError(
                f"Invalid window: --end {end} is not after --start {start}."
            )
        margin = parse_margin(options["target_margin"])
        slug = options["workflow"]
        if slug is not None and not Workflow.objects.filter(slug=slug).exists():
            raise CommandError(
                f"Workflow {slug!r} not found; see the workflows in the admin."
            )
        stats = workflow_cost_stats(
            start=datetime.combine(start, time.min, tzinfo=UTC),
            end=datetime.combine(end, time.min, tzinfo=UTC),
            workflow=options["workflow"],
        )
        rows = [suggested_price_row(row, margin, (end - start).days) for row in stats]
        if options["json"]:
            document = {
                "start": start.isoformat(),
                "end": end.isoformat(),
                "target_margin": str(margin),
                "rows": rows,
            }
            self.stdout.write(json.dumps(document, indent=2))
            return
        self.stdout.write(
            f"Finished executions from {start} to {end} (end excluded), "
            f"target margin {margin}"
        )
        if not rows:
            self.stdout.write("No finished executions in this window.")
            return
        self.write_table(rows)
        self.stdout.write(
            "Cost figures leave out unpriced executions. Subscription: cost per "
            f"customer over a {MONTH_DAYS}-day month, divided by (1 - margin)."
        )

    def write_table(self, rows):
        columns = list(rows[0])
        table = [columns] + [[display(row[name]) for name in columns] for row in rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
        for line in table:
            self.stdout.write(
                "  ".join(
                    cell.ljust(width) for cell, width in zip(line, widths, strict=True)
                ).rstrip()
            )


def display(value) -> str:
    return "-" if value is None else str(value)


def parse_date(text: str | None, option: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CommandError(
            f"Invalid {option} {text!r}: expected YYYY-MM-DD, for example 2026-11-01."
        ) from None


def parse_margin(text: str) -> Decimal:
    try:
        return check_target_margin(Decimal(text))
    except (InvalidOperation, ValueError):
        raise CommandError(
            f"Invalid --target-margin {text!r}: expected a fraction at least 0 and "
            "below 1, for example 0.7 for 70%."
        ) from None
