from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("customers", "0002_verbose_names"),
    ]

    operations = [
        migrations.AddField(
            model_name="customer",
            name="monthly_soft_budget_usd",
            field=models.DecimalField(
                blank=True,
                decimal_places=2,
                help_text="Spend per billing period in USD above which staff are alerted. Runs go on. Empty means no soft budget.",
                max_digits=14,
                null=True,
                verbose_name="monthly soft budget (USD)",
            ),
        ),
        migrations.AlterField(
            model_name="customer",
            name="monthly_budget_usd",
            field=models.DecimalField(
                blank=True,
                decimal_places=2,
                help_text="Hard spend limit per billing period in USD: runs that would go over it are rejected. Empty means the plan's default budget, or no limit.",
                max_digits=14,
                null=True,
                verbose_name="monthly budget (USD)",
            ),
        ),
    ]
