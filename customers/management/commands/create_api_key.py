"""Create an API key for a customer and print it once."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from customers.api_keys import api_key_create
from customers.models import Customer


class Command(BaseCommand):
    help = (
        "Create an API key for a customer and print it. The key is shown only "
        "this once; store it in the calling system's secrets."
    )

    def add_arguments(self, parser):
        parser.add_argument("--customer", required=True, help="Customer slug.")
        parser.add_argument(
            "--name", required=True, help="What the key is for, e.g. 'billing sync'."
        )

    def handle(self, *args, customer, name, **options):
        found = Customer.objects.filter(slug=customer).first()
        if found is None:
            raise CommandError(f"Customer {customer!r} not found.")
        try:
            api_key, key = api_key_create(customer=found, name=name)
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        self.stderr.write(
            f"API key {api_key.prefix} ({api_key.name}) created for {found.slug}. "
            "It is shown only once:"
        )
        self.stdout.write(key)
