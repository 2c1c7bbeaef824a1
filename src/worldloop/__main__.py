"""``python -m worldloop``: the ``worldloop`` command."""

from .cli import main

main()
