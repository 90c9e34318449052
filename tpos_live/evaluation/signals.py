"""The metrics that need no network, as pure functions of per-frame series (numpy only).

- :func:`audio_drive`: what the picture should follow, one value per video frame: the mean of the
  z-scored loudness, loudness change and spectral-flux onset strength at each frame time.
- :func:`reactivity`: the best Pearson correlation, within a lag window, between the per-frame visual
  change and :func:`audio_drive`, and that lag.
- :func:`flicker`: the share of the frame-to-frame change that reverses at once (second temporal
  difference over first), in [0, 1].

docs/evaluation.md defines each and says where it comes from.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tpos_live.audio.envelope import frame_loudness

MIN_PAIRS = 8  # fewer frame pairs than this give no meaningful correlation
_FLUX_FFT = 1024
_FLUX_HOP = 256


def _zscore(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    spread = values.std()
    if not np.isfinite(spread) or spread < 1e-12:
        return np.zeros_like(values)  # a constant series says nothing about when things happen
    return (values - values.mean()) / spread


def spectral_flux(mono: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Onset strength: the summed rise of the log-magnitude spectrum from one STFT frame to the next.

    Returns (times in seconds of each value, flux). Computed in chunks so that a long file never holds
    its whole spectrogram.
    """
    mono = np.asarray(mono, dtype=np.float32)
    if mono.ndim != 1:
        raise ValueError(f"mono must be 1-D, got shape {mono.shape}")
    window = np.hanning(_FLUX_FFT).astype(np.float32)
    starts = np.arange(0, max(len(mono) - _FLUX_FFT, 0) + 1, _FLUX_HOP)
    padded = np.pad(mono, (0, max(0, _FLUX_FFT - len(mono))))
    flux = np.zeros(len(starts))
    previous = None
    for first in range(0, len(starts), 4096):
        chunk = starts[first:first + 4096]
        frames = np.stack([padded[s:s + _FLUX_FFT] for s in chunk]) * window
        spectrum = np.log1p(100.0 * np.abs(np.fft.rfft(frames, axis=1)))
        if previous is not None:
            spectrum_prev = np.vstack([previous[None], spectrum[:-1]])
        else:
            spectrum_prev = np.vstack([spectrum[:1], spectrum[:-1]])
        flux[first:first + len(chunk)] = np.maximum(spectrum - spectrum_prev, 0.0).sum(axis=1)
        previous = spectrum[-1]
    times = (starts + _FLUX_FFT) / sample_rate  # each value describes the window ending here
    return times, flux


def audio_drive(mono: np.ndarray, sample_rate: int, times: np.ndarray) -> dict[str, np.ndarray]:
    """What the picture should follow at each frame time, and its parts (each z-scored).

    ``loudness``: windowed RMS in dB mapped to [0, 1] (the renderer's own :func:`frame_loudness`) over
    the frame interval; ``loudness_change``: its absolute change from the previous frame; ``onset``:
    the strongest spectral flux since the previous frame. ``drive`` is their mean.
    """
    times = np.asarray(times, dtype=np.float64)
    if len(times) < 2:
        raise ValueError("need at least two frame times")
    interval = float(np.median(np.diff(times)))
    loudness = frame_loudness(mono, sample_rate, times, window_seconds=max(interval, 0.02)).astype(np.float64)
    change = np.abs(np.diff(loudness, prepend=loudness[0]))
    flux_times, flux = spectral_flux(mono, sample_rate)
    # Each frame takes the peak flux of the interval since the previous frame (onsets are brief).
    edges = np.searchsorted(flux_times, np.concatenate([[times[0] - interval], times]), side="right")
    onset = np.array([flux[lo:hi].max() if hi > lo else 0.0 for lo, hi in zip(edges[:-1], edges[1:], strict=True)])
    parts = {"loudness": _zscore(loudness), "loudness_change": _zscore(change), "onset": _zscore(onset)}
    parts["drive"] = _zscore(np.mean(list(parts.values()), axis=0))
    return parts


def lagged_correlation(change: np.ndarray, drive: np.ndarray, lag: int) -> float:
    """Pearson r of ``change[i]`` with ``drive[i - lag]`` over the frames both cover (0 if either is flat)."""
    n = len(change)
    if lag >= 0:
        a, b = change[lag:], drive[:n - lag]
    else:
        a, b = change[:n + lag], drive[-lag:]
    if len(a) < MIN_PAIRS:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 1e-12 else 0.0


class Reactivity(NamedTuple):
    value: float  # best Pearson r within the lag window
    lag_ms: float  # positive: the picture follows the sound this late
    correlations: dict[str, float]  # r of each part of the drive at that lag


def reactivity(change: np.ndarray, drive: dict[str, np.ndarray], fps: float, max_lag_seconds: float = 0.5
               ) -> Reactivity:
    """The correlation of the per-frame visual ``change`` (``change[i]``: frame i against frame i - 1) with
    ``drive["drive"]`` at the best lag within +-``max_lag_seconds``.

    Raises ValueError when the video has too few frames for ``MIN_PAIRS`` pairs at every lag.
    """
    change = np.asarray(change, dtype=np.float64)
    if len(change) != len(drive["drive"]):
        raise ValueError(f"change has {len(change)} frames, the drive {len(drive['drive'])}")
    max_lag = max(0, round(max_lag_seconds * fps))
    # Frame 0 has no predecessor: its change is undefined, so the series start at frame 1.
    change, parts = change[1:], {name: values[1:] for name, values in drive.items()}
    if len(change) - max_lag < MIN_PAIRS:
        raise ValueError(f"{len(change) + 1} frames are too few: reactivity needs at least "
                         f"{MIN_PAIRS + max_lag + 1} at {fps:g} fps")
    lags = range(-max_lag, max_lag + 1)
    scores = [lagged_correlation(change, parts["drive"], lag) for lag in lags]
    best = int(np.nanargmax(scores))
    lag = lags[best]
    per_part = {name: lagged_correlation(change, values, lag) for name, values in parts.items() if name != "drive"}
    return Reactivity(float(scores[best]), 1000.0 * lag / fps, per_part)


def flicker(change_sum: float, second_sum: float) -> float:
    """sum_t mean|x_{t+1} - 2 x_t + x_{t-1}| / sum_t (mean|x_{t+1} - x_t| + mean|x_t - x_{t-1}|), in [0, 1].

    ``change_sum`` is the sum over the same frame triples of the two first differences' means and
    ``second_sum`` of the second difference's mean. 0: every change continues (steady motion, fades,
    stillness); about 0.87 for independent noise frames; 1: every change is undone by the next frame.
    """
    if change_sum <= 1e-12:
        return 0.0  # nothing changes: nothing flickers
    return float(second_sum / change_sum)


class FrameDifferences:
    """Running first and second temporal differences of small grey frames (keeps the last two only)."""

    def __init__(self) -> None:
        self.change: list[float] = []  # mean|x_t - x_{t-1}| per frame (0 for the first)
        self.second_sum = 0.0
        self.change_sum = 0.0  # over the frame triples second_sum covers
        self._previous: np.ndarray | None = None
        self._delta: np.ndarray | None = None

    def add(self, grey: np.ndarray) -> None:
        """Add the next frame: float32 values in [0, 1], any fixed shape."""
        if self._previous is None:
            self.change.append(0.0)
        else:
            delta = grey - self._previous
            self.change.append(float(np.abs(delta).mean()))
            if self._delta is not None:
                self.second_sum += float(np.abs(delta - self._delta).mean())
                self.change_sum += self.change[-1] + self.change[-2]
            self._delta = delta
        self._previous = grey

    @property
    def frames(self) -> int:
        return len(self.change)

    def flicker(self) -> float:
        return flicker(self.change_sum, self.second_sum)

    def second_difference_mean(self) -> float:
        """mean|x_{t+1} - 2 x_t + x_{t-1}| over all triples, in pixel units of [0, 1]."""
        return self.second_sum / max(1, self.frames - 2)
