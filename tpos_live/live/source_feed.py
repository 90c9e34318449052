"""The live sound source as every reader sees it: one place that a source swap changes.

The encoder, the loudness follower, the recorder, the tempo follower, the modulator and the app's meters
all read the sound through one :class:`SourceFeed`. ``LiveEngine.set_source`` swaps its source once; a
reader that keeps a position in the ring (the encoder, the recorder, the tempo follower) notices the new
source on its next read and opens a reader on it at the sample where the swap happened (:meth:`read_from`),
so nothing the new source captured in between is lost.
"""

from __future__ import annotations

import numpy as np

from tpos_live.audio.sources import AudioSource


class SourceFeed:
    """The source the sound comes from now; :meth:`swap` replaces it. Thread-safe: the source and the sample
    it began at are one tuple, replaced in one assignment, so a reader never sees one without the other."""

    def __init__(self, source: AudioSource) -> None:
        self._fed = (source, source.ring.written)

    @property
    def current(self) -> AudioSource:
        return self._fed[0]

    def read_from(self) -> tuple[AudioSource, int]:
        """The current source and the absolute sample of its ring where it began to feed the readers."""
        return self._fed

    def swap(self, source: AudioSource) -> AudioSource:
        """Read from ``source`` from now on; returns the previous one (still as it was: running or not).
        Swaps come from one thread at a time (the engine's lock)."""
        old = self._fed[0]
        self._fed = (source, source.ring.written)
        return old

    @property
    def sample_rate(self) -> int:
        return self.current.sample_rate

    @property
    def state(self) -> str:
        return self.current.state

    def mono_window(self, count: int, rate: int | None = None) -> tuple[np.ndarray, int]:
        """The newest ``count`` samples of the current source as mono (see ``AudioSource.mono_window``)."""
        return self.current.mono_window(count, rate)
