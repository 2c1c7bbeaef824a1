"""``python -m worldloop.runner``: see worldloop.runner.main."""

from .main import main

raise SystemExit(main())
