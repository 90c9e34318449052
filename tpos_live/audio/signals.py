"""Test signals (tones, noise, silence, sequences of them) and the source that plays one in real time."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tpos_live.audio.channels import ChannelMap, db_to_gain
from tpos_live.audio.sources import Pacer, RingSource
from tpos_live.reporting import Reporter

Signal = Callable[[int, int], np.ndarray]
"""``signal(start, count)`` -> ``(count, channels)`` float32: samples ``start .. start + count``."""


def tone(freq: float, sample_rate: int, amplitude: float = 0.5, channels: int = 1) -> Signal:
    """A sine at ``freq`` Hz."""
    def signal(start: int, count: int) -> np.ndarray:
        t = (start + np.arange(count)) / sample_rate
        wave = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
        return np.repeat(wave[:, None], channels, axis=1)
    return signal


def noise(amplitude: float = 0.3, channels: int = 1, seed: int = 0) -> Signal:
    """White noise; each sample depends only on its index (drawn in seeded chunks of ``_NOISE_CHUNK``)."""
    def chunk(number: int) -> np.ndarray:
        generator = np.random.default_rng([seed, number])
        return (amplitude * generator.standard_normal((_NOISE_CHUNK, channels))).astype(np.float32)

    def signal(start: int, count: int) -> np.ndarray:
        first, last = start // _NOISE_CHUNK, (start + count - 1) // _NOISE_CHUNK
        run = np.concatenate([chunk(n) for n in range(first, last + 1)])
        offset = start - first * _NOISE_CHUNK
        return run[offset : offset + count]
    return signal


_NOISE_CHUNK = 4096


def silence(channels: int = 1) -> Signal:
    def signal(start: int, count: int) -> np.ndarray:
        return np.zeros((count, channels), np.float32)
    return signal


def sequence(parts: Sequence[tuple[float, Signal]], sample_rate: int, loop: bool = True) -> Signal:
    """Signals one after another, ``(seconds, signal)`` each; after the last, start over (or silence)."""
    lengths = np.array([round(seconds * sample_rate) for seconds, _ in parts])
    edges = np.concatenate([[0], np.cumsum(lengths)])
    period = int(edges[-1])
    channels = parts[0][1](0, 1).shape[1]

    def signal(start: int, count: int) -> np.ndarray:
        out = np.zeros((count, channels), np.float32)
        offset = 0
        while offset < count:  # one run per part the block touches
            index = start + offset
            if index >= period and not loop:
                break
            position = index % period
            part = int(np.searchsorted(edges, position, side="right") - 1)
            run = min(count - offset, int(edges[part + 1]) - position)
            out[offset : offset + run] = parts[part][1](index, run)
            offset += run
        return out

    return signal


def demo_pattern(sample_rate: int, seconds: float = 2.0, channels: int = 1) -> Signal:
    """Silence, noise, a 440 Hz tone, a 1760 Hz tone, ``seconds`` each, over and over."""
    return sequence([(seconds, silence(channels)), (seconds, noise(channels=channels)),
                     (seconds, tone(440.0, sample_rate, channels=channels)),
                     (seconds, tone(1760.0, sample_rate, channels=channels))], sample_rate)


class SyntheticSource(RingSource):
    """A generated signal at real-time pace: a source for trying the engine without a sound card.

    ``signal`` may be replaced while it runs (the next block comes from the new one).
    """

    def __init__(self, signal: Signal, sample_rate: int = 44100, channels: int = 1, gain_db: float = 0.0,
                 buffer_seconds: float = 30.0, report: Reporter | None = None,
                 name: str = "synthetic") -> None:
        super().__init__(f"{name}, {sample_rate} Hz, {channels} ch", sample_rate,
                         ChannelMap(channels, None, db_to_gain(gain_db)), buffer_seconds, report)
        self.signal = signal
        self.position = 0
        self._pacer = Pacer(self._next_block, self.ring, report=self.report)

    def start(self) -> None:
        self.state = "running"
        self._pacer.start()

    def stop(self) -> None:
        self._pacer.stop()
        self.state = "stopped"

    def _next_block(self, count: int) -> np.ndarray:
        block = self.signal(self.position, count)
        self.position += count
        return block
