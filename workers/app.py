"""The Celery app, configured from Settings: JSON only, late acks, two queues, limits on every task."""

from __future__ import annotations

from celery import Celery

from common.celery_config import celery_conf
from common.settings import Settings

app = Celery("neardup", include=["workers.tasks", "workers.dedup_tasks", "workers.lifecycle_tasks"])
app.conf.update(celery_conf(Settings.from_env()))
