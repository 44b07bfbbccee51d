from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from agents.jobs import execution_enqueue
from agents.management.lookup import get_by_slug
from agents.models import Workflow
from customers.models import Customer


class Command(BaseCommand):
    help = "Queue a workflow run for a customer on the Celery workers and print its execution id."

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
        self.stdout.write(str(execution.pk))
