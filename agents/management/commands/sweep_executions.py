from django.core.management.base import BaseCommand

from agents.jobs import sweep_executions


class Command(BaseCommand):
    help = (
        "Mark running executions whose worker stopped sending heartbeats as "
        "interrupted, and send waiting executions to the workers again."
    )

    def handle(self, *args, **options):
        result = sweep_executions()
        if result.interrupted:
            ids = ", ".join(str(pk) for pk in result.interrupted)
            self.stdout.write(
                f"Interrupted {len(result.interrupted)} stalled executions: {ids}"
            )
        else:
            self.stdout.write("No stalled executions.")
        self.stdout.write(f"Sent {result.dispatched} queued executions to the workers.")
