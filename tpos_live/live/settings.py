"""How the live engine's stages run (what a frame looks like is in ``RenderSettings``)."""

from __future__ import annotations

from dataclasses import dataclass

from tpos_live.limits import MAX_CROSSFADE_SECONDS


@dataclass(frozen=True)
class LiveSettings:
    """How the live stages run (what a frame looks like is in :class:`RenderSettings`).

    Attributes:
        hop_seconds: time between encoder updates (the encoder reads the window ending now).
        crossfade_seconds: how long a new scene takes to come in at first (0: cut); the control's
            ``set_crossfade`` changes it while running.
        loudness_window_seconds: RMS window of the per-frame loudness.
        stats_window_seconds: span of the rates and means in a stats snapshot.
        trim_seconds: how often the heap's free memory is given back to the OS (glibc's malloc_trim;
            0: never). Without it freed memory stays resident (``tpos_live.live.memory``).
    """

    hop_seconds: float = 0.25
    crossfade_seconds: float = 0.5
    loudness_window_seconds: float = 0.05
    stats_window_seconds: float = 1.0
    trim_seconds: float = 60.0

    def __post_init__(self) -> None:
        if not 0.02 <= self.hop_seconds <= 5.0:
            raise ValueError(f"hop must be in 0.02..5 seconds, got {self.hop_seconds}")
        if not 0.0 <= self.crossfade_seconds <= MAX_CROSSFADE_SECONDS:
            raise ValueError(f"crossfade must be in 0..{MAX_CROSSFADE_SECONDS:g} seconds, got {self.crossfade_seconds}")
        if not 0.005 <= self.loudness_window_seconds <= 1.0:
            raise ValueError(f"loudness window must be in 0.005..1 seconds, got "
                             f"{self.loudness_window_seconds}")
        if not 0.1 <= self.stats_window_seconds <= 60.0:
            raise ValueError(f"stats window must be in 0.1..60 seconds, got {self.stats_window_seconds}")
        if self.trim_seconds != 0 and not 1.0 <= self.trim_seconds <= 3600.0:
            raise ValueError(f"trim period must be 0 (never) or in 1..3600 seconds, got {self.trim_seconds}")
