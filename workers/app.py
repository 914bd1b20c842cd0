"""The Celery app, configured from Settings: JSON only, late acks, two queues, limits on every task."""

from __future__ import annotations

from celery import Celery

from common.config.celery_conf import celery_conf
from common.config.settings import Settings

app = Celery("neardup", include=["workers.tasks", "workers.dedup_tasks", "workers.lifecycle_tasks"])
app.conf.update(celery_conf(Settings.from_env()))
