"""Celery tasks of the billing app, each a thin shell over a service."""

from celery import shared_task

from billing import rollups, services


@shared_task(name="billing.tasks.roll_up_usage")
def roll_up_usage() -> dict:
    """Recompute the usage rollups of the days changed since the last run.

    Safe to run twice or late. A run that finds another one in progress
    returns at once with `skipped` set, and the next run picks up its
    changes.
    """
    return rollups.roll_up_usage().summary()


@shared_task(name="billing.tasks.close_periods")
def close_periods() -> int:
    """Write the statement of every ended period of the active subscriptions.

    Safe to run twice: a period that has a statement is skipped. Returns
    how many statements were written.
    """
    return services.statements_close_ended_periods()
