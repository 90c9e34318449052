"""The audio-source protocol and what every source shares: its ring, state, counters and pacing.

Every source fills a :class:`~tpos_live.audio.ringbuffer.RingBuffer` in real time and nothing else;
consumers (the encoder, the renderer's loudness follower, a recorder) read from the ring at their
own pace. Sources: :class:`~tpos_live.audio.capture.DeviceSource` (a capture device),
:class:`~tpos_live.audio.file_source.FileSource` (a file in real time) and
:class:`~tpos_live.audio.signals.SyntheticSource` (a test signal).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from tpos_live.audio.channels import ChannelMap, resample
from tpos_live.audio.ringbuffer import RingBuffer
from tpos_live.reporting import Reporter, ignore_report
from tpos_live.worker import Stage


@runtime_checkable
class AudioSource(Protocol):
    """What the live engine needs from a source of sound.

    Attributes:
        description: for messages, e.g. "pulse (ALSA), 44100 Hz, 2 ch".
        sample_rate: of the samples in ``ring``.
        ring: the captured frames, ``ring.channels`` of them per sample.
        channel_map: from captured frames to the program and mono signals.
        state: one of "stopped", "starting", "running", "lost" (device gone, reopening), "finished"
            (a file played to its end).
        overflows: input overflows reported by the device (samples PortAudio had to drop).
        losses: times the device was lost.
    """

    description: str
    sample_rate: int
    ring: RingBuffer
    channel_map: ChannelMap
    state: str
    overflows: int
    losses: int

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def capture_time(self, index: int) -> float | None:
        """Monotonic time at which sample ``index`` was captured (None before any audio)."""
        ...

    def mono_window(self, count: int, rate: int | None = None) -> tuple[np.ndarray, int]:
        """The newest ``count`` samples as mono at ``rate`` (default: the source's) and the ring's end."""
        ...


class RingSource:
    """The state every source shares: its ring, channel map, state, counters and reporter."""

    def __init__(self, description: str, sample_rate: int, channel_map: ChannelMap, buffer_seconds: float,
                 report: Reporter | None) -> None:
        if not buffer_seconds >= 1.0:
            raise ValueError(f"buffer_seconds must be at least 1, got {buffer_seconds}")
        self.description = description
        self.sample_rate = sample_rate
        self.channel_map = channel_map
        self.ring = RingBuffer(round(buffer_seconds * sample_rate), channel_map.channels, sample_rate)
        self.state = "stopped"
        self.overflows = 0
        self.losses = 0
        self.input_latency = 0.0  # seconds between the sound reaching the device and its callback
        self.report = report or ignore_report

    def capture_time(self, index: int) -> float | None:
        arrived = self.ring.capture_time(index)
        return None if arrived is None else arrived - self.input_latency

    def mono_window(self, count: int, rate: int | None = None) -> tuple[np.ndarray, int]:
        rate = rate or self.sample_rate
        needed = count if rate == self.sample_rate else int(np.ceil(count * self.sample_rate / rate)) + 1
        frames, end = self.ring.latest(needed)
        mono = self.channel_map.mono(frames)
        return resample(mono, self.sample_rate, rate, count), end


class Pacer(Stage):
    """Feeds a ring from a function at wall-clock pace, in fixed blocks, like an audio callback would."""

    name = "audio-pacer"

    def __init__(self, fill: Callable[[int], np.ndarray | None], ring: RingBuffer,
                 block_seconds: float = 0.01, on_end: Callable[[], None] | None = None,
                 report: Reporter = ignore_report) -> None:
        super().__init__(report)
        self.fill, self.ring, self.on_end = fill, ring, on_end
        self.block = max(1, round(block_seconds * ring.sample_rate))

    def _run(self) -> None:
        started, produced = time.monotonic(), 0
        interval = self.block / self.ring.sample_rate
        while not self._stop.wait(interval / 2):
            due = round((time.monotonic() - started) * self.ring.sample_rate)
            while produced + self.block <= due:
                frames = self.fill(self.block)
                if frames is None:  # the signal has ended
                    if self.on_end is not None:
                        self.on_end()
                    return
                self.ring.write(frames)
                produced += self.block
