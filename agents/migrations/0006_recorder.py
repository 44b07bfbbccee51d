import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0005_apimessage_speed"),
    ]

    # The unique constraint on (execution, message_id) already serves lookups
    # by execution, so the foreign key's own index only slowed every insert.
    operations = [
        migrations.AlterField(
            model_name="apimessage",
            name="execution",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="api_messages",
                to="agents.execution",
            ),
        ),
    ]
