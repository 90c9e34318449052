"""Write examples/groove.wav: ten seconds whose sound changes every few seconds.

Silence, then rain-like noise, then a rising tone, then a drum groove with a bass line:
distinct sections, so a render shows the picture following the sound. Deterministic.
"""

from __future__ import annotations

import sys
import wave
from pathlib import Path

import numpy as np

RATE = 22050


def section(seconds: float) -> np.ndarray:
    return np.arange(int(seconds * RATE)) / RATE


def groove() -> np.ndarray:
    rng = np.random.default_rng(0)
    quiet = np.zeros(int(1.5 * RATE))
    t = section(2.5)
    rain = rng.normal(0, 0.25, t.size) * np.minimum(1, t / 0.5)
    t = section(2.5)
    rising = 0.5 * np.sin(2 * np.pi * (220 * t + 220 * t**2 / 2.5))
    t = section(3.5)
    beat = (t * 4) % 1.0  # four beats per second... 120 bpm eighths
    kick = np.sin(2 * np.pi * 55 * t) * np.exp(-beat * 12) * (np.floor(t * 4) % 2 == 0)
    hat = rng.normal(0, 0.2, t.size) * np.exp(-beat * 40)
    bass = 0.3 * np.sign(np.sin(2 * np.pi * 82.4 * t))
    drums = 0.6 * kick + hat + 0.3 * bass
    audio = np.concatenate([quiet, rain, rising, drums])
    return np.clip(audio, -1, 1)


def main(path: str = "examples/groove.wav") -> None:
    samples = (groove() * 32767 * 0.9).astype("<i2")
    with wave.open(str(Path(path)), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(samples.tobytes())


if __name__ == "__main__":
    main(*sys.argv[1:])
