"""``python -m worldloop.cli`` (same as ``python -m worldloop``)."""

from . import main

main()
