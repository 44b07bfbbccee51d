from django.apps import AppConfig
from django.db.models.signals import post_migrate


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self):
        from config.schedules import install_schedules

        post_migrate.connect(install_schedules, sender=self)
