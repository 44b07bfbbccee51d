import json
from datetime import UTC, datetime, timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_date

from agents.selectors import decimal_text
from billing.anthropic.client import AnthropicNotConfigured
from billing.anthropic.reconcile import anthropic_reconcile
from billing.anthropic.report import ReportError


class Command(BaseCommand):
    help = (
        "Compare our recorded cost of one UTC day with Anthropic's usage and "
        "cost reports, per customer and model, store the comparisons and alert "
        "on differences above ANTHROPIC_RECONCILE_THRESHOLD_PERCENT. Needs "
        "ANTHROPIC_ADMIN_API_KEY."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--date",
            help="UTC day to compare (YYYY-MM-DD). Default: yesterday.",
        )
        parser.add_argument(
            "--json", action="store_true", help="Print the comparisons as JSON."
        )

    def handle(self, *args, **options):
        day = _day(options["date"])
        try:
            result = anthropic_reconcile(day=day)
        except (AnthropicNotConfigured, ReportError) as exc:
            raise CommandError(str(exc)) from exc
        rows = [
            {
                "customer": c.customer.slug if c.customer else None,
                "model": c.model,
                "our_cost_usd": decimal_text(c.our_cost_usd),
                "their_cost_usd": decimal_text(c.their_cost_usd),
                "difference_usd": decimal_text(c.difference_usd),
                "difference_percent": decimal_text(c.difference_percent),
                "our_output_tokens": c.our_output_tokens,
                "their_output_tokens": c.their_output_tokens,
                "our_unpriced_messages": c.our_unpriced_messages,
                "above_threshold": c.above_threshold,
            }
            for c in result.comparisons
        ]
        if options["json"]:
            summary = {
                "day": day.isoformat(),
                "our_cost_usd": decimal_text(result.our_cost_usd),
                "their_cost_usd": decimal_text(result.their_cost_usd),
                "alerts_raised": result.alerts_raised,
                "comparisons": rows,
            }
            self.stdout.write(json.dumps(summary))
            return
        self.stdout.write(f"Anthropic reconciliation of {day} (UTC), costs in USD")
        if not rows:
            self.stdout.write("  no usage recorded by us or reported by Anthropic")
        for row in rows:
            percent = row["difference_percent"]
            flag = "  ABOVE THRESHOLD" if row["above_threshold"] else ""
            self.stdout.write(
                f"  {row['customer'] or '(unmapped)'} {row['model'] or '(no model)'}: "
                f"ours {row['our_cost_usd']}, Anthropic {row['their_cost_usd']}, "
                f"difference {row['difference_usd']}"
                f"{f' ({percent}%)' if percent is not None else ''}{flag}"
            )
        self.stdout.write(
            f"Total: ours {decimal_text(result.our_cost_usd)}, Anthropic "
            f"{decimal_text(result.their_cost_usd)}; {result.alerts_raised} alerts "
            "raised"
        )


def _day(value):
    if value is None:
        return (datetime.now(UTC) - timedelta(days=1)).date()
    try:
        day = parse_date(value)
    except ValueError:
        day = None
    if day is None:
        raise CommandError(f"Invalid --date {value!r}: expected YYYY-MM-DD.")
    return day
