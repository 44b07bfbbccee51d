import json
import signal

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from agents.management.lookup import get_by_slug
from agents.models import Workflow
from agents.reporting import MessagePrinter, summary_lines
from agents.runner import RunnerConfigurationError, resolve_target, run_execution
from agents.selectors import execution_summary
from agents.services import execution_create
from customers.models import Customer


class Command(BaseCommand):
    help = (
        "Run a workflow for a customer now, printing each API message as it "
        "arrives and a summary at the end."
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
            "--timeout",
            type=float,
            help="Seconds without a result before the run is interrupted "
            "(default AGENTMARGIN_RUN_TIMEOUT_SECONDS).",
        )
        parser.add_argument(
            "--json", action="store_true", help="Print one JSON object per line."
        )

    def handle(self, *args, **options):
        if options["timeout"] is not None and options["timeout"] <= 0:
            raise CommandError(
                f"--timeout must be a positive number of seconds, not {options['timeout']:g}."
            )
        customer = get_by_slug(Customer, options["customer"])
        workflow = get_by_slug(Workflow, options["workflow"])
        try:
            target = resolve_target()
        except RunnerConfigurationError as exc:
            raise CommandError(str(exc)) from exc
        try:
            execution = execution_create(
                customer=customer,
                workflow=workflow,
                prompt=options["prompt"],
                model=options["model"],
                max_turns=options["max_turns"],
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc

        as_json = options["json"]
        if not as_json:
            self.stdout.write(
                f"Execution {execution.pk}: {workflow.slug} for {customer.slug} "
                f"on {execution.requested_model}, against {target.description}"
            )
        print_update = MessagePrinter(self._write_line, as_json=as_json)

        # SIGTERM ends the run like Ctrl-C: the CLI is stopped and the
        # execution closed as interrupted with what it recorded.
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            run_execution(
                execution,
                target=target,
                listener=print_update,
                timeout_seconds=options["timeout"],
            )
        finally:
            signal.signal(signal.SIGTERM, previous)
        summary = execution_summary(execution)
        if as_json:
            self.stdout.write(json.dumps({"type": "summary", **summary}))
        else:
            self.stdout.write("\n".join(summary_lines(summary)))

    def _write_line(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)
