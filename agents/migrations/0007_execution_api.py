import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0006_recorder"),
        ("customers", "0004_api_keys"),
    ]

    operations = [
        migrations.AddField(
            model_name="execution",
            name="api_key",
            field=models.ForeignKey(
                blank=True,
                help_text="API key of the request that created it.",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="executions",
                to="customers.apikey",
            ),
        ),
        migrations.AddField(
            model_name="execution",
            name="cancel_requested_at",
            field=models.DateTimeField(
                blank=True,
                help_text="When the customer asked to cancel it; the runner then stops it.",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="execution",
            name="idempotency_key",
            field=models.CharField(
                blank=True,
                help_text="Idempotency-Key header of the API request that created it.",
                max_length=255,
            ),
        ),
        migrations.AddField(
            model_name="execution",
            name="metadata",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="Key-value strings the customer attached through the API.",
            ),
        ),
        migrations.AddConstraint(
            model_name="execution",
            constraint=models.UniqueConstraint(
                condition=models.Q(("idempotency_key", ""), _negated=True),
                fields=("customer", "idempotency_key"),
                name="unique_idempotency_key_per_customer",
            ),
        ),
    ]
