"""From captured channels to the program signal: picking or mixing down, gain, and resampling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ChannelMap:
    """How the captured channels become the program signal: one picked channel, or a mix-down; then gain.

    The program (what is recorded) keeps stereo when two channels are captured and none is picked;
    the encoder and the loudness follower always take the mono mix.
    """

    channels: int  # channels the stream delivers
    pick: int | None = None  # use only this channel (0-based); None mixes down
    gain: float = 1.0  # linear

    def __post_init__(self) -> None:
        if self.channels < 1:
            raise ValueError(f"channels must be at least 1, got {self.channels}")
        if self.pick is not None and not 0 <= self.pick < self.channels:
            raise ValueError(f"channel {self.pick} does not exist in {self.channels} channels")
        if not self.gain > 0:
            raise ValueError(f"gain must be positive, got {self.gain}")

    @property
    def program_channels(self) -> int:
        return 2 if self.pick is None and self.channels == 2 else 1

    def program(self, frames: np.ndarray) -> np.ndarray:
        """``(n, channels)`` captured frames -> ``(n, program_channels)`` float32 with gain."""
        if self.pick is not None:
            out = frames[:, self.pick : self.pick + 1]
        elif self.channels <= 2:
            out = frames
        else:
            out = frames.mean(axis=1, keepdims=True, dtype=np.float32)
        return (out * np.float32(self.gain)).astype(np.float32, copy=False)

    def mono(self, frames: np.ndarray) -> np.ndarray:
        """``(n, channels)`` captured frames -> ``(n,)`` float32 with gain."""
        selected = frames[:, self.pick] if self.pick is not None else frames.mean(axis=1, dtype=np.float32)
        return (selected * np.float32(self.gain)).astype(np.float32, copy=False)


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def resample(mono: np.ndarray, from_rate: int, to_rate: int, length: int) -> np.ndarray:
    """Band-limited resampling of a window by FFT, to exactly ``length`` samples at ``to_rate``.

    The spectrum is cut (or zero-padded) at the lower Nyquist frequency, so downsampling does not
    alias. The window is treated as periodic: its edges ring slightly, which the encoder's
    spectrogram does not mind.
    """
    if from_rate == to_rate and len(mono) == length:
        return mono.astype(np.float32, copy=False)
    needed = round(len(mono) * to_rate / from_rate)
    out = np.fft.irfft(np.fft.rfft(mono.astype(np.float64)), n=needed) * (needed / len(mono))
    if needed < length:  # keep the newest samples at the end, as the window's end is "now"
        out = np.pad(out, (length - needed, 0))
    return out[-length:].astype(np.float32)


class StreamResampler:
    """Resamples a stream block by block by linear interpolation, seamlessly across blocks.

    For the live encoder when a device cannot capture at the encoder's rate: a block's output depends
    only on the samples so far, so the stream can be pushed as it arrives. Linear interpolation lets
    a little of what lies above the lower Nyquist frequency alias when downsampling; the encoder's
    spectrogram barely sees it (48 kHz to 44.1 kHz: only 22-24 kHz folds back).
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        if from_rate < 1 or to_rate < 1:
            raise ValueError(f"rates must be positive, got {from_rate} and {to_rate}")
        self.from_rate, self.to_rate = from_rate, to_rate
        self.step = from_rate / to_rate  # input samples per output sample
        self._tail = np.zeros(0, np.float64)  # input not yet passed by the next output's position
        self._position = 0.0  # of the next output sample, in input samples from the tail's start

    def __call__(self, block: np.ndarray) -> np.ndarray:
        if self.from_rate == self.to_rate:
            return np.asarray(block, np.float32)
        x = np.concatenate([self._tail, np.asarray(block, np.float64)])
        count = int((len(x) - 1 - self._position) // self.step) + 1 if len(x) - 1 >= self._position else 0
        positions = self._position + self.step * np.arange(count)
        index = np.floor(positions).astype(np.int64)
        frac = positions - index
        upper = np.minimum(index + 1, len(x) - 1)
        out = x[index] * (1.0 - frac) + x[upper] * frac
        next_position = self._position + count * self.step
        keep = int(np.floor(next_position))
        self._tail, self._position = x[keep:], next_position - keep
        return out.astype(np.float32)
