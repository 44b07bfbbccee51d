"""Create or update the Stripe products, prices and meters of our plans."""

import stripe
from django.core.management.base import BaseCommand, CommandError

from billing.stripe import jobs


class Command(BaseCommand):
    help = (
        "Create or update, idempotently, a Stripe product per plan, its prices "
        "and, for hybrid and usage-based plans, a billing meter. Stores the "
        "Stripe ids on the plans. Does nothing when STRIPE_API_KEY is empty."
    )

    def handle(self, *args, **options):
        try:
            result = jobs.plans_sync()
        except stripe.StripeError as error:
            raise CommandError(f"Stripe request failed: {error}") from error
        if result is None:
            self.stdout.write(
                "Stripe is off (STRIPE_API_KEY is empty); nothing synced."
            )
            return
        self.stdout.write(
            f"Stripe objects: {result.created} created, {result.updated} updated, "
            f"{result.unchanged} unchanged."
        )
