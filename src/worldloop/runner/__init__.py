"""The runner process: the world ticks in a process of its own, web workers serve it.

``python -m worldloop.runner`` (started by a web worker, see :mod:`worldloop.runner.spawn`)
loads the same app, runs its world and serves the web workers of this host over the one-host
bus (:mod:`worldloop.bus.ipc`, :mod:`worldloop.runner.server`).
"""
