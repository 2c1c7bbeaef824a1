"""``celery -A tests.offload_worker worker``: the Celery app of tests/offload_app.py."""

from tests.offload_app import celery_worker_app

celery_app = celery_worker_app()
