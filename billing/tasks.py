"""Celery tasks of the billing app, each a thin shell over a service."""

from celery import shared_task

from billing import rollups


@shared_task(name="billing.tasks.roll_up_usage")
def roll_up_usage() -> dict:
    """Recompute the usage rollups of the days changed since the last run.

    Safe to run twice or late. A run that finds another one in progress
    returns at once with `skipped` set, and the next run picks up its
    changes.
    """
    return rollups.roll_up_usage().summary()
