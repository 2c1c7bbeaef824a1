"""World names: what a hosted world may be called, and giving a world instance its name.

A name goes into URLs, lease keys, store rows and file names, so it is kept short and plain.
"""

from __future__ import annotations

import re

from .errors import WorldConfigInvalid
from .world import World

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
NAME_RULE = "1 to 64 letters, digits, '-' or '_', starting with a letter or digit"
"""World names go into URLs, lease and store keys: kept short and plain."""


def check_name(name: str) -> str:
    """``name`` if it is a valid world name; WorldConfigInvalid (422) otherwise."""
    if not NAME_RE.match(name):
        raise WorldConfigInvalid(
            f"bad world name {name!r}: {NAME_RULE}", details={"field": "name", "rule": NAME_RULE}
        )
    return name


def name_world(world: World, name: str) -> World:
    """Give ``world`` (an instance) its hosted name: its journal, lease and snapshots go by it."""
    world.__dict__["name"] = name
    return world
