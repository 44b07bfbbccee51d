from django.apps import AppConfig
from django.db.models.signals import post_migrate


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self):
        from django.db.models.signals import post_save

        from agents import admission
        from agents.signals import (
            api_message_recorded,
            execution_finished,
            execution_stalled,
        )
        from billing import budgets
        from billing.models import Alert
        from billing.permissions import ensure_analyst_group
        from billing.receivers import (
            on_alert_saved,
            on_api_message_recorded,
            on_execution_finished_budget,
            on_execution_stalled,
        )
        from billing.stripe.receivers import on_execution_finished
        from config.schedules import install_schedules

        post_migrate.connect(install_schedules, sender=self)
        post_migrate.connect(
            ensure_analyst_group, sender=self, dispatch_uid="billing.analyst_group"
        )
        execution_stalled.connect(
            on_execution_stalled, dispatch_uid="billing.stalled_alert"
        )
        admission.register_check("billing.budget", budgets.reservation_admit)
        admission.register_run_limit("billing.budget", budgets.run_limit)
        execution_finished.connect(
            on_execution_finished_budget, dispatch_uid="billing.budget_release"
        )
        api_message_recorded.connect(
            on_api_message_recorded, dispatch_uid="billing.realtime_alerts"
        )
        post_save.connect(
            on_alert_saved, sender=Alert, dispatch_uid="billing.alert_delivery"
        )
        execution_finished.connect(
            on_execution_finished, dispatch_uid="billing.stripe_meter_event"
        )
