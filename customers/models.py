from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
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
        validators=[MinValueValidator(Decimal(0))],
        help_text=(
            "Hard spend limit per billing period in USD: runs that would go over "
            "it are rejected. Empty means the plan's default budget, or no limit."
        ),
    )
    monthly_soft_budget_usd = models.DecimalField(
        "monthly soft budget (USD)",
        max_digits=14,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text=(
            "Spend per billing period in USD above which staff are alerted. "
            "Runs go on. Empty means no soft budget."
        ),
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(monthly_budget_usd__gte=0)
                | models.Q(monthly_budget_usd__isnull=True),
                name="customer_budget_not_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(monthly_soft_budget_usd__gte=0)
                | models.Q(monthly_soft_budget_usd__isnull=True),
                name="customer_soft_budget_not_negative",
            ),
        ]

    def __str__(self):
        return self.name


class Membership(models.Model):
    """A portal user's place in one customer: each user belongs to one customer.

    The user who signs the customer up is its owner. Owners invite others,
    who join as members.
    """

    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        MEMBER = "member", "Member"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership"
    )
    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    email_verified_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the user opened the link sent to their email address.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["customer", "created_at"]

    def __str__(self):
        return f"{self.user} ({self.role} of {self.customer})"

    @property
    def is_owner(self) -> bool:
        return self.role == self.Role.OWNER


class Invitation(models.Model):
    """An emailed invitation to join a customer's portal, valid until `expires_at`.

    Only the SHA-256 digest of the token is stored. The token itself is in
    the link sent by email.
    """

    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="invitations"
    )
    email = models.EmailField()
    token_hash = models.CharField(
        max_length=64, unique=True, help_text="SHA-256 hex digest of the token."
    )
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.email} to {self.customer}"


class ApiKey(models.Model):
    """A secret that lets one customer's systems call the REST API.

    Only a SHA-256 hash of the key is stored; the key itself is shown once,
    when it is created. `prefix` is the key's first characters, which
    identify it in lists and logs without revealing the secret.
    """

    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(
        max_length=100, help_text="What the key is for, e.g. the calling system."
    )
    prefix = models.CharField(
        max_length=16,
        unique=True,
        help_text="First characters of the key, shown to tell keys apart.",
    )
    secret_hash = models.CharField(
        "secret hash", max_length=64, help_text="SHA-256 of the whole key, in hex."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Staff user who created the key. Empty when a command created it.",
    )
    last_used_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Last authenticated request, updated at most once a minute.",
    )
    revoked_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Set when the key was revoked; it no longer works.",
    )

    class Meta:
        verbose_name = "API key"
        ordering = ["customer", "-created_at"]

    def __str__(self):
        return f"{self.prefix}… ({self.name})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
