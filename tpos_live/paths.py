"""Where tpos-live keeps its files: settings (presets, MIDI maps, default encoders) and caches."""

from __future__ import annotations

import os
from pathlib import Path


def settings_folder() -> Path:
    """Where tpos-live keeps settings: ``$TPOS_LIVE_CONFIG``, else ``$XDG_CONFIG_HOME/tpos-live``, else
    ``~/.config/tpos-live``."""
    if os.environ.get("TPOS_LIVE_CONFIG"):
        return Path(os.environ["TPOS_LIVE_CONFIG"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
    return Path(base).expanduser() / "tpos-live"


def cache_folder() -> Path:
    """Where tpos-live keeps what it can rebuild (the tiny model, engines outside a checkout):
    ``$TPOS_LIVE_CACHE``, else ``~/.cache/tpos-live``."""
    return Path(os.environ.get("TPOS_LIVE_CACHE") or "~/.cache/tpos-live").expanduser()


def mini_model_folder() -> Path:
    """The mini world's trained model, shipped inside the package (``--model mini``): a diffusers folder
    with its TPoS encoder, written by ``scripts/train_mini_world.py``."""
    return Path(__file__).parent / "mini" / "weights"
