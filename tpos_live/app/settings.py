"""The app's settings, kept between launches in ``<settings folder>/app.json``.

Read back validated: a file that is not JSON, or holds values out of range, resets to the defaults
with a message for the user (it never stops the launch).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from tpos_live.fileio import write_text_atomically
from tpos_live.limits import MAX_CROSSFADE_SECONDS
from tpos_live.paths import settings_folder

SETTINGS_FILE = "app.json"
SYNTHETIC_DEVICE = "synthetic"  # the built-in test signal, in the device picker


@dataclass(frozen=True)
class AppSettings:
    """What the app remembers.

    Attributes:
        device: capture device name, or ``"synthetic"`` for the test signal; None: the default input.
        gain_db: input gain.
        output_screen: the screen index the output window goes fullscreen on.
        presets_folder: where presets are saved and loaded (None: ``<settings folder>/presets``).
        record_folder: where recordings go (None: the current folder).
        crossfade_seconds: how long a scene switch takes.
    """

    device: str | None = None
    gain_db: float = 0.0
    output_screen: int = 0
    presets_folder: str | None = None
    record_folder: str | None = None
    crossfade_seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.device is not None and not isinstance(self.device, str):
            raise ValueError(f"device must be a name, got {self.device!r}")
        if not isinstance(self.gain_db, int | float) or not -60.0 <= self.gain_db <= 60.0:
            raise ValueError(f"gain must be in -60..60 dB, got {self.gain_db!r}")
        if not isinstance(self.output_screen, int) or not 0 <= self.output_screen < 64:
            raise ValueError(f"output screen must be an index in 0..63, got {self.output_screen!r}")
        if (isinstance(self.crossfade_seconds, bool) or not isinstance(self.crossfade_seconds, int | float)
                or not 0.0 <= self.crossfade_seconds <= MAX_CROSSFADE_SECONDS):
            raise ValueError(f"crossfade must be in 0..{MAX_CROSSFADE_SECONDS:g} seconds, "
                             f"got {self.crossfade_seconds!r}")
        for name in ("presets_folder", "record_folder"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a folder path, got {value!r}")

    def presets_path(self) -> Path:
        return Path(self.presets_folder) if self.presets_folder else settings_folder() / "presets"


def settings_path() -> Path:
    return settings_folder() / SETTINGS_FILE


def load_settings(path: Path | None = None) -> tuple[AppSettings, str | None]:
    """The saved settings and None, or the defaults and a message saying why the file was not used."""
    path = path or settings_path()
    if not path.exists():
        return AppSettings(), None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("it does not hold a table of settings")
        known = {f.name for f in fields(AppSettings)}
        return AppSettings(**{k: v for k, v in data.items() if k in known}), None
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as error:
        return AppSettings(), f"the settings file {path} could not be used ({error}): starting from the defaults"


def save_settings(settings: AppSettings, path: Path | None = None) -> Path:
    """Write the settings atomically (a temporary file renamed over the old one)."""
    path = path or settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomically(path, json.dumps(asdict(settings), indent=2))
