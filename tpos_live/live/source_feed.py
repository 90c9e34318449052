"""The live sound source as every reader sees it: one place that a source swap changes.

The encoder, the loudness follower, the recorder, the tempo follower, the modulator and the app's meters
all read the sound through one :class:`SourceFeed`. ``LiveEngine.set_source`` swaps its source once; a
reader that keeps a position in the ring (the encoder, the recorder, the tempo follower) notices the new
source on its next read and opens a reader on it.
"""

from __future__ import annotations

import threading

import numpy as np

from tpos_live.audio.sources import AudioSource


class SourceFeed:
    """The source the sound comes from now; :meth:`swap` replaces it. Thread-safe."""

    def __init__(self, source: AudioSource) -> None:
        self._source = source
        self._lock = threading.Lock()

    @property
    def current(self) -> AudioSource:
        return self._source

    def swap(self, source: AudioSource) -> AudioSource:
        """Read from ``source`` from now on; returns the previous one (still as it was: running or not)."""
        with self._lock:
            old, self._source = self._source, source
        return old

    @property
    def sample_rate(self) -> int:
        return self._source.sample_rate

    @property
    def state(self) -> str:
        return self._source.state

    def mono_window(self, count: int, rate: int | None = None) -> tuple[np.ndarray, int]:
        """The newest ``count`` samples of the current source as mono (see ``AudioSource.mono_window``)."""
        return self._source.mono_window(count, rate)
