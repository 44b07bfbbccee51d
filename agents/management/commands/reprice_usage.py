from django.core.management.base import BaseCommand

from agents.pricing.reprice import reprice_unpriced


class Command(BaseCommand):
    help = (
        "Price stored API messages that have no cost yet, for example after a "
        "ModelPrice row was added for their model, and update their executions."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--model", help="Reprice only messages of this exact model id."
        )

    def handle(self, *args, **options):
        result = reprice_unpriced(model=options["model"])
        self.stdout.write(f"Messages repriced: {result.messages_repriced}")
        self.stdout.write(f"Messages still unpriced: {result.messages_still_unpriced}")
        self.stdout.write(f"Executions updated: {result.executions_updated}")
        if result.executions_running:
            self.stdout.write(
                f"Executions still running, left for later: {result.executions_running}. "
                "Run this command again once they finish."
            )
        if result.unpriced_models:
            self.stdout.write(
                "Models still without a price: " + ", ".join(result.unpriced_models)
            )
            self.stdout.write(
                "Add a ModelPrice row for each in the admin, then run this command again."
            )
