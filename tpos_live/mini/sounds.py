"""The mini world's sounds: one synthesiser per concept, ``(rng, n, rate) -> float64 samples``.

Each is built from numpy noise, sines and envelopes only, with its pitches, rates and timings drawn from
``rng``, so that clips of one concept differ while keeping the concept's character. Levels are left to
the caller (:func:`tpos_live.mini.world.sound_clip` normalises): the encoder's front end takes each
segment's dB re its own peak, so level carries no meaning here.
"""

from __future__ import annotations

import numpy as np


def _band_noise(rng: np.random.Generator, n: int, rate: int, low: float, high: float) -> np.ndarray:
    """White noise kept between ``low`` and ``high`` Hz (a brick-wall filter in the FFT: exact, cheap)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    spectrum[(freqs < low) | (freqs > high)] = 0.0
    out = np.fft.irfft(spectrum, n)
    return out / (np.abs(out).max() + 1e-12)


def _add(out: np.ndarray, start: int, event: np.ndarray) -> None:
    """Mix ``event`` into ``out`` from ``start``, cut at the end."""
    stop = min(out.size, start + event.size)
    if start < stop:
        out[start:stop] += event[: stop - start]


def _decay(rate: int, seconds: float, tau: float) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.exp(-t / tau)


def _onsets(rng: np.random.Generator, n: int, rate: int, per_second: float) -> np.ndarray:
    """Sample indices of a Poisson process of ``per_second`` events."""
    count = rng.poisson(per_second * n / rate)
    return np.sort(rng.integers(0, n, count))


def rain(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    """A hiss of band-limited noise, slowly swelling, with droplets: short high blips."""
    t = np.arange(n) / rate
    swell = 1.0 + 0.25 * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * t + rng.uniform(0, 2 * np.pi))
    out = 0.5 * _band_noise(rng, n, rate, rng.uniform(400.0, 800.0), rng.uniform(5000.0, 9000.0)) * swell
    for start in _onsets(rng, n, rate, rng.uniform(15.0, 30.0)):
        envelope = _decay(rate, 0.04, rng.uniform(0.004, 0.012))
        pitch = rng.uniform(1500.0, 5000.0)
        _add(out, start, rng.uniform(0.2, 0.6) * envelope * np.sin(2 * np.pi * pitch * np.arange(envelope.size)
                                                                   / rate))
    return out


def fire(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    """A low roar under crackle: sparse clicks of bright noise, a few of them loud pops."""
    out = 0.25 * _band_noise(rng, n, rate, 30.0, rng.uniform(250.0, 500.0))
    sparks = _band_noise(rng, n, rate, 2000.0, 12000.0)
    for start in _onsets(rng, n, rate, rng.uniform(20.0, 45.0)):
        spark = sparks[start : start + round(0.015 * rate)]
        # counted in samples: a spark cut by the clip's end has a length that seconds do not give back exactly
        envelope = np.exp(-(np.arange(spark.size) / rate) / rng.uniform(0.0008, 0.003))
        loudness = rng.pareto(2.5) * 0.3 + 0.15  # heavy-tailed: mostly ticks, now and then a pop
        _add(out, start, loudness * envelope * spark)
    return out


# Risset's bell: frequency ratios of the partials to the strike note, their amplitudes and decay times
# relative to the longest (from his 1969 catalogue of computer-synthesised sounds).
_BELL_RATIOS = np.array([0.56, 0.92, 1.19, 1.71, 2.0, 2.74, 3.0, 3.76, 4.07])
_BELL_AMPLITUDES = np.array([1.0, 0.67, 1.0, 1.8, 2.67, 1.67, 1.46, 1.33, 1.33])
_BELL_DECAYS = np.array([1.0, 0.9, 0.65, 0.55, 0.325, 0.35, 0.25, 0.2, 0.15])


def bell(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    """Strikes every second or two, each a sum of inharmonic partials decaying at their own rates."""
    note, ring = rng.uniform(300.0, 700.0), rng.uniform(1.5, 3.0)
    gap = rng.uniform(1.0, 1.8)
    out = np.zeros(n)
    t = np.arange(int(ring * 2.5 * rate)) / rate
    strike = sum(a * np.exp(-t / (ring * d / 3)) * np.sin(2 * np.pi * note * r * t + p)
                 for r, a, d, p in zip(_BELL_RATIOS, _BELL_AMPLITUDES, _BELL_DECAYS,
                                       rng.uniform(0, 2 * np.pi, _BELL_RATIOS.size), strict=True))
    start = rng.uniform(0.0, gap)
    while start * rate < n:
        _add(out, int(start * rate), rng.uniform(0.7, 1.0) * strike)
        start += gap * rng.uniform(0.85, 1.15)
    return out


def drums(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    """A kick/snare pattern: kicks on beats 1 and 3 (and now and then the off-beat), snares on 2 and 4."""
    beat = 60.0 / rng.uniform(90.0, 140.0)
    t = np.arange(int(0.4 * rate)) / rate
    drop = rng.uniform(40.0, 60.0)  # the kick's pitch falls from about 3x this to it
    kick = np.sin(2 * np.pi * (drop * t + 2 * drop * 0.03 * (1 - np.exp(-t / 0.03)))) * np.exp(-t / 0.12)
    noise = _band_noise(rng, t.size, rate, 1000.0, 8000.0)
    snare = (0.7 * noise + 0.4 * np.sin(2 * np.pi * rng.uniform(160.0, 220.0) * t)) * np.exp(-t / 0.06)
    out = np.zeros(n)
    step = 0
    while step * beat / 2 * rate < n:
        start = int(step * beat / 2 * rate)
        if step % 4 == 0 or (step % 4 == 3 and rng.random() < 0.3):
            _add(out, start, kick)
        elif step % 4 == 2:
            _add(out, start, 0.8 * snare)
        step += 1
    return out


def birds(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    """Bursts of quick chirps: short fast pitch sweeps high up, in twos to fives, over a faint air."""
    out = 0.02 * _band_noise(rng, n, rate, 200.0, 3000.0)
    pitch = rng.uniform(2500.0, 5000.0)
    start = rng.uniform(0.0, 0.4)
    while start * rate < n:
        for _ in range(rng.integers(2, 6)):
            length = rng.uniform(0.04, 0.12)
            t = np.arange(int(length * rate)) / rate
            sweep = pitch * rng.uniform(0.9, 1.1) + rng.uniform(-1500.0, 1500.0) * t / length
            chirp = np.sin(2 * np.pi * np.cumsum(sweep) / rate) * np.sin(np.pi * t / length) ** 2
            _add(out, int(start * rate), chirp)
            start += length + rng.uniform(0.03, 0.1)
        start += rng.uniform(0.2, 0.7)
    return out


def siren(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    """A wail: a buzzy tone whose pitch sweeps slowly up and down between two notes."""
    low = rng.uniform(450.0, 700.0)
    high = low * rng.uniform(1.8, 2.4)
    t = np.arange(n) / rate
    sweep = 0.5 - 0.5 * np.cos(2 * np.pi * t / rng.uniform(2.5, 4.5) + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * np.cumsum(low + (high - low) * sweep) / rate
    return np.sin(phase) + 0.35 * np.sin(3 * phase) + 0.15 * np.sin(5 * phase)
