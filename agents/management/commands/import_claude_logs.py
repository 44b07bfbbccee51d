import json
import sys
import time
from datetime import UTC, datetime
from datetime import time as day_start
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_date, parse_datetime

from agents.logs.importer import LogImport, claude_logs_import
from agents.logs.reader import ReadStats
from agents.management.lookup import get_by_slug
from agents.models import Workflow
from agents.selectors import decimal_text
from customers.models import Customer

# Seconds between two redraws of the progress bar.
PROGRESS_INTERVAL_SECONDS = 0.5


class Command(BaseCommand):
    help = (
        "Import Claude Code session logs (~/.claude/projects/<project>/"
        "<session>.jsonl): each session becomes an imported execution, priced "
        "like a live run. Importing the same logs again changes nothing; a "
        "session that grew is topped up."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "paths",
            nargs="+",
            metavar="PATH",
            help="A folder, searched recursively for .jsonl files, or a log file.",
        )
        parser.add_argument(
            "--customer", help="Slug of the customer of sessions no --map names."
        )
        parser.add_argument(
            "--workflow",
            help="Workflow slug of the sessions. Default: claude-code, created "
            "when missing.",
        )
        parser.add_argument(
            "--map",
            action="append",
            default=[],
            metavar="PROJECT=CUSTOMER",
            help="Attribute the sessions of a project folder (the folder name "
            "under projects/) to a customer slug. Repeatable. Folder names start "
            "with -, so join it with =: --map=-home-me-shop=acme.",
        )
        parser.add_argument(
            "--since",
            help="Import only responses written at or after this date "
            "(YYYY-MM-DD, UTC) or ISO 8601 date-time.",
        )
        parser.add_argument(
            "--json", action="store_true", help="Print the summary as one JSON object."
        )

    def handle(self, *args, **options):
        customer = (
            get_by_slug(Customer, options["customer"]) if options["customer"] else None
        )
        workflow = (
            get_by_slug(Workflow, options["workflow"]) if options["workflow"] else None
        )
        project_customers = _project_customers(options["map"])
        if customer is None and not project_customers:
            raise CommandError(
                "No customer to attribute sessions to: pass --customer SLUG or "
                "--map PROJECT=CUSTOMER."
            )
        since = _since(options["since"])
        progress = ProgressBar(sys.stderr) if sys.stderr.isatty() else None
        try:
            report = claude_logs_import(
                paths=[Path(path) for path in options["paths"]],
                customer=customer,
                workflow=workflow,
                project_customers=project_customers,
                since=since,
                progress=progress,
            )
        except FileNotFoundError as exc:
            raise CommandError(f"Path {exc.args[0]} not found.") from exc
        finally:
            if progress is not None:
                progress.close()
        if options["json"]:
            self.stdout.write(json.dumps(summary_json(report)))
            return
        for line in summary_lines(report):
            self.stdout.write(line)
        for problem in report.stats.errors[:20] + report.warnings[:20]:
            self.stderr.write(f"  warning: {problem}")


class ProgressBar:
    """A one-line progress display of files, lines and bytes read, for a terminal."""

    def __init__(self, stream):
        self.stream = stream
        self.started = time.monotonic()
        self.drawn_at = 0.0

    def __call__(self, stats: ReadStats) -> None:
        now = time.monotonic()
        if now - self.drawn_at < PROGRESS_INTERVAL_SECONDS:
            return
        self.drawn_at = now
        elapsed = max(now - self.started, 1e-9)
        megabytes = stats.bytes / 1_000_000
        self.stream.write(
            f"\r{stats.files} files, {stats.lines:,} lines, {megabytes:,.1f} MB "
            f"({megabytes / elapsed:,.1f} MB/s), {stats.malformed_lines} malformed"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.drawn_at:
            self.stream.write("\n")
            self.stream.flush()


def _project_customers(mappings: list[str]) -> dict[str, Customer]:
    result = {}
    for mapping in mappings:
        project, separator, slug = mapping.rpartition("=")
        if not separator or not project or not slug:
            raise CommandError(
                f"Invalid --map {mapping!r}: expected PROJECT=CUSTOMER, e.g. "
                "-home-me-shop=acme."
            )
        result[project] = get_by_slug(Customer, slug)
    return result


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    day = parse_date(value)
    if day is not None:
        return datetime.combine(day, day_start.min, tzinfo=UTC)
    try:
        moment = parse_datetime(value)
    except ValueError:
        moment = None
    if moment is None:
        raise CommandError(
            f"Invalid --since {value!r}: expected YYYY-MM-DD or an ISO 8601 "
            "date-time, e.g. 2026-11-01."
        )
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def summary_json(report: LogImport) -> dict:
    stats = report.stats
    unpriced = report.unpriced_models
    return {
        "type": "summary",
        "files": stats.files,
        "lines": stats.lines,
        "bytes": stats.bytes,
        "usage_lines": stats.usage_lines,
        "duplicate_lines": stats.duplicate_lines,
        "skipped_lines": stats.skipped_lines,
        "malformed_lines": stats.malformed_lines,
        "before_since": stats.before_since,
        "copied_responses": report.copied_responses,
        "api_messages": report.api_messages,
        "new_api_messages": report.new_messages,
        "cost_usd": None if unpriced else decimal_text(report.priced_cost_usd),
        "priced_cost_usd": decimal_text(report.priced_cost_usd),
        "unpriced_models": unpriced,
        "unattributed": report.unattributed,
        "errors": stats.errors,
        "warnings": report.warnings,
        "sessions": [
            {
                "session_id": session.session_id,
                "project": session.project,
                "execution_id": session.execution_id,
                "created": session.created,
                "status": session.status,
                "cost_usd": decimal_text(session.cost_usd),
                "priced_cost_usd": decimal_text(session.priced_cost_usd),
                "models": session.models,
                "unpriced_models": session.unpriced_models,
                "api_messages": session.api_messages,
                "new_api_messages": session.new_messages,
                "output_tokens": session.output_tokens,
                "error": session.error,
            }
            for session in report.sessions
        ],
    }


def summary_lines(report: LogImport) -> list[str]:
    stats = report.stats
    unpriced = report.unpriced_models
    cost = decimal_text(report.priced_cost_usd)
    if unpriced:
        cost = f"{cost} priced, more for unpriced models"
    lines = [
        f"Sessions: {len(report.sessions)} "
        f"({sum(1 for s in report.sessions if s.created)} new, "
        f"{sum(1 for s in report.sessions if s.error)} failed)",
        f"API messages: {report.api_messages} ({report.new_messages} new)",
        f"Cost (USD): {cost}",
        f"Unpriced models: {', '.join(unpriced) or 'none'}",
        f"Lines: {stats.lines} in {stats.files} files ({stats.usage_lines} with "
        f"usage, {stats.duplicate_lines} duplicate copies, {stats.skipped_lines} "
        f"without usage, {stats.malformed_lines} malformed)",
    ]
    if report.copied_responses:
        lines.append(
            f"Responses already recorded under another session: "
            f"{report.copied_responses}"
        )
    for project, files in sorted(report.unattributed.items()):
        lines.append(f"Not imported, no customer for project {project}: {files} files")
    for session in report.sessions:
        if session.error:
            lines.append(f"Session {session.session_id} failed: {session.error}")
    return lines
