from django.db import models


class Customer(models.Model):
    """A company that buys agent runs: the tenant every cost is attributed to."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        PAST_DUE = "past_due", "Past due"
        SUSPENDED = "suspended", "Suspended"
        CLOSED = "closed", "Closed"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.ACTIVE
    )
    created_at = models.DateTimeField(auto_now_add=True)
    stripe_customer_id = models.CharField(
        max_length=64,
        blank=True,
        help_text="Stripe's cus_… id, set when billing through Stripe.",
    )
    monthly_budget_usd = models.DecimalField(
        "monthly budget (USD)",
        max_digits=14,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="Monthly spend limit in USD. Empty means no limit.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name
