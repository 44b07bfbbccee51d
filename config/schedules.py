"""Periodic jobs run by Celery beat, installed into django-celery-beat's tables.

Each entry becomes a PeriodicTask the first time `migrate` runs. An entry
that already exists is left alone, so an interval that staff changed in the
admin survives later deploys.
"""

import logging

logger = logging.getLogger(__name__)

SCHEDULES = [
    {
        "name": "Sweep stalled executions",
        "task": "agents.tasks.sweep_executions",
        "every_seconds": 60,
    },
    {
        "name": "Roll up usage",
        "task": "billing.tasks.roll_up_usage",
        "every_seconds": 300,
    },
    {
        "name": "Close ended billing periods",
        "task": "billing.tasks.close_periods",
        "every_seconds": 86400,
    },
    {
        "name": "Send pending Stripe meter events",
        "task": "billing.tasks.stripe_metering_sweep",
        "every_seconds": 300,
    },
    {
        "name": "Reconcile Stripe usage",
        "task": "billing.tasks.stripe_reconcile",
        "every_seconds": 86400,
    },
    {
        "name": "Send success fees to Stripe",
        "task": "billing.tasks.stripe_success_fees",
        "every_seconds": 86400,
    },
    {
        "name": "Evaluate alert rules",
        "task": "billing.tasks.evaluate_alert_rules",
        "every_seconds": 300,
    },
    {
        "name": "Reconcile costs with Anthropic's reports",
        "task": "billing.tasks.anthropic_reconcile",
        "every_seconds": 21600,
    },
]


def install_schedules(**kwargs) -> None:
    """Create the PeriodicTask of every entry that does not exist yet."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    for entry in SCHEDULES:
        if PeriodicTask.objects.filter(name=entry["name"]).exists():
            continue
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=entry["every_seconds"], period=IntervalSchedule.SECONDS
        )
        PeriodicTask.objects.create(
            name=entry["name"], task=entry["task"], interval=interval
        )
        logger.info("Installed periodic task %s (%s)", entry["name"], entry["task"])
