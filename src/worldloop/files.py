"""Private files and folders: what worldloop creates on disk is readable by its owner only.

The instance folder holds the journal (every command, with the players' token hashes) and the
demo's admin token, so it is made 0700 and its files 0600 *on creation*, whatever the process
umask: the mode is set explicitly after each create (``os.open``'s mode is masked by the umask).
Existing folders and files keep the mode their owner gave them.
"""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: str | Path) -> Path:
    """Make ``path`` and any missing parents, each new one 0700; existing ones are left as is."""
    folder = Path(path)
    missing: list[Path] = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for new in reversed(missing):
        try:
            new.mkdir(mode=DIR_MODE)
        except FileExistsError:  # another process made it first: its mode is its own
            continue
        os.chmod(new, DIR_MODE)
    return folder


def private_fd(path: str | Path, flags: int = os.O_RDWR) -> int:
    """Open ``path`` with ``flags``, creating it 0600 (and its folder 0700) if missing."""
    target = Path(path)
    private_dir(target.parent)
    try:
        fd = os.open(target, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return os.open(target, flags)
    os.fchmod(fd, FILE_MODE)
    return fd


def make_private(path: str | Path) -> None:
    """Set an existing file we just created to 0600 (e.g. one a library created for us)."""
    os.chmod(path, FILE_MODE)
