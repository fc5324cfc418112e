"""Files that hold secrets or patient data: the var directory (0700) and files created 0600,
whatever the process umask."""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) with mode 0700; an existing directory is left as
    it is (an operator may have chosen its mode)."""
    if not path.exists():
        path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        os.chmod(path, DIR_MODE)  # mkdir's mode is filtered by the umask
    return path


def write_private(path: Path, data: bytes, *, replace: bool = False) -> None:
    """Write a new file readable by its owner only (0600 from the moment it exists)."""
    ensure_private_dir(path.parent)
    if replace and path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
