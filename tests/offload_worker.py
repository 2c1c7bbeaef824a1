"""``celery -A tests.offload_worker worker``: the Celery app of tests/offload_app.py, stopping
promptly on SIGTERM (each test stops its workers; an idle AMQP worker would take 10 s)."""

from tests.offload_app import celery_worker_app
from worldloop.offload.celery import prompt_shutdown

celery_app = prompt_shutdown(celery_worker_app())
