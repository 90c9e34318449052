"""Spectrogram front ends of the TPoS audio encoder: the maps its segments are cut from.

Two maps, both scaled the way the official TPoS code does it:

- ``"stft"`` (what the official code feeds the encoder at inference): linear STFT magnitude (Hann
  window, ``n_fft // 2 + 1`` bins), amplitude in dB re 1.0 (``20 * log10(max(1e-5, |X|))``), floored
  at -80 dB, ``/ 80 + 1``, then the frequency axis resized to ``height`` rows (bilinear, half-pixel
  centres, like ``cv2.resize`` / ``F.interpolate(align_corners=False)``). Silence is 0 and -80 dB..0 dB
  spans [0, 1]; louder bins go above 1 (a full-scale sine reaches about 1.6 with ``n_fft = 1024``):
  the official code does not rescale the STFT, and neither do we.
- ``"mel"`` (what the official encoder was trained on): ``n_mels`` Slaney mel bands (librosa's default
  filterbank, fmin 0, fmax sr/2) of the power spectrum, dB re the map's maximum, floored 80 dB below
  it, ``/ 80 + 1``: values in [0, 1]. The official training data used librosa's default
  ``n_fft = 2048``; set it to match.

Frames are taken *inside* the audio (no centre padding): frame ``t`` covers samples
``[t * hop, t * hop + n_fft)``. So a segment of :func:`segment_samples` samples gives exactly
``segment_frames`` frames computed from that segment alone, and the STFT map of a segment that starts
at a multiple of ``hop_length`` equals the matching columns of the whole file's map (:func:`segment_map`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

AMPLITUDE_FLOOR = 1e-5  # amin of the "stft" map: 20 * log10(1e-5) = -100 dB, below the -80 dB floor
POWER_FLOOR = 1e-10  # amin of the "mel" map (librosa's power_to_db default)
TOP_DB = 80.0
_FRAMES_PER_CHUNK = 2048  # bounds the memory of the frame matrix for long files
# Slaney's mel scale: 200/3 Hz per mel below 1 kHz, then 27 mels per factor 6.4 in frequency.
_MEL_HZ_PER_MEL = 200.0 / 3.0
_MEL_MIN_LOG_HZ = 1000.0
_MEL_MIN_LOG = _MEL_MIN_LOG_HZ / _MEL_HZ_PER_MEL  # 15 mel
_MEL_LOG_STEP = math.log(6.4) / 27.0


@dataclass(frozen=True)
class SpectrogramConfig:
    """Which map, at which resolution; ``segments`` of ``segment_frames`` columns make one encoder window."""

    kind: Literal["stft", "mel"]
    sample_rate: int = 44100
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 128
    height: int = 128
    segment_frames: int = 153
    segments: int = 5

    def __post_init__(self) -> None:
        if self.kind not in ("stft", "mel"):
            raise ValueError(f"kind must be 'stft' or 'mel', got {self.kind!r}")
        if self.sample_rate < 1000:
            raise ValueError(f"sample_rate must be at least 1000 Hz, got {self.sample_rate}")
        if self.n_fft < 16:
            raise ValueError(f"n_fft must be at least 16, got {self.n_fft}")
        if not 1 <= self.hop_length <= self.n_fft:
            raise ValueError(f"hop_length must be in [1, n_fft={self.n_fft}], got {self.hop_length}")
        if self.n_mels < 1 or self.height < 1 or self.segment_frames < 1 or self.segments < 1:
            raise ValueError("n_mels, height, segment_frames and segments must all be at least 1")
        if self.kind == "mel" and self.height != self.n_mels:
            raise ValueError(
                f"a mel map has n_mels rows: height ({self.height}) must equal n_mels ({self.n_mels})"
            )

    @property
    def n_bins(self) -> int:
        """Number of STFT frequency bins, ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1


def segment_samples(cfg: SpectrogramConfig) -> int:
    """Number of audio samples that give exactly ``cfg.segment_frames`` frames.

    ``n_fft + (segment_frames - 1) * hop_length``: 78,848 samples (1.788 s at 44.1 kHz) for the defaults.
    """
    return cfg.n_fft + (cfg.segment_frames - 1) * cfg.hop_length


def frame_count(n_samples: int, cfg: SpectrogramConfig) -> int:
    """Number of frames :func:`spectrogram` makes from ``n_samples`` samples (0 below one frame)."""
    if n_samples < cfg.n_fft:
        return 0
    return 1 + (n_samples - cfg.n_fft) // cfg.hop_length


def spectrogram(mono: np.ndarray, cfg: SpectrogramConfig) -> np.ndarray:
    """The ``cfg.kind`` map of a mono signal at ``cfg.sample_rate``: ``(height, frames)`` float32.

    Needs at least ``n_fft`` samples. For ``"mel"`` the dB reference is the maximum of this map, so
    the map of a part differs from the columns of the whole by that reference; ``"stft"`` columns
    depend on their own frame only.
    """
    mono = _check_mono(mono)
    if len(mono) < cfg.n_fft:
        raise ValueError(f"need at least n_fft={cfg.n_fft} samples for one frame, got {len(mono)}")
    magnitude = _stft_magnitude(mono, cfg.n_fft, cfg.hop_length)
    if cfg.kind == "stft":
        return _stft_map(magnitude, cfg)
    return _mel_map(magnitude, cfg)


def segment_map(mono_segment: np.ndarray, cfg: SpectrogramConfig) -> np.ndarray:
    """The map of one encoder segment, ``(height, segment_frames)`` float32, from its audio alone.

    ``mono_segment`` must hold exactly :func:`segment_samples` samples. For ``"stft"``, the segment
    starting at sample ``s`` (a multiple of ``hop_length``) gives exactly the columns
    ``s // hop_length + [0, segment_frames)`` of ``spectrogram(whole)``.

    Where this differs from the official TPoS code, and why: the official inference computes the map
    of a whole ~8.9 s window (centre-padded librosa STFT, resized on both axes to 128 x 768), crops it
    at a *random* offset and cuts it into 5 segments, so its numbers depend on the window and on the
    draw; its training mel maps take their dB reference from each 10 s clip. Here every segment is
    computed from its own samples on a fixed grid, with an absolute -80 dB floor ("stft") or the
    segment's own maximum as reference ("mel"). That makes the result deterministic, makes a streaming
    window give the same maps as a whole file, and lets the map (and the CNN feature) of a segment be
    computed once and reused by every window that contains it.
    """
    mono_segment = _check_mono(mono_segment)
    expected = segment_samples(cfg)
    if len(mono_segment) != expected:
        raise ValueError(f"a segment has {expected} samples, got {len(mono_segment)}")
    return spectrogram(mono_segment, cfg)


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney mel scale (librosa's default, ``htk=False``): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _MEL_HZ_PER_MEL
    logarithmic = _MEL_MIN_LOG + np.log(np.maximum(hz, _MEL_MIN_LOG_HZ) / _MEL_MIN_LOG_HZ) / _MEL_LOG_STEP
    return np.where(hz >= _MEL_MIN_LOG_HZ, logarithmic, linear)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _MEL_HZ_PER_MEL
    logarithmic = _MEL_MIN_LOG_HZ * np.exp(_MEL_LOG_STEP * (mel - _MEL_MIN_LOG))
    return np.where(mel >= _MEL_MIN_LOG, logarithmic, linear)


def mel_band_edges(sample_rate: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """The ``n_mels + 2`` frequencies (Hz) equally spaced in mel: filter ``i`` rises from edge ``i``, peaks at
    edge ``i + 1`` (its centre) and falls to zero at edge ``i + 2``."""
    fmax = sample_rate / 2 if fmax is None else fmax
    mels = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)
    return mel_to_hz(mels)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Triangular Slaney-normalised mel filters, ``(n_mels, n_fft // 2 + 1)`` float64, like librosa's default.

    Each triangle spans its band of :func:`mel_band_edges` and is scaled by ``2 / band width`` so that every
    filter has unit area in Hz (Slaney's normalisation: wide high bands do not outweigh narrow low ones).
    """
    bin_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_band_edges(sample_rate, n_mels, fmin, fmax)
    widths = np.diff(edges)
    rising = (bin_hz[None, :] - edges[:-2, None]) / widths[:-1, None]
    falling = (edges[2:, None] - bin_hz[None, :]) / widths[1:, None]
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    return triangles * (2.0 / (edges[2:] - edges[:-2]))[:, None]


def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` matrix of 1-D linear interpolation with half-pixel centres (cv2.resize INTER_LINEAR,
    ``F.interpolate(mode="bilinear", align_corners=False)`` along one axis; no anti-aliasing)."""
    source = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    source = np.clip(source, 0.0, n_in - 1)
    lower = np.floor(source).astype(np.int64)
    upper = np.minimum(lower + 1, n_in - 1)
    frac = source - lower
    matrix = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    np.add.at(matrix, (rows, lower), 1.0 - frac)
    np.add.at(matrix, (rows, upper), frac)
    return matrix


def _check_mono(mono: np.ndarray) -> np.ndarray:
    mono = np.asarray(mono)
    if mono.ndim != 1:
        raise ValueError(f"expected mono audio (one dimension), got shape {mono.shape}")
    return mono.astype(np.float64, copy=False)


@lru_cache(maxsize=8)
def _hann(n_fft: int) -> np.ndarray:
    # Periodic Hann (scipy get_window("hann", fftbins=True)), the window librosa uses.
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)


def _stft_magnitude(mono: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """``|STFT|``, ``(n_fft // 2 + 1, frames)`` float64, frames inside the signal only."""
    frames = np.lib.stride_tricks.sliding_window_view(mono, n_fft)[::hop_length]
    window = _hann(n_fft)
    columns = [
        np.abs(np.fft.rfft(frames[start : start + _FRAMES_PER_CHUNK] * window, axis=1))
        for start in range(0, len(frames), _FRAMES_PER_CHUNK)
    ]
    return np.concatenate(columns, axis=0).T


@lru_cache(maxsize=8)
def _cached_resize(n_in: int, n_out: int) -> np.ndarray:
    return resize_matrix(n_in, n_out)


@lru_cache(maxsize=8)
def _cached_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    return mel_filterbank(sample_rate, n_fft, n_mels)


def _stft_map(magnitude: np.ndarray, cfg: SpectrogramConfig) -> np.ndarray:
    decibels = 20.0 * np.log10(np.maximum(magnitude, AMPLITUDE_FLOOR))
    scaled = np.maximum(decibels, -TOP_DB) / TOP_DB + 1.0
    return (_cached_resize(cfg.n_bins, cfg.height) @ scaled).astype(np.float32)


def _mel_map(magnitude: np.ndarray, cfg: SpectrogramConfig) -> np.ndarray:
    mel_power = _cached_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels) @ (magnitude**2)
    peak = mel_power.max()
    if peak <= POWER_FLOOR:
        # Silence. librosa's power_to_db(ref=np.max) would call every bin 0 dB (the loudest value, 1 here);
        # a silent segment must look silent, since windows are padded with silence.
        return np.zeros(mel_power.shape, dtype=np.float32)
    decibels = 10.0 * np.log10(np.maximum(mel_power, POWER_FLOOR) / peak)
    return (np.maximum(decibels, -TOP_DB) / TOP_DB + 1.0).astype(np.float32)
