"""Preparing a Celery pool process before its first task."""

import gc

import pytest
from celery.signals import worker_process_init

import config.worker


@pytest.fixture
def unfreeze():
    yield
    gc.unfreeze()


def test_pool_process_start_runs_the_preparation(monkeypatch):
    calls = []
    monkeypatch.setattr(
        config.worker, "worker_process_prepare", lambda: calls.append(1)
    )
    worker_process_init.send(sender=None)
    assert calls == [1]


def test_preparation_freezes_what_exists_at_start(unfreeze):
    config.worker.worker_process_prepare()
    frozen = gc.get_freeze_count()
    # Django, the Agent SDK and the price table are well over 100,000
    # tracked objects, all out of the collector's reach now.
    assert frozen > 100_000
    assert len(gc.get_objects()) < frozen / 10
