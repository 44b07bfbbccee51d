from django.core.management.base import BaseCommand

from agents.pricing.reprice import reprice_unpriced
from agents.selectors import prices_starting_late


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
        if not result.unpriced_models:
            return
        late = prices_starting_late(list(result.unpriced_models))
        late_models = {model for model, _, _ in late}
        for model, first_start, first_unpriced in late:
            self.stdout.write(
                f"{model}: its ModelPrice rows start at {first_start.isoformat()}, "
                f"after its first unpriced message ({first_unpriced.isoformat()}). "
                "Set valid_from at or before that message, then run this command again."
            )
        missing = [
            model for model in result.unpriced_models if model not in late_models
        ]
        if missing:
            self.stdout.write("Models still without a price: " + ", ".join(missing))
            self.stdout.write(
                "Add a ModelPrice row for each in the admin, then run this command again."
            )
