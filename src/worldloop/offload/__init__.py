"""Heavy work off the tick: the world's outbox sent to workers, results back as commands.

``OffloadPlugin`` (a runtime plug-in) sends each pending request of the world's outbox once its
tick is durable, through a :class:`TaskSender`: ``ThreadSender`` runs tasks in this process (a
thread pool, for tests and tiny apps), ``worldloop.offload.celery.CelerySender`` on Celery
workers (the ``celery`` extra, imported only when used). See worldloop.outbox for the guarantee.
"""

from .plugin import OffloadPlugin, TaskHandle, TaskSender, TaskState
from .threads import ThreadSender

__all__ = ["OffloadPlugin", "TaskHandle", "TaskSender", "TaskState", "ThreadSender"]
