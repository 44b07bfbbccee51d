from decimal import Decimal

import django.db.models.deletion
from django.db import migrations, models

# Global default rules: budget use at 50, 80 and 100 percent, and the soft
# budget. Both fire only for customers that have such a budget.
DEFAULT_RULES = [
    ("budget_used", Decimal(50), "info"),
    ("budget_used", Decimal(80), "warning"),
    ("budget_used", Decimal(100), "critical"),
    ("soft_budget", None, "warning"),
]


def create_default_rules(apps, schema_editor):
    AlertRule = apps.get_model("billing", "AlertRule")
    for kind, threshold, severity in DEFAULT_RULES:
        AlertRule.objects.get_or_create(
            kind=kind,
            customer=None,
            threshold=threshold,
            defaults={"severity": severity},
        )


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0005_apimessage_speed"),
        ("billing", "0005_stripe"),
        ("customers", "0003_soft_budget"),
    ]

    operations = [
        migrations.CreateModel(
            name="BudgetReservation",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("amount_usd", models.DecimalField(decimal_places=14, help_text="The per-run budget of the workflow, or the configured default.", max_digits=24, verbose_name="amount (USD)")),
                ("budget_usd", models.DecimalField(decimal_places=2, help_text="The customer's hard budget when the reservation was taken.", max_digits=14, verbose_name="budget (USD)")),
                ("period_start", models.DateField()),
                ("period_end", models.DateField(help_text="First day after the period.")),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("released_at", models.DateTimeField(blank=True, db_index=True, null=True)),
                ("actual_cost_usd", models.DecimalField(blank=True, decimal_places=14, help_text="The execution's recorded cost when the reservation was released.", max_digits=24, null=True, verbose_name="actual cost (USD)")),
                ("customer", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+", to="customers.customer")),
                ("execution", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name="budget_reservation", to="agents.execution")),
            ],
            options={
                "ordering": ["-created_at"],
                "indexes": [models.Index(fields=["customer", "released_at"], name="billing_bud_custome_1c94c4_idx")],
            },
        ),
        migrations.AddField(
            model_name="alert",
            name="delivery_attempts",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="alert",
            name="email_status",
            field=models.CharField(choices=[("pending", "Pending"), ("sent", "Sent"), ("failed", "Failed"), ("not_configured", "Not configured")], default="pending", max_length=16),
        ),
        migrations.AddField(
            model_name="alert",
            name="last_delivery_error",
            field=models.TextField(blank=True),
        ),
        migrations.AddField(
            model_name="alert",
            name="period_start",
            field=models.DateField(blank=True, help_text="First day of the customer's billing period the rule fired in.", null=True),
        ),
        migrations.AddField(
            model_name="alert",
            name="webhook_status",
            field=models.CharField(choices=[("pending", "Pending"), ("sent", "Sent"), ("failed", "Failed"), ("not_configured", "Not configured")], default="pending", max_length=16),
        ),
        migrations.AddField(
            model_name="plan",
            name="default_monthly_budget_usd",
            field=models.DecimalField(blank=True, decimal_places=2, help_text="Hard spend limit per billing period for subscribers whose own monthly budget is empty. Empty means no limit.", max_digits=14, null=True, verbose_name="default monthly budget (USD)"),
        ),
        migrations.AlterField(
            model_name="alert",
            name="kind",
            field=models.CharField(choices=[("stalled_execution", "Stalled execution"), ("period_cost", "Period cost above limit"), ("execution_cost", "Execution cost above limit"), ("margin", "Margin below level"), ("projected_margin", "Projected margin below level"), ("budget_used", "Budget used"), ("soft_budget", "Soft budget reached"), ("unpriced_usage", "Unpriced usage"), ("cost_difference", "Cost differs from the SDK's"), ("stalled_executions", "Stalled executions"), ("stripe_late_usage", "Usage too old for Stripe"), ("stripe_metering_failed", "Stripe metering failed"), ("stripe_payment_failed", "Stripe payment failed"), ("stripe_reconciliation", "Stripe usage differs")], max_length=40),
        ),
        migrations.CreateModel(
            name="AlertRule",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("kind", models.CharField(choices=[("period_cost", "Period cost above (USD)"), ("execution_cost", "Single execution cost above (USD)"), ("margin", "Margin to date below (percent)"), ("projected_margin", "Projected margin below (percent)"), ("budget_used", "Budget used at or above (percent)"), ("soft_budget", "Soft budget reached"), ("unpriced_usage", "Unpriced usage present"), ("cost_difference", "Cost differs from the SDK's by more than (percent)"), ("stalled_executions", "Stalled executions at or above (count)")], max_length=40)),
                ("threshold", models.DecimalField(blank=True, decimal_places=4, help_text="USD for cost rules, percent for margin, budget and cost-difference rules, a count for stalled executions. Empty for soft-budget and unpriced-usage rules.", max_digits=14, null=True)),
                ("severity", models.CharField(choices=[("info", "Info"), ("warning", "Warning"), ("critical", "Critical")], default="warning", max_length=16)),
                ("is_active", models.BooleanField(default=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("customer", models.ForeignKey(blank=True, help_text="Empty for a global default that applies to every customer.", null=True, on_delete=django.db.models.deletion.CASCADE, related_name="alert_rules", to="customers.customer")),
            ],
            options={
                "ordering": ["kind", "customer", "threshold"],
                "constraints": [
                    models.UniqueConstraint(condition=models.Q(("customer__isnull", False), ("threshold__isnull", False)), fields=("kind", "customer", "threshold"), name="unique_customer_alert_rule"),
                    models.UniqueConstraint(condition=models.Q(("customer__isnull", False), ("threshold__isnull", True)), fields=("kind", "customer"), name="unique_customer_alert_rule_no_threshold"),
                    models.UniqueConstraint(condition=models.Q(("customer__isnull", True), ("threshold__isnull", False)), fields=("kind", "threshold"), name="unique_global_alert_rule"),
                    models.UniqueConstraint(condition=models.Q(("customer__isnull", True), ("threshold__isnull", True)), fields=("kind",), name="unique_global_alert_rule_no_threshold"),
                ],
            },
        ),
        migrations.AddField(
            model_name="alert",
            name="rule",
            field=models.ForeignKey(blank=True, help_text="The rule that fired. Empty for alerts raised without a rule.", null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="alerts", to="billing.alertrule"),
        ),
        migrations.AddConstraint(
            model_name="alert",
            constraint=models.UniqueConstraint(condition=models.Q(("rule__isnull", False)), fields=("rule", "customer", "period_start"), name="unique_alert_per_rule_customer_period"),
        ),
        migrations.RunPython(create_default_rules, migrations.RunPython.noop),
    ]
