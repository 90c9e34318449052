"""A preallocated audio ring buffer addressed by absolute sample count (after Friture's ``RingBuffer``).

One writer (the audio callback, or a pacing thread) appends frames; any number of readers copy out
ranges by absolute index: sample ``i`` is the i-th sample written since the buffer was made, so a
reader can ask for "the window ending now" or "everything after sample i" without sharing a read
position with anyone. Each consumer that must see every sample (a recorder) keeps its own
:class:`RingReader`.

No lock is taken: the writer first announces how far it is about to write, then fills the slots, and
only then publishes the new count, so a reader never sees unwritten slots. A reader that is so slow
that the writer wraps round onto the range it is copying finds out by checking the announcement after
the copy, and reports those samples lost.
"""

from __future__ import annotations

import time

import numpy as np


class RingBuffer:
    """Float32 frames ``(capacity, channels)``; sample ``i`` lives in slot ``i % capacity``.

    Args:
        capacity: samples per channel kept; older ones are overwritten.
        channels: values per sample (interleaved as sounddevice delivers them).
        sample_rate: samples per second, for mapping sample indices to capture times.
    """

    def __init__(self, capacity: int, channels: int, sample_rate: int) -> None:
        if capacity < 1 or channels < 1 or sample_rate < 1:
            raise ValueError(f"capacity, channels and sample_rate must be positive, got "
                             f"{capacity}, {channels}, {sample_rate}")
        self.capacity = capacity
        self.channels = channels
        self.sample_rate = sample_rate
        self._data = np.zeros((capacity, channels), dtype=np.float32)
        self._written = 0
        self._reserved = 0  # the end of the write in progress (== written between writes)
        # (absolute index, monotonic time) at the end of the last write: one tuple, replaced atomically.
        self._clock: tuple[int, float] | None = None

    @property
    def written(self) -> int:
        """Samples written so far: the absolute index the next sample will get."""
        return self._written

    @property
    def last_write_time(self) -> float | None:
        """``time.monotonic()`` of the last write, None before the first."""
        clock = self._clock
        return None if clock is None else clock[1]

    def write(self, frames: np.ndarray, now: float | None = None) -> None:
        """Append ``frames`` of shape ``(n, channels)`` (n <= capacity), stamped as arriving at ``now``.

        Only one thread may write. This is what an audio callback calls: one copy, no allocation.
        """
        count = len(frames)
        if count > self.capacity:
            raise ValueError(f"a write of {count} samples does not fit a ring of {self.capacity}")
        self._reserved = self._written + count  # slots of samples before reserved - capacity get reused
        start = self._written % self.capacity
        first = min(count, self.capacity - start)
        self._data[start : start + first] = frames[:first]
        self._data[: count - first] = frames[first:]
        self._written = self._reserved  # publish only after the slots hold the new samples
        self._clock = (self._written, time.monotonic() if now is None else now)

    def read(self, start: int, stop: int) -> tuple[np.ndarray, int]:
        """Copy samples ``[start, stop)`` (``stop <= written``) as ``(stop - start, channels)``.

        Samples before index 0 read as silence. Returns the copy and how many of its leading samples
        were already overwritten (lost); those read as silence too.
        """
        written = self._written
        if stop > written or stop < start:
            raise ValueError(f"cannot read [{start}, {stop}): {written} samples written")
        out = np.zeros((stop - start, self.channels), dtype=np.float32)
        first = max(start, 0)  # samples before index 0 stay silence
        lo = max(first, written - self.capacity)
        if lo < stop:
            self._copy(lo, stop, out[lo - start :])
        # The writer may have wrapped onto the range while we copied: those samples may be torn.
        oldest_intact = self._reserved - self.capacity
        lost = min(max(oldest_intact - first, 0), stop - first)
        if lost:
            out[first - start : first - start + lost] = 0.0
        return out, lost

    def latest(self, count: int) -> tuple[np.ndarray, int]:
        """The ``count`` samples ending at the newest one (silence before the first), and the end index."""
        end = self._written
        frames, _ = self.read(end - count, end)
        return frames, end

    def capture_time(self, index: int) -> float | None:
        """When sample ``index`` arrived (monotonic seconds), extrapolated from the last write at the
        sample rate; None before the first write."""
        clock = self._clock
        if clock is None:
            return None
        end, when = clock
        return when - (end - index) / self.sample_rate

    def reader(self, start: int | None = None) -> RingReader:
        """A reader that starts at sample ``start`` (default: the next one written)."""
        return RingReader(self, self._written if start is None else start)

    def _copy(self, start: int, stop: int, out: np.ndarray) -> None:
        begin = start % self.capacity
        first = min(stop - start, self.capacity - begin)
        out[:first] = self._data[begin : begin + first]
        out[first:] = self._data[: stop - start - first]


class RingReader:
    """One consumer's read position in a :class:`RingBuffer`: each call returns what is new since the last.

    A consumer that falls more than ``capacity`` behind skips to the oldest sample still held;
    ``lost`` counts the samples it never saw.
    """

    def __init__(self, ring: RingBuffer, start: int) -> None:
        self.ring = ring
        self.position = start
        self.lost = 0

    def read(self, max_samples: int | None = None) -> np.ndarray:
        """New samples ``(n, channels)`` since the last call (at most ``max_samples``), oldest first."""
        end = self.ring.written
        oldest = end - self.ring.capacity
        if self.position < oldest:
            self.lost += oldest - self.position
            self.position = oldest
        stop = end if max_samples is None else min(end, self.position + max_samples)
        frames, lost = self.ring.read(self.position, stop)
        if lost:
            self.lost += lost
            frames = frames[lost:]
        self.position = stop
        return frames

    @property
    def available(self) -> int:
        """Samples written that this reader has not read yet."""
        return self.ring.written - self.position
