import time

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from agents.jobs import execution_enqueue
from agents.management.lookup import get_by_slug
from agents.models import ApiMessage, Workflow
from agents.reporting import message_line, row_records, summary_lines
from agents.selectors import execution_summary
from customers.models import Customer

POLL_SECONDS = 0.25


class Command(BaseCommand):
    help = (
        "Queue a workflow run for a customer on the Celery workers and print its "
        "execution id. With --wait, follow the run to its end instead."
    )

    def add_arguments(self, parser):
        parser.add_argument("prompt", help="Input for the workflow's prompt template.")
        parser.add_argument("--customer", required=True, help="Customer slug.")
        parser.add_argument("--workflow", required=True, help="Workflow slug.")
        parser.add_argument(
            "--model", help="Model id to request instead of the workflow's."
        )
        parser.add_argument(
            "--max-turns", type=int, help="Turn limit instead of the workflow's."
        )
        parser.add_argument(
            "--wait",
            action="store_true",
            help="Follow the execution: print each API message once recorded, then the summary.",
        )
        parser.add_argument(
            "--wait-timeout",
            type=float,
            default=600,
            help="Seconds --wait follows the execution before giving up (default 600).",
        )

    def handle(self, *args, **options):
        customer = get_by_slug(Customer, options["customer"])
        workflow = get_by_slug(Workflow, options["workflow"])
        try:
            execution = execution_enqueue(
                customer=customer,
                workflow=workflow,
                prompt=options["prompt"],
                model=options["model"],
                max_turns=options["max_turns"],
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        except OSError as exc:
            # kombu raises OperationalError, an OSError, when the broker is down.
            raise CommandError(
                f"The execution could not be queued: broker unreachable ({exc})."
            ) from exc
        if not options["wait"]:
            # The id alone, for scripts.
            self.stdout.write(str(execution.pk))
            return
        self.stdout.write(
            f"Execution {execution.pk}: queued {workflow.slug} for {customer.slug}; "
            "following it until it finishes."
        )
        self._follow(execution, options["wait_timeout"])

    def _follow(self, execution, timeout):
        """Print recorded messages as they appear, by polling the database."""
        printed = set()
        deadline = time.monotonic() + timeout
        while True:
            execution.refresh_from_db()
            finished = execution.is_finished
            rows = list(
                ApiMessage.objects.filter(execution=execution).order_by("sequence")
            )
            for row, record in zip(rows, row_records(rows), strict=True):
                if row.pk not in printed and (row.output_final or finished):
                    printed.add(row.pk)
                    self.stdout.write(message_line(record))
            if finished:
                break
            if time.monotonic() > deadline:
                raise CommandError(
                    f"Execution {execution.pk} is still {execution.status} after {timeout:g} s; "
                    "is a worker running (make worker)?"
                )
            time.sleep(POLL_SECONDS)
        self.stdout.write("\n".join(summary_lines(execution_summary(execution))))
