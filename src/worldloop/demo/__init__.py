"""The reference game world ("meadow") and its ready-to-run Flask app."""

from .app import create_app

__all__ = ["create_app"]
