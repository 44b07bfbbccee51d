"""Input and output serializers of the billing endpoints.

Money is sent as decimal strings, never as JSON numbers.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing.models import Alert, Plan
from billing.plans import PRICING_FIELDS

# ASCII digits only: \d would also take other scripts' digits.
MONTH_PATTERN = re.compile(r"([0-9]{4})-([0-9]{2})")
FIRST_YEAR = 2000
LAST_YEAR = 2999


def parse_month(value: str) -> date:
    """Return the first day of the month `YYYY-MM`; raise ValidationError if invalid."""
    match = MONTH_PATTERN.fullmatch(value)
    if match:
        year, month = int(match[1]), int(match[2])
        if FIRST_YEAR <= year <= LAST_YEAR and 1 <= month <= 12:
            return date(year, month, 1)
    raise serializers.ValidationError(
        f"Invalid period {value[:20]!r}: expected a month as YYYY-MM, "
        f"from {FIRST_YEAR}-01 to {LAST_YEAR}-12."
    )


class MonthField(serializers.CharField):
    """A month as `YYYY-MM`, validated to the date of its first day."""

    def to_internal_value(self, data):
        return parse_month(super().to_internal_value(data))


class PeriodQuerySerializer(serializers.Serializer):
    period = MonthField(
        required=False,
        help_text="Month as YYYY-MM. Empty means the current billing period.",
    )


class LineSerializer(serializers.Serializer):
    kind = serializers.CharField()
    description = serializers.CharField()
    quantity = serializers.CharField(help_text="Decimal string.")
    unit_amount = serializers.CharField(help_text="Decimal string.")
    amount = serializers.CharField(help_text="Decimal string, rounded to cents.")


class ExecutionCountsSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    interrupted = serializers.IntegerField()
    max_turns = serializers.IntegerField()
    budget_exceeded = serializers.IntegerField()
    queued = serializers.IntegerField()
    running = serializers.IntegerField()


class UsageSerializer(serializers.Serializer):
    period = serializers.SerializerMethodField(help_text="Month the period starts in.")
    period_start = serializers.DateField()
    period_end = serializers.DateField(help_text="First day after the period.")
    closed = serializers.BooleanField(help_text="The period's statement is final.")
    currency = serializers.CharField()
    plan = serializers.SerializerMethodField(
        help_text="Slug of the plan that bills the period's end, if any."
    )
    executions = ExecutionCountsSerializer(
        help_text="Executions created in the period."
    )
    billed_executions = serializers.IntegerField(
        help_text="Succeeded executions, the ones plans bill."
    )
    included_executions = serializers.IntegerField(
        allow_null=True, help_text="Executions the hybrid plan's price includes."
    )
    overage_executions = serializers.IntegerField()
    lines = LineSerializer(many=True)
    total = serializers.DecimalField(max_digits=20, decimal_places=2)
    projected_total = serializers.DecimalField(
        max_digits=20,
        decimal_places=2,
        allow_null=True,
        help_text="Estimate of the total at the period end, at the run rate so far.",
    )

    def get_period(self, usage) -> str:
        return f"{usage.period_start:%Y-%m}"

    def get_plan(self, usage) -> str | None:
        return usage.plan.slug if usage.plan else None


class PlanSerializer(serializers.ModelSerializer):
    current = serializers.SerializerMethodField(
        help_text="The calling customer's subscription is on this plan."
    )

    class Meta:
        model = Plan
        fields = [
            "slug",
            "name",
            "billing_model",
            "currency",
            *PRICING_FIELDS,
            "current",
        ]
        read_only_fields = fields

    def get_current(self, plan) -> bool:
        return plan.pk == self.context.get("current_plan_id")


class StripeInvoiceSummarySerializer(serializers.Serializer):
    number = serializers.CharField()
    status = serializers.CharField()
    currency = serializers.CharField()
    amount_due = serializers.IntegerField(help_text="In the currency's minor unit.")
    amount_paid = serializers.IntegerField(help_text="In the currency's minor unit.")
    hosted_invoice_url = serializers.CharField()


class InvoiceSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    period_start = serializers.DateField()
    period_end = serializers.DateField(help_text="First day after the period.")
    currency = serializers.CharField()
    lines = LineSerializer(many=True)
    total = serializers.DecimalField(
        source="revenue_total", max_digits=20, decimal_places=2
    )
    created_at = serializers.DateTimeField()
    stripe_invoice = serializers.SerializerMethodField()

    @extend_schema_field(StripeInvoiceSummarySerializer(allow_null=True))
    def get_stripe_invoice(self, statement):
        invoice = self.context["stripe_invoices"].get(
            (statement.period_start, statement.period_end)
        )
        if invoice is None:
            return None
        return StripeInvoiceSummarySerializer(invoice).data


# ASCII digits, then optionally a point and one or two more: no sign,
# exponent, underscore, space or other script's digits.
PLAIN_AMOUNT_PATTERN = re.compile(r"[0-9]+(?:\.[0-9]{1,2})?")


@extend_schema_field(
    {"type": "string", "pattern": r"^[0-9]+(\.[0-9]{1,2})?$", "example": "12.50"}
)
class PlainAmountField(serializers.DecimalField):
    """An amount of money given as a JSON string of plain ASCII decimal digits, or an integer.

    "12.50", "12" and 12 are accepted. A JSON float (a binary fraction, not
    always the decimal the client meant), a sign, an exponent, "1_000",
    digits of other scripts and more than two decimal places are rejected.
    """

    default_error_messages = {
        "plain": (
            "Send the amount as a string of digits with at most 2 decimal places "
            'and no sign, such as "12.50".'
        ),
    }

    def __init__(self, **kwargs):
        kwargs.setdefault("decimal_places", 2)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, int) and not isinstance(data, bool) and data >= 0:
            text = str(data)
        elif isinstance(data, str) and PLAIN_AMOUNT_PATTERN.fullmatch(data):
            text = data
        else:
            self.fail("plain")
        return super().to_internal_value(text)


class OutcomeSerializer(serializers.Serializer):
    value_usd = PlainAmountField(
        max_digits=14,
        min_value=0,
        help_text=(
            "Business value of the run's outcome in USD, as a string of digits "
            'with at most 2 decimal places ("12.50"), or an integer.'
        ),
    )


class HalfUpDecimalField(serializers.DecimalField):
    """A DecimalField that rounds half up, as invoice lines are rounded."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("rounding", ROUND_HALF_UP)
        super().__init__(*args, **kwargs)


class CustomerMarginSerializer(serializers.Serializer):
    customer = serializers.CharField(source="customer.slug")
    period_start = serializers.DateField()
    period_end = serializers.DateField()
    currency = serializers.CharField()
    closed = serializers.BooleanField()
    executions = serializers.IntegerField(source="usage.executions")
    revenue = HalfUpDecimalField(max_digits=24, decimal_places=2)
    cost = HalfUpDecimalField(max_digits=30, decimal_places=6)
    cost_complete = serializers.BooleanField(source="usage.cost_complete")
    margin = HalfUpDecimalField(max_digits=30, decimal_places=6)
    margin_percent = HalfUpDecimalField(
        max_digits=12, decimal_places=2, allow_null=True
    )
    unprofitable = serializers.BooleanField()
    projected_revenue = HalfUpDecimalField(
        max_digits=30, decimal_places=2, allow_null=True
    )
    projected_cost = HalfUpDecimalField(
        max_digits=30, decimal_places=6, allow_null=True
    )
    projected_margin = HalfUpDecimalField(
        max_digits=30, decimal_places=6, allow_null=True
    )


class AllocatedMarginSerializer(serializers.Serializer):
    key = serializers.CharField(help_text="Workflow slug or model id.")
    executions = serializers.IntegerField()
    revenue = HalfUpDecimalField(max_digits=30, decimal_places=2)
    cost = HalfUpDecimalField(max_digits=30, decimal_places=6)
    margin = HalfUpDecimalField(max_digits=30, decimal_places=6)
    margin_percent = HalfUpDecimalField(
        max_digits=12, decimal_places=2, allow_null=True
    )
    unprofitable = serializers.BooleanField()


class MarginReportSerializer(serializers.Serializer):
    customers = CustomerMarginSerializer(many=True)
    workflows = AllocatedMarginSerializer(many=True)
    models = AllocatedMarginSerializer(many=True)


class PricingAnalysisQuerySerializer(serializers.Serializer):
    workflow = serializers.SlugField(
        max_length=64, required=False, help_text="Only this workflow's slug."
    )
    window = serializers.IntegerField(
        min_value=1,
        max_value=366,
        default=30,
        help_text="Days before now that are analysed, today included.",
    )
    target_margin = serializers.DecimalField(
        max_digits=5,
        decimal_places=4,
        min_value=0,
        max_value=Decimal("0.9999"),
        default=Decimal("0.70"),
        help_text="Gross margin the suggested prices reach: 0.7 is 70%.",
    )


class PricingRowSerializer(serializers.Serializer):
    workflow = serializers.CharField()
    model = serializers.CharField()
    executions = serializers.IntegerField()
    unpriced = serializers.IntegerField(help_text="Executions with unknown cost.")
    customers = serializers.IntegerField()
    turns_mean = serializers.CharField(allow_null=True)
    cost_mean = serializers.CharField(allow_null=True)
    cost_median = serializers.CharField(allow_null=True)
    cost_p95 = serializers.CharField(allow_null=True)
    total_cost = serializers.CharField(allow_null=True)
    price_per_execution = serializers.CharField(allow_null=True)
    subscription_per_month = serializers.CharField(allow_null=True)


class PricingAnalysisSerializer(serializers.Serializer):
    start = serializers.DateField()
    end = serializers.DateField(help_text="Last day analysed, included.")
    target_margin = serializers.DecimalField(max_digits=5, decimal_places=4)
    rows = PricingRowSerializer(many=True)


class AlertQuerySerializer(serializers.Serializer):
    state = serializers.ChoiceField(
        choices=["open", "resolved", "all"],
        default="open",
        help_text="open: not resolved yet.",
    )
    kind = serializers.ChoiceField(choices=Alert.Kind.choices, required=False)
    customer = serializers.SlugField(max_length=64, required=False)


class AlertSerializer(serializers.ModelSerializer):
    customer = serializers.SlugRelatedField(
        slug_field="slug", read_only=True, allow_null=True
    )

    class Meta:
        model = Alert
        fields = [
            "id",
            "kind",
            "severity",
            "customer",
            "execution",
            "message",
            "period_start",
            "created_at",
            "acknowledged_at",
            "resolved_at",
        ]
        read_only_fields = fields
