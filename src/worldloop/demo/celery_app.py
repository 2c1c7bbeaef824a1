"""The demo's Celery worker entry point::

    CELERY_BROKER_URL=amqp://guest:guest@127.0.0.1:5672// \\
        celery -A worldloop.demo.celery_app worker --loglevel=INFO

It builds the demo Flask app without starting its world (the world runs in the server; a worker
only runs tasks, inside the app's context) and exposes its Celery app. The broker comes from
``CELERY_BROKER_URL`` (default: the local RabbitMQ), results from ``CELERY_RESULT_BACKEND``
(default ``rpc://``), the queue from ``CELERY_QUEUE`` (default ``worldloop``).
"""

from __future__ import annotations

import os

from celery import Celery

from ..offload.celery import prompt_shutdown
from .app import celery_config, create_app

flask_app = create_app({"WORLDLOOP_AUTOSTART": "never", "CELERY": celery_config(os.environ)})
celery_app: Celery = prompt_shutdown(flask_app.extensions["celery"])  # SIGTERM stops it at once
app = celery_app
"""What ``celery -A worldloop.demo.celery_app`` finds."""
