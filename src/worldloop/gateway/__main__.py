"""``python -m worldloop.gateway``: see worldloop.gateway.main."""

from .main import main

raise SystemExit(main())
