import json

from django.core.management.base import BaseCommand, CommandError

from agents.models import ApiMessage, Execution
from agents.reporting import message_json, message_line, row_records, summary_lines
from agents.selectors import execution_summary


class Command(BaseCommand):
    help = "Print an execution's summary and its API messages."

    def add_arguments(self, parser):
        parser.add_argument("execution_id", type=int, help="Execution id.")
        parser.add_argument(
            "--json",
            action="store_true",
            help="Print one JSON object per API message, then the summary (run_agent --json keys).",
        )

    def handle(self, *args, **options):
        try:
            execution = Execution.objects.select_related("customer", "workflow").get(
                pk=options["execution_id"]
            )
        except Execution.DoesNotExist:
            raise CommandError(
                f"Execution {options['execution_id']} not found."
            ) from None
        summary = execution_summary(execution)
        rows = ApiMessage.objects.filter(execution=execution).order_by("sequence")
        if options["json"]:
            for record in row_records(rows.iterator()):
                self.stdout.write(message_json(record))
            self.stdout.write(json.dumps({"type": "summary", **summary}))
            return
        self.stdout.write("\n".join(summary_lines(summary)))
        if not rows.exists():
            self.stdout.write("  no API messages recorded")
        for record in row_records(rows.iterator()):
            self.stdout.write("  " + message_line(record))
