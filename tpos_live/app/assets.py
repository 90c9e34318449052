"""The app's theme and icons: package data of ``tpos_live.ui`` (the top-level ``ui/`` folder)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def ui_folder() -> Path:
    """The folder of ``theme.qss`` and ``icons/``: ``ui/`` in a checkout installed for development,
    ``site-packages/tpos_live/ui`` in a wheel."""
    return Path(str(resources.files("tpos_live.ui")))


def icon_path(name: str) -> Path:
    return ui_folder() / "icons" / f"{name}.svg"


def load_theme() -> str:
    """The app's style sheet."""
    return (ui_folder() / "theme.qss").read_text(encoding="utf-8")
