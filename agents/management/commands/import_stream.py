import json
from datetime import UTC, datetime
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from agents.management.lookup import get_by_slug
from agents.models import Workflow
from agents.reporting import MessagePrinter, summary_lines
from agents.selectors import execution_summary
from agents.transcripts import TranscriptError, transcript_import
from customers.models import Customer


class Command(BaseCommand):
    help = (
        "Record an execution from a transcript written by "
        "`claude -p --output-format stream-json --verbose`. Importing the same "
        "transcript again changes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="Path of the stream-json transcript.")
        parser.add_argument("--customer", required=True, help="Customer slug.")
        parser.add_argument("--workflow", required=True, help="Workflow slug.")
        parser.add_argument(
            "--at",
            help="When the run happened (ISO 8601), which sets the prices used, "
            "overriding the timestamps of the transcript's lines. Default: each "
            "line's own timestamp, else the file's modification time.",
        )
        parser.add_argument(
            "--json", action="store_true", help="Print one JSON object per line."
        )

    def handle(self, *args, **options):
        customer = get_by_slug(Customer, options["customer"])
        workflow = get_by_slug(Workflow, options["workflow"])
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"Transcript {path} not found or not a file.")
        recorded_at = _recorded_at(options["at"], path)
        as_json = options["json"]
        print_update = MessagePrinter(self.stdout.write, as_json=as_json)

        try:
            report = transcript_import(
                customer=customer,
                workflow=workflow,
                path=path,
                recorded_at=recorded_at,
                line_timestamps=options["at"] is None,
                listener=print_update,
            )
        except TranscriptError as exc:
            raise CommandError(str(exc)) from exc
        summary = execution_summary(report.execution)
        summary["created"] = report.created
        summary["lines"] = report.lines
        summary["skipped_lines"] = report.skipped_lines
        if as_json:
            self.stdout.write(json.dumps({"type": "summary", **summary}))
            return
        self.stdout.write("\n".join(summary_lines(summary)))
        action = "recorded" if report.created else "already imported; topped up"
        self.stdout.write(
            f"  {action} from {report.lines} lines, {report.skipped_lines} skipped"
        )
        for error in report.errors[:20]:
            self.stderr.write(f"  warning: {error}")


def _recorded_at(value: str | None, path: Path) -> datetime:
    if value is None:
        return datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
    parsed = parse_datetime(value)
    if parsed is None:
        raise CommandError(
            f"--at {value!r} is not an ISO 8601 date-time, e.g. 2026-11-30T14:00:00Z."
        )
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
