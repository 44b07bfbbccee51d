from django.apps import AppConfig
from django.db.models.signals import post_migrate


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self):
        from agents.signals import execution_stalled
        from billing.receivers import on_execution_stalled
        from config.schedules import install_schedules

        post_migrate.connect(install_schedules, sender=self)
        execution_stalled.connect(
            on_execution_stalled, dispatch_uid="billing.stalled_alert"
        )
