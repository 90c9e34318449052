"""The loudness envelope at the frames' times: what scales g_s in every frame, at frame rate."""

from __future__ import annotations

import time

import numpy as np

from tpos_live.audio.envelope import attack_release, frame_loudness, guidance_multiplier
from tpos_live.config import RenderSettings
from tpos_live.live.source_feed import SourceFeed


class LoudnessFollower:
    """Follows the newest audio of ``sound`` (an RMS window of ``window_seconds``) with the settings'
    attack and release. Called from one thread (the frame stage's): it keeps the envelope's state."""

    def __init__(self, sound: SourceFeed, window_seconds: float) -> None:
        self.sound, self.window_seconds = sound, window_seconds
        self._envelope = (0.0, time.monotonic())  # follower state and its time

    @property
    def source_lost(self) -> bool:
        """Whether the sound source is lost (a device unplugged): frames wait for it, keeping the last one."""
        return self.sound.state == "lost"

    def at(self, times: np.ndarray, settings: RenderSettings) -> tuple[np.ndarray, np.ndarray]:
        """The loudness envelope (0..1) at ``times`` and the multiplier of g_s it gives
        (``1 - depth + depth * envelope``)."""
        loudness = self._envelope_at(times, settings)
        return loudness, guidance_multiplier(loudness, settings.envelope_depth)

    def _envelope_at(self, times: np.ndarray, settings: RenderSettings) -> np.ndarray:
        source = self.sound.current
        samples = max(1, round(self.window_seconds * source.sample_rate))
        mono, _ = source.mono_window(samples)
        window = samples / source.sample_rate
        level = frame_loudness(mono, source.sample_rate, np.array([window]), window_seconds=window)[0]
        state, last = self._envelope
        steps = np.diff(times, prepend=last).clip(min=0.0)
        envelope = attack_release(np.full(len(times), level), steps, settings.attack_seconds,
                                  settings.release_seconds, initial=state)
        self._envelope = (float(envelope[0]), float(times[0]))  # the later frames' times are predictions
        return envelope.astype(np.float64)
