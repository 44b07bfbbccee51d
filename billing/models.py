from decimal import Decimal

from django.conf import settings
from django.db import models


class Alert(models.Model):
    """Something staff must look at: a stalled run, a cost above a limit.

    `dedupe_key` makes raising the same alert twice a no-op: one alert per
    rule, subject and period.
    """

    class Kind(models.TextChoices):
        STALLED_EXECUTION = "stalled_execution", "Stalled execution"

    class Severity(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        CRITICAL = "critical", "Critical"

    kind = models.CharField(max_length=40, choices=Kind.choices)
    severity = models.CharField(
        max_length=16, choices=Severity.choices, default=Severity.WARNING
    )
    customer = models.ForeignKey(
        "customers.Customer",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="alerts",
    )
    execution = models.ForeignKey(
        "agents.Execution",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="alerts",
    )
    message = models.TextField()
    dedupe_key = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.get_kind_display()}: {self.message[:60]}"


# Rollups ---------------------------------------------------------------
# Same precision as agents.ApiMessage.cost_usd, so sums lose no digit.
COST_DIGITS = {"max_digits": 24, "decimal_places": 14}


class UsageFields(models.Model):
    """Usage figures shared by the daily and the monthly rollup rows.

    Token and cost figures come from the API messages that arrived in the
    period (UTC) and that `model` produced. Execution counts come from
    the executions created in the period that requested `model`, so the
    sum of `executions` over models counts each execution once.
    """

    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.CASCADE, related_name="+"
    )
    workflow = models.ForeignKey(
        "agents.Workflow", on_delete=models.CASCADE, related_name="+"
    )
    model = models.CharField(
        max_length=100,
        help_text="Model that produced the messages and that the executions requested.",
    )
    cost_usd = models.DecimalField(
        default=Decimal(0),
        help_text="Cost of the priced messages in USD. Unpriced messages add nothing.",
        **COST_DIGITS,
    )
    unpriced_messages = models.PositiveIntegerField(
        default=0, help_text="Messages whose model had no known price."
    )
    api_messages = models.PositiveIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_write_5m_tokens = models.BigIntegerField(default=0)
    cache_write_1h_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    web_search_requests = models.PositiveIntegerField(default=0)
    executions = models.PositiveIntegerField(
        default=0, help_text="Executions created, finished or not."
    )
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    interrupted = models.PositiveIntegerField(default=0)
    max_turns_reached = models.PositiveIntegerField(
        default=0, help_text="Executions stopped at their maximum number of turns."
    )
    budget_exceeded = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(
        auto_now=True, help_text="Last time a rollup run changed this row."
    )

    class Meta:
        abstract = True

    @property
    def cost_complete(self) -> bool:
        """Whether `cost_usd` is the whole cost, with no unpriced message."""
        return self.unpriced_messages == 0


class DailyUsage(UsageFields):
    """Usage of one customer, workflow and model on one UTC day."""

    day = models.DateField()

    class Meta:
        ordering = ["-day", "customer", "workflow", "model"]
        verbose_name_plural = "daily usage"
        constraints = [
            models.UniqueConstraint(
                fields=["day", "customer", "workflow", "model"],
                name="unique_daily_usage",
            ),
        ]
        indexes = [models.Index(fields=["customer", "day"])]

    def __str__(self):
        return f"{self.day} {self.customer_id}/{self.workflow_id}/{self.model}"


class MonthlyUsage(UsageFields):
    """Usage of one customer, workflow and model in one UTC calendar month.

    Always the sum of the month's DailyUsage rows, which a rollup run
    rewrites in the same transaction.
    """

    month = models.DateField(help_text="First day of the month.")

    class Meta:
        ordering = ["-month", "customer", "workflow", "model"]
        verbose_name_plural = "monthly usage"
        constraints = [
            models.UniqueConstraint(
                fields=["month", "customer", "workflow", "model"],
                name="unique_monthly_usage",
            ),
        ]
        indexes = [models.Index(fields=["customer", "month"])]

    def __str__(self):
        return f"{self.month:%Y-%m} {self.customer_id}/{self.workflow_id}/{self.model}"


class RollupCheckpoint(models.Model):
    """High-water mark of an incremental rollup over changes to its raw rows."""

    name = models.CharField(max_length=40, unique=True)
    high_water_mark = models.DateTimeField(
        null=True,
        blank=True,
        help_text=(
            "Start of the last completed run. The next run rescans changes made "
            "after this moment less an overlap. Empty means never run."
        ),
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"{self.name} up to {self.high_water_mark}"
