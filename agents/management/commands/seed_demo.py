from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from agents.models import Workflow
from customers.models import Customer

CUSTOMERS = [
    {
        "slug": "acme",
        "name": "Acme Corporation",
        "monthly_budget_usd": Decimal("500.00"),
    },
    {"slug": "globex", "name": "Globex Inc.", "monthly_budget_usd": None},
]

WORKFLOWS = [
    {
        "slug": "code-review",
        "name": "Code review",
        "model": "claude-sonnet-4-6",
        "prompt_template": "Review this change and list concrete problems:\n\n{prompt}",
        "max_turns": 8,
        "allowed_tools": ["Read", "Glob", "Grep"],
        "per_run_budget_usd": Decimal("2.00"),
    },
    {
        "slug": "classify",
        "name": "Ticket classification",
        "model": "claude-haiku-4-5",
        "prompt_template": "Classify this support ticket as bug, billing or question:\n\n{prompt}",
        "max_turns": 2,
        "allowed_tools": [],
        "per_run_budget_usd": Decimal("0.10"),
    },
    {
        "slug": "security-audit",
        "name": "Security audit",
        "model": "claude-opus-4-7",
        "prompt_template": "Audit this code for security issues:\n\n{prompt}",
        "max_turns": 12,
        "allowed_tools": ["Read", "Glob", "Grep"],
        "per_run_budget_usd": Decimal("10.00"),
    },
]

DEMO_STAFF_USERNAME = "admin"
DEMO_STAFF_PASSWORD = "admin"


class Command(BaseCommand):
    help = (
        "Create or update the demo customers and workflows; in DEBUG, also a "
        "staff user admin/admin. Safe to run again."
    )

    @transaction.atomic
    def handle(self, *args, **options):
        for values in CUSTOMERS:
            slug = values["slug"]
            _, created = Customer.objects.update_or_create(
                slug=slug, defaults={k: v for k, v in values.items() if k != "slug"}
            )
            self.stdout.write(f"customer {slug}: {'created' if created else 'updated'}")
        for values in WORKFLOWS:
            slug = values["slug"]
            _, created = Workflow.objects.update_or_create(
                slug=slug, defaults={k: v for k, v in values.items() if k != "slug"}
            )
            self.stdout.write(f"workflow {slug}: {'created' if created else 'updated'}")
        if settings.DEBUG:
            self._ensure_staff_user()

    def _ensure_staff_user(self):
        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(
            username=DEMO_STAFF_USERNAME,
            defaults={"is_staff": True, "is_superuser": True},
        )
        if created:
            user.set_password(DEMO_STAFF_PASSWORD)
            user.save()
        self.stdout.write(
            f"staff user {DEMO_STAFF_USERNAME}: {'created' if created else 'kept'} "
            "(password 'admin' when created; development only)"
        )
