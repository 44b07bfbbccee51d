import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("customers", "0003_soft_budget"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ApiKey",
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
                    "name",
                    models.CharField(
                        help_text="What the key is for, e.g. the calling system.",
                        max_length=100,
                    ),
                ),
                (
                    "prefix",
                    models.CharField(
                        help_text="First characters of the key, shown to tell keys apart.",
                        max_length=16,
                        unique=True,
                    ),
                ),
                (
                    "secret_hash",
                    models.CharField(
                        help_text="SHA-256 of the whole key, in hex.",
                        max_length=64,
                        verbose_name="secret hash",
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "last_used_at",
                    models.DateTimeField(
                        blank=True,
                        help_text="Last authenticated request, updated at most once a minute.",
                        null=True,
                    ),
                ),
                (
                    "revoked_at",
                    models.DateTimeField(
                        blank=True,
                        help_text="Set when the key was revoked; it no longer works.",
                        null=True,
                    ),
                ),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        help_text="Staff user who created the key. Empty when a command created it.",
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "customer",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="api_keys",
                        to="customers.customer",
                    ),
                ),
            ],
            options={
                "verbose_name": "API key",
                "ordering": ["customer", "-created_at"],
            },
        ),
    ]
