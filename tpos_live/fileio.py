"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomically(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Call ``write(temp)`` on a temporary file beside ``path``, then rename it onto ``path``.

    The temporary file is removed if ``write`` fails, so nothing half-written is ever left behind.
    """
    path = Path(path)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    temp = Path(temp_name)
    try:
        write(temp)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


def write_text_atomically(path: str | os.PathLike[str], text: str) -> Path:
    """``write_atomically`` for text (UTF-8)."""
    return write_atomically(path, lambda temp: temp.write_text(text, encoding="utf-8"))
