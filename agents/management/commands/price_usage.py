import json
import sys
from datetime import UTC
from decimal import Decimal

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from agents.pricing import TokenUsage, price_usage


class Command(BaseCommand):
    help = (
        "Price one Messages API usage object and print the quote as JSON. "
        "Example: manage.py price_usage --model claude-sonnet-4-6 "
        '\'{"input_tokens": 12, "output_tokens": 300}\''
    )
    # Tests pass a file-like object as stdin through call_command().
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        parser.add_argument(
            "--model", required=True, help="Model id, e.g. claude-haiku-4-5-20251001."
        )
        parser.add_argument(
            "--at",
            help=(
                "Moment whose prices apply, in ISO 8601, e.g. 2026-03-01T12:00:00Z. "
                "A value without a time zone is UTC. Default: now."
            ),
        )
        parser.add_argument(
            "usage",
            metavar="USAGE_JSON",
            help="The API's usage object as a JSON string, or - to read it from stdin.",
        )

    def handle(self, *args, **options):
        if not options["model"].strip():
            raise CommandError(
                "--model is empty; give a model id such as claude-sonnet-4-6."
            )
        at = _parse_at(options["at"])
        raw_usage = options["usage"]
        if raw_usage == "-":
            raw_usage = (options.get("stdin") or sys.stdin).read()
        usage = _parse_usage(raw_usage)

        quote = price_usage(options["model"], usage, at)
        output = {
            "model": quote.model,
            "resolved_model": quote.resolved_model or None,
            "status": quote.status,
            "cost_usd": _plain(quote.cost_usd),
            "breakdown": {kind: _plain(cost) for kind, cost in quote.breakdown.items()},
            "rates": {kind: _plain(rate) for kind, rate in quote.rates.items()},
            "source": quote.source or None,
            "version": quote.version or None,
            "estimated": quote.estimated,
            "band": quote.band,
            "at": at.isoformat(),
        }
        self.stdout.write(json.dumps(output, indent=2))


def _parse_at(value):
    if value is None:
        return timezone.now()
    try:
        at = parse_datetime(value)
    except ValueError:
        at = None
    if at is None:
        raise CommandError(
            f"Invalid --at value {value!r}: expected an ISO 8601 date and time, "
            "e.g. 2026-03-01T12:00:00Z."
        )
    if timezone.is_naive(at):
        at = at.replace(tzinfo=UTC)
    return at


def _parse_usage(raw_usage):
    try:
        data = json.loads(raw_usage)
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"Invalid USAGE_JSON {_shorten(raw_usage)!r}: {exc}. "
            "Pass a JSON object such as '{\"input_tokens\": 12}'."
        ) from exc
    try:
        return TokenUsage.from_api(data)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


def _plain(value: Decimal | None) -> str | None:
    """Format a Decimal without exponent or trailing zeros, e.g. "0.012555"."""
    if value is None:
        return None
    return format(value.normalize(), "f")


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
