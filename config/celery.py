"""Celery application: tasks are discovered in each installed app's tasks.py."""

import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.development")

app = Celery("agentmargin")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def prepare_worker_process(**kwargs) -> None:
    from config.worker import worker_process_prepare

    worker_process_prepare()
