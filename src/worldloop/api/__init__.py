"""The REST API: blueprints over the runtime, and JSON errors for every failure."""

from .errors import api_error, register_error_handlers
from .jobs import bp as jobs_bp
from .world import bp as world_bp

__all__ = ["api_error", "jobs_bp", "register_error_handlers", "world_bp"]
