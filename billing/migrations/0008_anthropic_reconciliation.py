import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0007_subscription_end_period_revenue"),
        ("customers", "0001_initial"),
    ]

    operations = [
        migrations.AlterField(
            model_name="alert",
            name="kind",
            field=models.CharField(
                choices=[
                    ("stalled_execution", "Stalled execution"),
                    ("period_cost", "Period cost above limit"),
                    ("execution_cost", "Execution cost above limit"),
                    ("margin", "Margin below level"),
                    ("projected_margin", "Projected margin below level"),
                    ("budget_used", "Budget used"),
                    ("soft_budget", "Soft budget reached"),
                    ("unpriced_usage", "Unpriced usage"),
                    ("cost_difference", "Cost differs from the SDK's"),
                    ("stalled_executions", "Stalled executions"),
                    ("stripe_late_usage", "Usage too old for Stripe"),
                    ("stripe_metering_failed", "Stripe metering failed"),
                    ("stripe_payment_failed", "Stripe payment failed"),
                    ("stripe_reconciliation", "Stripe usage differs"),
                    ("anthropic_variance", "Cost differs from Anthropic's"),
                ],
                max_length=40,
            ),
        ),
        migrations.CreateModel(
            name="AnthropicAccount",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True,
                        primary_key=True,
                        serialize=False,
                        verbose_name="ID",
                    ),
                ),
                (
                    "api_key_id",
                    models.CharField(
                        blank=True,
                        help_text="Tagged API key id as Anthropic's reports name it, e.g. apikey_01AbC. Leave empty to map a workspace.",
                        max_length=100,
                        verbose_name="API key id",
                    ),
                ),
                (
                    "workspace_id",
                    models.CharField(
                        blank=True,
                        help_text="Tagged workspace id, e.g. wrkspc_01AbC. Leave empty to map an API key.",
                        max_length=100,
                    ),
                ),
                ("note", models.CharField(blank=True, max_length=200)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "customer",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="anthropic_accounts",
                        to="customers.customer",
                    ),
                ),
            ],
            options={
                "ordering": ["customer", "api_key_id", "workspace_id"],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(
                                ("api_key_id", ""),
                                models.Q(("workspace_id", ""), _negated=True),
                            ),
                            models.Q(
                                models.Q(("api_key_id", ""), _negated=True),
                                ("workspace_id", ""),
                            ),
                            _connector="OR",
                        ),
                        name="anthropic_account_key_or_workspace",
                    ),
                    models.UniqueConstraint(
                        condition=models.Q(("api_key_id", ""), _negated=True),
                        fields=("api_key_id",),
                        name="unique_anthropic_api_key",
                    ),
                    models.UniqueConstraint(
                        condition=models.Q(("workspace_id", ""), _negated=True),
                        fields=("workspace_id",),
                        name="unique_anthropic_workspace",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="AnthropicComparison",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True,
                        primary_key=True,
                        serialize=False,
                        verbose_name="ID",
                    ),
                ),
                ("day", models.DateField(db_index=True)),
                (
                    "model",
                    models.CharField(
                        help_text="Model family, e.g. claude-sonnet-4-5.",
                        max_length=100,
                    ),
                ),
                (
                    "our_cost_usd",
                    models.DecimalField(
                        decimal_places=14,
                        help_text="Recorded cost of the day's API messages; priced messages only.",
                        max_digits=24,
                        verbose_name="our cost (USD)",
                    ),
                ),
                (
                    "their_cost_usd",
                    models.DecimalField(
                        decimal_places=14,
                        help_text="Cost in Anthropic's cost report, after discounts.",
                        max_digits=24,
                        verbose_name="Anthropic's cost (USD)",
                    ),
                ),
                (
                    "their_list_cost_usd",
                    models.DecimalField(
                        decimal_places=14,
                        help_text="Cost in Anthropic's cost report at list prices.",
                        max_digits=24,
                        verbose_name="Anthropic's list cost (USD)",
                    ),
                ),
                (
                    "difference_usd",
                    models.DecimalField(
                        decimal_places=14,
                        help_text="Our cost minus Anthropic's.",
                        max_digits=24,
                        verbose_name="difference (USD)",
                    ),
                ),
                (
                    "difference_percent",
                    models.DecimalField(
                        blank=True,
                        decimal_places=4,
                        help_text="Difference as a percentage of Anthropic's cost; empty when Anthropic reports no cost.",
                        max_digits=14,
                        null=True,
                    ),
                ),
                (
                    "our_prompt_tokens",
                    models.BigIntegerField(
                        default=0,
                        help_text="Input, cache write and cache read tokens we recorded.",
                    ),
                ),
                (
                    "their_prompt_tokens",
                    models.BigIntegerField(
                        default=0,
                        help_text="Input, cache write and cache read tokens reported.",
                    ),
                ),
                ("our_output_tokens", models.BigIntegerField(default=0)),
                ("their_output_tokens", models.BigIntegerField(default=0)),
                (
                    "our_unpriced_messages",
                    models.PositiveIntegerField(
                        default=0,
                        help_text="Our messages of a model with no price, not in our cost.",
                    ),
                ),
                (
                    "above_threshold",
                    models.BooleanField(
                        default=False,
                        help_text="The difference is above the alert threshold.",
                    ),
                ),
                ("compared_at", models.DateTimeField()),
                (
                    "customer",
                    models.ForeignKey(
                        blank=True,
                        help_text="Empty for usage on keys and workspaces mapped to no customer, and our usage of customers with no mapping.",
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="anthropic_comparisons",
                        to="customers.customer",
                    ),
                ),
            ],
            options={
                "ordering": ["-day", "customer", "model"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("day", "customer", "model"),
                        name="unique_anthropic_comparison",
                        nulls_distinct=False,
                    )
                ],
            },
        ),
    ]
