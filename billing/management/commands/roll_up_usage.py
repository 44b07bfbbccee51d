import argparse
from datetime import date

from django.core.management.base import BaseCommand

from billing.revenue import period_revenue_refresh
from billing.rollups import MonthProgress, roll_up_usage


class Command(BaseCommand):
    help = (
        "Recompute the daily and monthly usage rollups of the days whose API "
        "messages or executions changed since the last run. Safe to run at any "
        "time: days are recomputed whole from the raw rows. Then store each "
        "customer's current period revenue for the customer margin list."
    )

    def add_arguments(self, parser):
        scope = parser.add_mutually_exclusive_group()
        scope.add_argument(
            "--full",
            action="store_true",
            help="Recompute every day that has raw rows or rollup rows.",
        )
        scope.add_argument(
            "--since",
            type=parse_date,
            metavar="YYYY-MM-DD",
            help=(
                "Recompute every day from this UTC date on, whatever changed. "
                "The checkpoint of incremental runs is left as it is."
            ),
        )

    def handle(self, *args, **options):
        result = roll_up_usage(
            full=options["full"],
            since=options["since"],
            wait=True,
            progress=self.print_progress,
        )
        self.stdout.write(f"Mode: {result.mode}")
        self.stdout.write(f"Days recomputed: {len(result.days)}")
        if result.days:
            self.stdout.write(f"From {result.days[0]} to {result.days[-1]}")
        self.stdout.write(f"Months recomputed: {len(result.months)}")
        for label, changes in (("Daily", result.daily), ("Monthly", result.monthly)):
            self.stdout.write(
                f"{label} rows: {changes.created} created, {changes.updated} "
                f"updated, {changes.deleted} deleted, {changes.unchanged} unchanged"
            )
        self.stdout.write(f"Changes rolled up until: {result.high_water_mark}")
        written = period_revenue_refresh()
        self.stdout.write(f"Current period revenue stored for {written} customers")

    def print_progress(self, progress: MonthProgress):
        self.stdout.write(
            f"[{progress.months_done}/{progress.months_total}] "
            f"{progress.month:%Y-%m}: {len(progress.days)} days, "
            f"{progress.daily.written} daily and {progress.monthly.written} "
            "monthly rows written"
        )


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid date {text!r}: expected YYYY-MM-DD, for example 2026-11-01"
        ) from None
