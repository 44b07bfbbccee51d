from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from agents.models import Workflow
from billing.models import Plan, Subscription
from billing.services import subscription_create
from customers.models import Customer, Membership
from customers.services import membership_create, membership_verify_email

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

# One plan of each billing model. Prices are demo figures, in USD.
PLANS = [
    {
        "slug": "demo-subscription",
        "name": "Demo subscription",
        "billing_model": Plan.BillingModel.SUBSCRIPTION,
        "monthly_price": Decimal("99.00"),
    },
    {
        "slug": "demo-usage",
        "name": "Demo usage-based",
        "billing_model": Plan.BillingModel.USAGE,
        "usage_pricing": Plan.UsagePricing.PER_EXECUTION,
        "price_per_execution": Decimal("0.50"),
    },
    {
        "slug": "demo-success-fee",
        "name": "Demo success fee",
        "billing_model": Plan.BillingModel.SUCCESS_FEE,
        "success_fee_kind": Plan.SuccessFeeKind.COMMISSION,
        "commission_percent": Decimal("2.0000"),
        "minimum_monthly_fee": Decimal("25.00"),
    },
    {
        "slug": "demo-hybrid",
        "name": "Demo hybrid",
        "billing_model": Plan.BillingModel.HYBRID,
        "monthly_price": Decimal("49.00"),
        "included_executions": 100,
        "overage_price": Decimal("0.40"),
    },
]

# Customer slug to plan slug.
SUBSCRIPTIONS = {"acme": "demo-hybrid", "globex": "demo-usage"}

DEMO_STAFF_USERNAME = "admin"
DEMO_STAFF_PASSWORD = "admin"
# A verified portal owner of acme, created in DEBUG only.
DEMO_PORTAL_EMAIL = "owner@acme.example"
DEMO_PORTAL_PASSWORD = "acme-demo"


class Command(BaseCommand):
    help = (
        "Create or update the demo customers, workflows and plans, and subscribe "
        "the demo customers; in DEBUG, also a staff user admin/admin and a "
        f"portal user {DEMO_PORTAL_EMAIL}/{DEMO_PORTAL_PASSWORD}. Safe to run again."
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
        self._seed_plans()
        self._seed_subscriptions()
        if settings.DEBUG:
            self._ensure_staff_user()
            self._ensure_portal_user()

    def _seed_plans(self):
        for values in PLANS:
            slug = values["slug"]
            plan = Plan.objects.filter(slug=slug).first() or Plan(slug=slug)
            created = plan.pk is None
            for name, value in values.items():
                setattr(plan, name, value)
            plan.full_clean()
            plan.save()
            self.stdout.write(f"plan {slug}: {'created' if created else 'updated'}")

    def _seed_subscriptions(self):
        """Subscribe each demo customer from the first day of this month, once.

        A customer that already has an open subscription keeps it, whatever
        its plan, because a plan change goes through its own service.
        """
        start = timezone.now().date().replace(day=1)
        for customer_slug, plan_slug in SUBSCRIPTIONS.items():
            customer = Customer.objects.get(slug=customer_slug)
            has_subscription = (
                Subscription.objects.filter(customer=customer)
                .exclude(status=Subscription.Status.CANCELED)
                .exists()
            )
            if not has_subscription:
                plan = Plan.objects.get(slug=plan_slug)
                subscription_create(customer=customer, plan=plan, start=start)
            outcome = "kept" if has_subscription else f"created on plan {plan_slug}"
            self.stdout.write(f"subscription {customer_slug}: {outcome}")

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

    def _ensure_portal_user(self):
        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(
            username=DEMO_PORTAL_EMAIL, defaults={"email": DEMO_PORTAL_EMAIL}
        )
        if created:
            user.set_password(DEMO_PORTAL_PASSWORD)
            user.save()
            membership = membership_create(
                user=user,
                customer=Customer.objects.get(slug="acme"),
                role=Membership.Role.OWNER,
            )
            membership_verify_email(membership=membership)
        self.stdout.write(
            f"portal user {DEMO_PORTAL_EMAIL}: {'created' if created else 'kept'} "
            f"(password '{DEMO_PORTAL_PASSWORD}' when created; development only)"
        )
