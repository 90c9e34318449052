"""Loudness at frame times: windowed RMS in dBFS mapped to [0, 1], smoothed by an attack/release follower.

The renderer scales the audio guidance per frame by this envelope, so beats show at once while the
semantic condition follows at the encoder's slower hop rate.
"""

from __future__ import annotations

import numpy as np

_MIN_MEAN_SQUARE = 1e-20  # -200 dBFS: keeps log10 finite for digital silence


def frame_loudness(
    mono: np.ndarray,
    sample_rate: int,
    times: np.ndarray,
    window_seconds: float = 0.05,
    floor_db: float = -60.0,
) -> np.ndarray:
    """Loudness in [0, 1] of the window ending at each time.

    The RMS over ``window_seconds`` before each time (seconds) is converted to dBFS and mapped linearly
    from ``floor_db`` -> 0 to 0 dBFS -> 1, then clipped. Samples before the start or past the end count
    as silence. A full-scale sine (-3 dBFS RMS) gives 0.95 with the default floor.
    """
    mono = np.asarray(mono)
    times = np.asarray(times, dtype=np.float64)
    if mono.ndim != 1:
        raise ValueError(f"mono must be 1-D, got shape {mono.shape}")
    if times.ndim != 1 or not np.all(np.isfinite(times)):
        raise ValueError("times must be a 1-D array of finite seconds")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if window_seconds <= 0:
        raise ValueError(f"window_seconds must be positive, got {window_seconds}")
    if floor_db >= 0:
        raise ValueError(f"floor_db must be negative, got {floor_db}")

    window = max(1, round(window_seconds * sample_rate))
    # Prefix sums of squares give every window's energy in O(1); float64 keeps the differences exact enough.
    energy = np.concatenate([[0.0], np.cumsum(np.square(mono, dtype=np.float64))])
    ends = np.round(times * sample_rate).astype(np.int64)
    # Clipping both ends to the signal leaves out the parts of a window outside it: they are silence.
    in_ends = np.clip(ends, 0, len(mono))
    in_starts = np.clip(ends - window, 0, len(mono))
    mean_square = np.maximum(energy[in_ends] - energy[in_starts], 0.0) / window
    db = 10.0 * np.log10(np.maximum(mean_square, _MIN_MEAN_SQUARE))
    return np.clip(1.0 - db / floor_db, 0.0, 1.0).astype(np.float32)


def attack_release(
    levels: np.ndarray,
    dt: float | np.ndarray,
    attack_seconds: float,
    release_seconds: float,
    initial: float = 0.0,
) -> np.ndarray:
    """Follow ``levels``: rise with time constant ``attack_seconds``, fall with ``release_seconds``.

    ``dt`` is the time in seconds between consecutive levels (a scalar), or per level (an array: ``dt[i]`` is
    the time from the previous output, or from ``initial``, to ``levels[i]``). ``initial`` is the state before
    the first level, so a live caller continues a previous block by passing its last output.
    """
    levels = np.asarray(levels, dtype=np.float64)
    if levels.ndim != 1:
        raise ValueError(f"levels must be 1-D, got shape {levels.shape}")
    if attack_seconds <= 0 or release_seconds <= 0:
        raise ValueError(
            f"attack_seconds and release_seconds must be positive, got {attack_seconds}, {release_seconds}"
        )
    if np.ndim(dt) == 0:
        if dt <= 0:
            raise ValueError(f"dt must be positive, got {dt}")
        steps = np.full(len(levels), float(dt))
    else:
        steps = np.asarray(dt, dtype=np.float64)
        if steps.shape != levels.shape or np.any(steps < 0):
            raise ValueError("dt as an array must match levels in shape and be non-negative")

    # Each step moves the fraction 1 - exp(-dt / tau) of the way to the target, tau by direction.
    rise = -np.expm1(-steps / attack_seconds)
    fall = -np.expm1(-steps / release_seconds)
    out = np.empty(len(levels), dtype=np.float32)
    state = float(initial)
    for i, (target, up, down) in enumerate(zip(levels.tolist(), rise.tolist(), fall.tolist(), strict=True)):
        state += (up if target > state else down) * (target - state)
        out[i] = state
    return out


def loudness_envelope(
    mono: np.ndarray,
    sample_rate: int,
    times: np.ndarray,
    attack_seconds: float,
    release_seconds: float,
    window_seconds: float = 0.05,
) -> np.ndarray:
    """``frame_loudness`` at non-decreasing ``times`` smoothed by ``attack_release``, in [0, 1].

    The follower starts at rest at time 0, where the signal starts (silence before it), so the first
    step spans from 0 (or from ``times[0]`` if that is negative) to ``times[0]``.
    """
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or np.any(np.diff(times) < 0):
        raise ValueError("times must be a 1-D array of non-decreasing seconds")
    levels = frame_loudness(mono, sample_rate, times, window_seconds)
    if len(times) == 0:
        return levels
    steps = np.diff(times, prepend=min(times[0], 0.0))
    return attack_release(levels, steps, attack_seconds, release_seconds, initial=0.0)


def guidance_multiplier(loudness: np.ndarray, depth: float) -> np.ndarray:
    """The multiplier of g_s per frame from the loudness envelope (0..1): 1 - depth + depth * loudness, so
    depth 0 leaves g_s as it is (the paper) and depth 1 follows the loudness all the way."""
    return 1.0 - depth + depth * loudness
