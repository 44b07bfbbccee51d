from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0007_execution_api"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="apimessage",
            index=models.Index(fields=["message_id"], name="api_message_message_id"),
        ),
    ]
