from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from customers.models import Customer


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


# Plans, subscriptions and statements -----------------------------------
MONEY_DIGITS = {"max_digits": 12, "decimal_places": 2}
# Unit prices may be below a cent, e.g. $0.005 per execution.
UNIT_PRICE_DIGITS = {"max_digits": 14, "decimal_places": 6}


class Plan(models.Model):
    """What a customer pays: one of four billing models and its prices.

    Only the fields of the plan's billing model may be set, which
    `clean()` checks. The check constraints enforce the simple rules in
    the database too. All amounts are in the plan's currency.
    """

    class BillingModel(models.TextChoices):
        SUBSCRIPTION = "subscription", "Subscription"
        USAGE = "usage", "Usage-based"
        SUCCESS_FEE = "success_fee", "Success fee"
        HYBRID = "hybrid", "Hybrid"

    class UsagePricing(models.TextChoices):
        PER_EXECUTION = "per_execution", "Price per execution"
        COST_PLUS = "cost_plus", "Our token cost times a markup"

    class SuccessFeeKind(models.TextChoices):
        COMMISSION = "commission", "Commission on the outcome value"
        FIXED_FEE = "fixed_fee", "Fixed fee per successful outcome"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    currency = models.CharField(
        max_length=3, default="usd", help_text="ISO 4217 code, lower case."
    )
    is_active = models.BooleanField(
        default=True, help_text="Only active plans can be given to a subscription."
    )
    billing_model = models.CharField(max_length=20, choices=BillingModel.choices)

    monthly_price = models.DecimalField(
        null=True,
        blank=True,
        help_text="Subscription and hybrid plans: the fixed price of one period.",
        **MONEY_DIGITS,
    )

    usage_pricing = models.CharField(
        max_length=20, choices=UsagePricing.choices, blank=True
    )
    price_per_execution = models.DecimalField(
        null=True,
        blank=True,
        help_text="Usage-based plans priced per execution: price of one counted execution.",
        **UNIT_PRICE_DIGITS,
    )
    cost_markup = models.DecimalField(
        max_digits=8,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="Cost-plus plans: multiplier on our token cost, e.g. 1.5 charges cost plus 50%.",
    )

    success_fee_kind = models.CharField(
        max_length=20, choices=SuccessFeeKind.choices, blank=True
    )
    commission_percent = models.DecimalField(
        max_digits=7,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="Commission plans: percent of each succeeded execution's outcome value.",
    )
    fee_per_success = models.DecimalField(
        null=True,
        blank=True,
        help_text="Fixed-fee plans: fee per succeeded execution that has an outcome value.",
        **MONEY_DIGITS,
    )
    minimum_monthly_fee = models.DecimalField(
        null=True,
        blank=True,
        help_text="Success-fee plans: the least a period costs. Empty means no minimum.",
        **MONEY_DIGITS,
    )

    included_executions = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Hybrid plans: executions per period covered by the monthly price.",
    )
    overage_price = models.DecimalField(
        null=True,
        blank=True,
        help_text="Hybrid plans without tiers: price of each execution above the included ones.",
        **UNIT_PRICE_DIGITS,
    )
    overage_tiers = models.JSONField(
        default=list,
        blank=True,
        help_text=(
            "Hybrid plans, optional: graduated overage prices, replacing the overage "
            'price. A list like [{"up_to": 100, "unit_price": "0.50"}, {"up_to": null, '
            '"unit_price": "0.40"}], where up_to counts executions above the included '
            "ones and the last tier has no limit."
        ),
    )

    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(
                    billing_model__in=["subscription", "usage", "success_fee", "hybrid"]
                ),
                name="plan_billing_model_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(monthly_price__isnull=True)
                | models.Q(monthly_price__gte=0),
                name="plan_monthly_price_not_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(price_per_execution__isnull=True)
                | models.Q(price_per_execution__gte=0),
                name="plan_price_per_execution_not_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(cost_markup__isnull=True)
                | models.Q(cost_markup__gt=0),
                name="plan_cost_markup_positive",
            ),
            models.CheckConstraint(
                condition=models.Q(commission_percent__isnull=True)
                | models.Q(commission_percent__gt=0, commission_percent__lte=100),
                name="plan_commission_percent_range",
            ),
            models.CheckConstraint(
                condition=models.Q(fee_per_success__isnull=True)
                | models.Q(fee_per_success__gte=0),
                name="plan_fee_per_success_not_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(minimum_monthly_fee__isnull=True)
                | models.Q(minimum_monthly_fee__gte=0),
                name="plan_minimum_monthly_fee_not_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(overage_price__isnull=True)
                | models.Q(overage_price__gte=0),
                name="plan_overage_price_not_negative",
            ),
            models.CheckConstraint(
                condition=~models.Q(billing_model__in=["subscription", "hybrid"])
                | models.Q(monthly_price__isnull=False),
                name="plan_monthly_price_required",
            ),
        ]

    def __str__(self):
        return self.name

    def clean(self):
        from billing.plans import plan_validation_errors

        errors = plan_validation_errors(self)
        if errors:
            raise ValidationError(errors)


class Subscription(models.Model):
    """A customer's plan, billed in monthly periods anchored on `started_on`.

    A period runs from the anchor's day of one month to the same day of
    the next, or to the month's last day when it is shorter. So a
    subscription started on January 31 renews on February 28 (29 in a
    leap year), then March 31. `plan` is the latest plan chosen, but a
    change without proration takes effect at the next period, so read the
    plan of a given day with `billing.plans.plan_on`.
    """

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        PAST_DUE = "past_due", "Past due"
        CANCELED = "canceled", "Canceled"

    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.PROTECT, related_name="subscriptions"
    )
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.ACTIVE
    )
    started_on = models.DateField(
        help_text="First day, and the anchor of every period."
    )
    current_period_start = models.DateField()
    current_period_end = models.DateField(help_text="First day of the next period.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-started_on"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(
                    current_period_end__gt=models.F("current_period_start")
                ),
                name="subscription_period_not_empty",
            ),
            models.UniqueConstraint(
                fields=["customer"],
                condition=~models.Q(status="canceled"),
                name="one_open_subscription_per_customer",
            ),
        ]

    def __str__(self):
        return f"{self.customer} on {self.plan}"


class SubscriptionChange(models.Model):
    """One plan change of a subscription and, when prorated, its amounts.

    A prorated change takes effect on `effective_on`, the day it was made:
    the unused days of the old plan's monthly price are credited and the
    remaining days of the new plan's are charged. Otherwise it takes
    effect at the start of the next period.
    """

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="changes"
    )
    from_plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="+")
    to_plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="+")
    prorate = models.BooleanField()
    effective_on = models.DateField()
    period_start = models.DateField(
        help_text="Start of the period the change was made in."
    )
    period_end = models.DateField(help_text="End of the period the change was made in.")
    remaining_days = models.PositiveIntegerField(
        default=0, help_text="Prorated changes: days from the change to the period end."
    )
    proration_credit = models.DecimalField(
        default=Decimal(0),
        help_text="Unused part of the old plan's monthly price, a negative amount.",
        **MONEY_DIGITS,
    )
    proration_charge = models.DecimalField(
        default=Decimal(0),
        help_text="Remaining part of the new plan's monthly price.",
        **MONEY_DIGITS,
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["subscription", "effective_on", "id"]

    def __str__(self):
        return f"{self.from_plan} to {self.to_plan} on {self.effective_on}"


class PeriodStatement(models.Model):
    """The closed revenue, cost and margin of one customer's billing period.

    Written once by `statement_close_period` from the invoice preview and
    never changed afterwards.
    """

    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.PROTECT, related_name="statements"
    )
    period_start = models.DateField()
    period_end = models.DateField(help_text="First day after the period.")
    currency = models.CharField(max_length=3, default="usd")
    lines = models.JSONField(default=list)
    revenue_total = models.DecimalField(**MONEY_DIGITS)
    cost_total = models.DecimalField(
        help_text="Our recorded token cost of the executions created in the period.",
        **COST_DIGITS,
    )
    margin = models.DecimalField(help_text="Revenue minus cost.", **COST_DIGITS)
    margin_percent = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="Margin as a percent of revenue. Empty when revenue is zero.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-period_start", "customer"]
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "period_start", "period_end"],
                name="unique_statement_per_customer_period",
            ),
        ]

    def __str__(self):
        return f"{self.customer} {self.period_start} to {self.period_end}"


class CustomerMargin(Customer):
    """A customer seen through this month's revenue, cost and margin, in the admin."""

    class Meta:
        proxy = True
        verbose_name = "customer margin"
