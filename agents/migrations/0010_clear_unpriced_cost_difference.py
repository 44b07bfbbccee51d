"""Clear the SDK cost difference of executions with unpriced tokens.

Their cost is only the priced part, so a difference from the SDK's figure
read as a pricing gap that was not there. Repricing sets it again once every
token has a price.
"""

from django.db import migrations, models


def clear_unpriced_differences(apps, schema_editor):
    Execution = apps.get_model("agents", "Execution")
    Execution.objects.filter(unpriced=True, cost_difference_usd__isnull=False).update(
        cost_difference_usd=None
    )


class Migration(migrations.Migration):
    dependencies = [("agents", "0009_workflow_budget_positive")]

    operations = [
        migrations.AlterField(
            model_name="execution",
            name="cost_difference_usd",
            field=models.DecimalField(
                blank=True,
                decimal_places=14,
                help_text="Our cost minus the SDK-reported cost; empty while any token is unpriced.",
                max_digits=24,
                null=True,
                verbose_name="difference from SDK (USD)",
            ),
        ),
        migrations.RunPython(clear_unpriced_differences, migrations.RunPython.noop),
    ]
