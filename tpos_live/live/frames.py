"""What the live engine delivers: frames, and the batches they are rendered in."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frame:
    """A delivered frame.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        ready: monotonic time it was delivered.
        audio_time: capture time of the newest audio behind its condition (None for black frames).
        condition_time: when that condition was published (None for black frames).
        condition_index: the newest condition it used (0 for black frames).
        audio_scale: the loudness envelope's multiplier of g_s for this frame.
        loudness: the loudness envelope itself (0..1): what scaled g_s, as the app's trace shows it.
        mix_audio_time: capture time of the condition mix it shows: the capture times of the two
            conditions its slerp mixes, weighted as the slerp weighs them (the frame's audio-to-frame
            latency is ``ready - mix_audio_time``; capture times include the device's input latency).
    """

    image: np.ndarray
    ready: float
    audio_time: float | None
    condition_time: float | None
    condition_index: int
    audio_scale: float
    loudness: float = 0.0
    mix_audio_time: float | None = None


@dataclass(frozen=True)
class FrameBatch:
    """Frames rendered together, to be shown ``interval`` apart."""

    frames: tuple[Frame, ...]
    interval: float  # seconds between the frames' showing times
    fresh: bool  # the first frame is the first to use its condition
