from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from customers.models import Customer


class Alert(models.Model):
    """Something staff must look at: a stalled run, a cost above a limit.

    `dedupe_key` makes raising the same alert twice a no-op: one alert per
    rule, subject and period.
    """

    class Kind(models.TextChoices):
        STALLED_EXECUTION = "stalled_execution", "Stalled execution"
        PERIOD_COST = "period_cost", "Period cost above limit"
        EXECUTION_COST = "execution_cost", "Execution cost above limit"
        MARGIN = "margin", "Margin below level"
        PROJECTED_MARGIN = "projected_margin", "Projected margin below level"
        BUDGET_USED = "budget_used", "Budget used"
        SOFT_BUDGET = "soft_budget", "Soft budget reached"
        UNPRICED_USAGE = "unpriced_usage", "Unpriced usage"
        COST_DIFFERENCE = "cost_difference", "Cost differs from the SDK's"
        STALLED_EXECUTIONS = "stalled_executions", "Stalled executions"
        STRIPE_LATE_USAGE = "stripe_late_usage", "Usage too old for Stripe"
        STRIPE_METERING_FAILED = "stripe_metering_failed", "Stripe metering failed"
        STRIPE_PAYMENT_FAILED = "stripe_payment_failed", "Stripe payment failed"
        STRIPE_RECONCILIATION = "stripe_reconciliation", "Stripe usage differs"
        STRIPE_WEBHOOK_FAILED = "stripe_webhook_failed", "Stripe event unprocessable"
        ANTHROPIC_VARIANCE = "anthropic_variance", "Cost differs from Anthropic's"

    class Severity(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        CRITICAL = "critical", "Critical"

    class DeliveryStatus(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        NOT_CONFIGURED = "not_configured", "Not configured"

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
    rule = models.ForeignKey(
        "billing.AlertRule",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="alerts",
        help_text="The rule that fired. Empty for alerts raised without a rule.",
    )
    period_start = models.DateField(
        null=True,
        blank=True,
        help_text="First day of the customer's billing period the rule fired in.",
    )
    email_status = models.CharField(
        max_length=16,
        choices=DeliveryStatus.choices,
        default=DeliveryStatus.PENDING,
    )
    webhook_status = models.CharField(
        max_length=16,
        choices=DeliveryStatus.choices,
        default=DeliveryStatus.PENDING,
    )
    delivery_attempts = models.PositiveIntegerField(default=0)
    last_delivery_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # A rule fires once per customer and billing period, however
            # many processes see the crossing at the same moment.
            models.UniqueConstraint(
                fields=["rule", "customer", "period_start"],
                condition=models.Q(rule__isnull=False),
                name="unique_alert_per_rule_customer_period",
            ),
        ]

    def __str__(self):
        return f"{self.get_kind_display()}: {self.message[:60]}"


class AlertRule(models.Model):
    """A condition on a customer's costs that raises an Alert when it becomes true.

    A rule without a customer is a global default. A customer's own rules
    of a kind replace every global rule of that kind for that customer, so
    an inactive override silences the kind for the customer.
    """

    class Kind(models.TextChoices):
        PERIOD_COST = "period_cost", "Period cost above (USD)"
        EXECUTION_COST = "execution_cost", "Single execution cost above (USD)"
        MARGIN = "margin", "Margin to date below (percent)"
        PROJECTED_MARGIN = "projected_margin", "Projected margin below (percent)"
        BUDGET_USED = "budget_used", "Budget used at or above (percent)"
        SOFT_BUDGET = "soft_budget", "Soft budget reached"
        UNPRICED_USAGE = "unpriced_usage", "Unpriced usage present"
        COST_DIFFERENCE = (
            "cost_difference",
            "Cost differs from the SDK's by more than (percent)",
        )
        STALLED_EXECUTIONS = (
            "stalled_executions",
            "Stalled executions at or above (count)",
        )

    # Kinds that fire without a threshold.
    KINDS_WITHOUT_THRESHOLD = frozenset({Kind.SOFT_BUDGET, Kind.UNPRICED_USAGE})

    kind = models.CharField(max_length=40, choices=Kind.choices)
    customer = models.ForeignKey(
        "customers.Customer",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="alert_rules",
        help_text="Empty for a global default that applies to every customer.",
    )
    threshold = models.DecimalField(
        max_digits=14,
        decimal_places=4,
        null=True,
        blank=True,
        help_text=(
            "USD for cost rules, percent for margin, budget and cost-difference "
            "rules, a count for stalled executions. Empty for soft-budget and "
            "unpriced-usage rules."
        ),
    )
    severity = models.CharField(
        max_length=16, choices=Alert.Severity.choices, default=Alert.Severity.WARNING
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["kind", "customer", "threshold"]
        # One rule per kind, scope and threshold. Four partial constraints
        # rather than NULLS NOT DISTINCT, which SQLite lacks.
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "customer", "threshold"],
                condition=models.Q(customer__isnull=False, threshold__isnull=False),
                name="unique_customer_alert_rule",
            ),
            models.UniqueConstraint(
                fields=["kind", "customer"],
                condition=models.Q(customer__isnull=False, threshold__isnull=True),
                name="unique_customer_alert_rule_no_threshold",
            ),
            models.UniqueConstraint(
                fields=["kind", "threshold"],
                condition=models.Q(customer__isnull=True, threshold__isnull=False),
                name="unique_global_alert_rule",
            ),
            models.UniqueConstraint(
                fields=["kind"],
                condition=models.Q(customer__isnull=True, threshold__isnull=True),
                name="unique_global_alert_rule_no_threshold",
            ),
        ]

    def __str__(self):
        scope = self.customer.slug if self.customer_id else "all customers"
        if self.threshold is None:
            return f"{self.get_kind_display()} ({scope})"
        return f"{self.get_kind_display()} {self.threshold.normalize():f} ({scope})"

    def clean(self):
        if self.kind in self.KINDS_WITHOUT_THRESHOLD:
            if self.threshold is not None:
                raise ValidationError(
                    {"threshold": "This kind of rule takes no threshold."}
                )
        elif self.threshold is None:
            raise ValidationError({"threshold": "This kind of rule needs a threshold."})


class BudgetReservation(models.Model):
    """The worst-case cost of one execution, held against its customer's budget.

    Taken atomically when the execution is admitted and released when it
    finishes; from then on the execution's recorded cost counts instead.
    """

    execution = models.OneToOneField(
        "agents.Execution",
        on_delete=models.CASCADE,
        related_name="budget_reservation",
    )
    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.CASCADE, related_name="+"
    )
    amount_usd = models.DecimalField(
        "amount (USD)",
        help_text="The per-run budget of the workflow, or the configured default.",
        # The precision of agents.Execution.cost_usd.
        max_digits=24,
        decimal_places=14,
    )
    budget_usd = models.DecimalField(
        "budget (USD)",
        max_digits=14,
        decimal_places=2,
        help_text="The customer's hard budget when the reservation was taken.",
    )
    period_start = models.DateField()
    period_end = models.DateField(help_text="First day after the period.")
    created_at = models.DateTimeField(auto_now_add=True)
    released_at = models.DateTimeField(null=True, blank=True, db_index=True)
    actual_cost_usd = models.DecimalField(
        "actual cost (USD)",
        null=True,
        blank=True,
        help_text="The execution's recorded cost when the reservation was released.",
        max_digits=24,
        decimal_places=14,
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["customer", "released_at"])]

    def __str__(self):
        return f"{self.amount_usd} for execution {self.execution_id}"

    @property
    def held(self) -> bool:
        return self.released_at is None


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

    stripe_product_id = models.CharField(
        max_length=64,
        blank=True,
        help_text="Stripe's prod_… id, set by stripe_sync_plans.",
    )
    stripe_price_id = models.CharField(
        max_length=64,
        blank=True,
        help_text="Stripe's price_… id of the monthly price, set by stripe_sync_plans.",
    )
    stripe_meter_id = models.CharField(
        max_length=64,
        blank=True,
        help_text="Stripe's billing meter (mtr_…) of metered plans, set by stripe_sync_plans.",
    )
    stripe_meter_event_name = models.CharField(
        max_length=100,
        blank=True,
        help_text="Event name of the plan's Stripe meter. Fixed once the meter exists.",
    )
    stripe_metered_price_id = models.CharField(
        max_length=64,
        blank=True,
        help_text="Stripe's price_… id of the usage price on the meter.",
    )

    default_monthly_budget_usd = models.DecimalField(
        "default monthly budget (USD)",
        max_digits=14,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text=(
            "Hard spend limit per billing period for subscribers whose own "
            "monthly budget is empty. Empty means no limit."
        ),
    )

    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(default_monthly_budget_usd__isnull=True)
                | models.Q(default_monthly_budget_usd__gte=0),
                name="plan_default_budget_not_negative",
            ),
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
    cancel_at_period_end = models.BooleanField(
        default=False,
        help_text="Canceled by the customer; stays active until `ended_on`.",
    )
    ended_on = models.DateField(
        null=True,
        blank=True,
        help_text=(
            "Day the subscription stops: usage from this day on is not billed "
            "and no period starting on or after it is invoiced."
        ),
    )
    stripe_subscription_id = models.CharField(
        max_length=64,
        blank=True,
        help_text="Stripe's sub_… id, once created in Stripe.",
    )
    stripe_status = models.CharField(
        max_length=32,
        blank=True,
        help_text="Status of the Stripe subscription, from its latest webhook event.",
    )
    stripe_event_created = models.BigIntegerField(
        null=True,
        blank=True,
        help_text=(
            "Creation time (Unix seconds) of the latest Stripe event applied. Older "
            "events that arrive later are ignored."
        ),
    )
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


class PeriodRevenue(models.Model):
    """The invoice preview total of a customer's billing period, as last computed.

    Revenue depends on the plan's rules, so SQL cannot compute it from the
    rollup tables alone. The roll-up job and every subscription change
    refresh these rows, and the customer margin list reads them beside
    the rolled-up cost, so both can be sorted and filtered in SQL.
    """

    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.CASCADE, related_name="+"
    )
    period_start = models.DateField()
    period_end = models.DateField(help_text="First day after the period.")
    currency = models.CharField(max_length=3, default="usd")
    revenue = models.DecimalField(**MONEY_DIGITS)
    computed_at = models.DateTimeField()

    class Meta:
        ordering = ["-period_start", "customer"]
        verbose_name_plural = "period revenue"
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "period_start"],
                name="unique_period_revenue",
            ),
        ]

    def __str__(self):
        return (
            f"{self.customer} {self.period_start} to {self.period_end}: {self.revenue}"
        )


class CustomerMargin(Customer):
    """A customer seen through this month's revenue, cost and margin, in the admin."""

    class Meta:
        proxy = True
        verbose_name = "customer margin"


# Stripe ------------------------------------------------------------------
# Meter event values: cents of token cost carry the cost's 14 decimal places
# less the two that the conversion to cents uses.
METER_VALUE_DIGITS = {"max_digits": 26, "decimal_places": 12}


class MeterEventDelivery(models.Model):
    """The Stripe meter event of one counted execution, and whether Stripe has it.

    `identifier` is derived from the execution id and never changes, so
    sending the event again can never bill it twice: Stripe rejects a
    repeated identifier as a duplicate, which counts as delivered.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        EXCEPTION = "exception", "Exception: bill by hand"

    execution = models.OneToOneField(
        "agents.Execution",
        on_delete=models.PROTECT,
        related_name="meter_event_delivery",
    )
    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.PROTECT, related_name="+"
    )
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="+")
    identifier = models.CharField(max_length=100, unique=True)
    event_name = models.CharField(max_length=100)
    stripe_customer_id = models.CharField(max_length=64)
    value = models.DecimalField(
        help_text="Executions for per-execution plans, cents of token cost for cost-plus.",
        **METER_VALUE_DIGITS,
    )
    timestamp = models.DateTimeField(
        help_text="When the execution finished: the time Stripe bills it at."
    )
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING
    )
    attempts = models.PositiveIntegerField(
        default=0, help_text="Requests sent to Stripe, retries included."
    )
    last_error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-timestamp"]
        verbose_name_plural = "meter event deliveries"
        indexes = [models.Index(fields=["status", "timestamp"])]

    def __str__(self):
        return f"{self.identifier} ({self.status})"


class MeteringException(MeterEventDelivery):
    """A meter event that Stripe will not take, for staff to bill by hand."""

    class Meta:
        proxy = True
        verbose_name = "metering exception"


class StripeWebhookEvent(models.Model):
    """A Stripe webhook event as received, stored before it is processed."""

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        PROCESSED = "processed", "Processed"
        IGNORED = "ignored", "Ignored: no handler or unknown object"
        FAILED = "failed", "Failed"

    event_id = models.CharField(max_length=64, unique=True)
    type = models.CharField(max_length=100, db_index=True)
    created = models.BigIntegerField(help_text="Stripe's creation time, Unix seconds.")
    livemode = models.BooleanField(default=False)
    payload = models.JSONField()
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.RECEIVED
    )
    error = models.TextField(blank=True, help_text="Traceback of the last failure.")
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]

    def __str__(self):
        return f"{self.event_id} {self.type}"


class StripeInvoice(models.Model):
    """A read-only mirror of a Stripe invoice, kept up to date by webhooks.

    Amounts are integers in the currency's minor unit, as Stripe sends them.
    """

    stripe_id = models.CharField(max_length=64, unique=True)
    customer = models.ForeignKey(
        "customers.Customer",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="stripe_invoices",
    )
    stripe_customer_id = models.CharField(max_length=64, blank=True)
    stripe_subscription_id = models.CharField(max_length=64, blank=True)
    number = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=32, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    total = models.BigIntegerField(default=0)
    amount_due = models.BigIntegerField(default=0)
    amount_paid = models.BigIntegerField(default=0)
    amount_remaining = models.BigIntegerField(default=0)
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)
    hosted_invoice_url = models.URLField(max_length=500, blank=True)
    stripe_created = models.BigIntegerField(
        null=True, blank=True, help_text="Stripe's creation time, Unix seconds."
    )
    stripe_event_created = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Creation time of the latest Stripe event applied, Unix seconds.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-stripe_created"]

    def __str__(self):
        return self.number or self.stripe_id


class StripeInvoiceItem(models.Model):
    """A success fee line of a closed period, sent to Stripe as an invoice item."""

    statement = models.ForeignKey(
        PeriodStatement, on_delete=models.PROTECT, related_name="stripe_invoice_items"
    )
    line_kind = models.CharField(max_length=40)
    description = models.CharField(max_length=300)
    amount = models.DecimalField(**MONEY_DIGITS)
    currency = models.CharField(max_length=3)
    stripe_invoice_item_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["statement", "line_kind"],
                name="unique_stripe_invoice_item_per_line",
            ),
        ]

    def __str__(self):
        return f"{self.statement}: {self.line_kind} {self.amount}"


class ReconciliationDifference(models.Model):
    """A period whose metered usage in Stripe differs from our own count."""

    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.CASCADE, related_name="+"
    )
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="+")
    stripe_meter_id = models.CharField(max_length=64)
    period_start = models.DateField()
    period_end = models.DateField(help_text="First day after the period.")
    checked_until = models.DateTimeField(
        help_text="End of the compared time range; usage after it is not compared."
    )
    expected = models.DecimalField(
        help_text="Our count: the meter values of the counted executions.",
        **METER_VALUE_DIGITS,
    )
    stripe_value = models.DecimalField(
        help_text="Sum from Stripe's meter event summaries.", **METER_VALUE_DIGITS
    )
    difference = models.DecimalField(
        help_text="Stripe's value minus ours.", **METER_VALUE_DIGITS
    )
    resolved_at = models.DateTimeField(
        null=True, blank=True, help_text="When a later check found both equal."
    )
    checked_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-checked_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "stripe_meter_id", "period_start"],
                name="unique_reconciliation_difference",
            ),
        ]

    def __str__(self):
        return f"{self.customer} {self.period_start}: {self.difference}"


# Reconciliation with Anthropic's usage and cost reports -------------------


class AnthropicAccount(models.Model):
    """An Anthropic API key or workspace whose usage belongs to one customer.

    Anthropic's reports group usage by API key and by workspace. A report row
    goes to the customer of its API key when the key is mapped, else to the
    customer of its workspace. Other rows are unmapped.
    """

    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="anthropic_accounts"
    )
    api_key_id = models.CharField(
        "API key id",
        max_length=100,
        blank=True,
        help_text="Tagged API key id as Anthropic's reports name it, e.g. "
        "apikey_01AbC. Leave empty to map a workspace.",
    )
    workspace_id = models.CharField(
        max_length=100,
        blank=True,
        help_text="Tagged workspace id, e.g. wrkspc_01AbC. Leave empty to map an "
        "API key.",
    )
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["customer", "api_key_id", "workspace_id"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    (models.Q(api_key_id="") & ~models.Q(workspace_id=""))
                    | (~models.Q(api_key_id="") & models.Q(workspace_id=""))
                ),
                name="anthropic_account_key_or_workspace",
            ),
            models.UniqueConstraint(
                fields=["api_key_id"],
                condition=~models.Q(api_key_id=""),
                name="unique_anthropic_api_key",
            ),
            models.UniqueConstraint(
                fields=["workspace_id"],
                condition=~models.Q(workspace_id=""),
                name="unique_anthropic_workspace",
            ),
        ]

    def __str__(self):
        return f"{self.api_key_id or self.workspace_id} -> {self.customer}"


class AnthropicComparison(models.Model):
    """Our recorded cost of one UTC day, customer and model beside Anthropic's.

    Rows are rewritten each time the day is reconciled. Our recorded costs
    are never changed by a reconciliation.
    """

    day = models.DateField(db_index=True)
    customer = models.ForeignKey(
        Customer,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="anthropic_comparisons",
        help_text="Empty for usage on keys and workspaces mapped to no customer, "
        "and our usage of customers with no mapping.",
    )
    model = models.CharField(
        max_length=100, help_text="Model family, e.g. claude-sonnet-4-5."
    )
    our_cost_usd = models.DecimalField(
        "our cost (USD)",
        help_text="Recorded cost of the day's API messages; priced messages only.",
        **COST_DIGITS,
    )
    their_cost_usd = models.DecimalField(
        "Anthropic's cost (USD)",
        help_text="Cost in Anthropic's cost report, after discounts.",
        **COST_DIGITS,
    )
    their_list_cost_usd = models.DecimalField(
        "Anthropic's list cost (USD)",
        help_text="Cost in Anthropic's cost report at list prices.",
        **COST_DIGITS,
    )
    difference_usd = models.DecimalField(
        "difference (USD)", help_text="Our cost minus Anthropic's.", **COST_DIGITS
    )
    difference_percent = models.DecimalField(
        max_digits=14,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="Difference as a percentage of Anthropic's cost; empty when "
        "Anthropic reports no cost.",
    )
    our_prompt_tokens = models.BigIntegerField(
        default=0, help_text="Input, cache write and cache read tokens we recorded."
    )
    their_prompt_tokens = models.BigIntegerField(
        default=0, help_text="Input, cache write and cache read tokens reported."
    )
    our_output_tokens = models.BigIntegerField(default=0)
    their_output_tokens = models.BigIntegerField(default=0)
    our_unpriced_messages = models.PositiveIntegerField(
        default=0, help_text="Our messages of a model with no price, not in our cost."
    )
    above_threshold = models.BooleanField(
        default=False, help_text="The difference is above the alert threshold."
    )
    compared_at = models.DateTimeField()

    class Meta:
        ordering = ["-day", "customer", "model"]
        constraints = [
            models.UniqueConstraint(
                fields=["day", "customer", "model"],
                nulls_distinct=False,
                name="unique_anthropic_comparison",
            ),
        ]

    def __str__(self):
        return f"{self.day} {self.customer or 'unmapped'} {self.model}"
