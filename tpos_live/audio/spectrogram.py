"""Spectrogram front ends of the TPoS audio encoder: the maps its segments are cut from.

A map is computed in three steps (:func:`spectrogram`):

1. **Decibels** (:func:`frame_decibels`), one column per frame, re 1.0 and not floored:

   - ``"stft"``: the linear STFT's magnitude (periodic Hann window, ``n_fft // 2 + 1`` bins) as amplitude
     dB, ``20 * log10(max(|X|, 1e-5))``;
   - ``"mel"``: ``n_mels`` Slaney mel bands (librosa's default filterbank, fmin 0, fmax sr/2) of the power
     spectrum ``|X|^2`` as power dB, ``10 * log10(max(P, 1e-10))``.

   Both put silence at -100 dB.
2. **Floor and scale** (:func:`decibels_to_map`), by the config's ``floor``:

   - ``"official"``: dB re 1.0, floored 80 dB below a peak, ``/ 80 + 1``: the official inference map
     (``librosa.amplitude_to_db(|X|) / 80 + 1``, whose defaults are ``ref=1.0``, ``amin=1e-5`` and
     ``top_db=80``). The official peak is the whole file's (:func:`signal_peak_decibels`), which
     :func:`official_segment_maps` uses; a stream cannot know it, so :func:`segment_map` takes the
     segment's own peak unless given one. Loud bins reach about 1.5, the floor sits at ``peak / 80``.
   - ``"relative"``: dB re the map's own maximum, floored 80 dB below it, ``/ 80 + 1``: values in [0, 1]
     with the maximum at 1 whatever the level, so a gain change leaves the map as it is (the training maps
     of the earlier sound-guided project, ``ref=np.max``, with the segment's maximum as reference). Not
     the official inference map. A silent map (maximum at -100 dB) is all zeros, where librosa would call
     every bin 0 dB.
   - ``"absolute"``: dB re 1.0, floored at -80 dB, ``/ 80 + 1``: silence is 0, -80 dB..0 dB spans [0, 1]
     and louder bins go above 1 (a full-scale sine reaches about 1.6 in the ``"stft"`` map with
     ``n_fft = 1024``). The official reference with a fixed floor instead of the peak's; the maps of
     tpos-live before the choice existed, so a config that names no floor gets it for ``"stft"``
     (:data:`LEGACY_FLOOR`).
3. **Resize** (``"stft"`` only): the frequency axis alone is resized from ``n_bins`` to ``height`` rows by
   linear interpolation with half-pixel centres (what ``cv2.resize`` with ``INTER_LINEAR`` does along
   that axis, no anti-aliasing; :func:`resize_matrix`), after the floor. The time axis is not resized:
   one column per frame. A ``"mel"`` map has its ``n_mels`` rows and is not resized.

Frames are taken *inside* the audio (no centre padding): frame ``t`` covers samples
``[t * hop, t * hop + n_fft)``. So a segment of :func:`segment_samples` samples gives exactly
``segment_frames`` frames computed from that segment alone. With the absolute floor, the ``"stft"`` map of a
segment that starts at a multiple of ``hop_length`` equals the matching columns of the whole file's map
(:func:`segment_map`); with the relative floor each segment has its own reference. The official code's
centre-padded frames are the frames inside the signal padded with ``n_fft // 2`` zeros at each end
(librosa >= 0.10 pads with zeros); :func:`official_segment_maps` cuts them on the official grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from tpos_live.names import SPECTROGRAM_FLOORS

AMPLITUDE_FLOOR = 1e-5  # amin of the "stft" map: 20 * log10(1e-5) = -100 dB, below the -80 dB floor
POWER_FLOOR = 1e-10  # amin of the "mel" map (librosa's power_to_db default)
SILENCE_DB = -100.0  # what both amins give: the decibels of silence
TOP_DB = 80.0
Floor = Literal["official", "relative", "absolute"]
FLOORS: tuple[str, ...] = SPECTROGRAM_FLOORS
# The floor of a config that names none: what each map did before the choice existed, so that an encoder
# checkpoint written then loads with the maps it was trained on.
LEGACY_FLOOR: dict[str, str] = {"stft": "absolute", "mel": "relative"}
_FRAMES_PER_CHUNK = 2048  # bounds the memory of the frame matrix for long files
# Slaney's mel scale: 200/3 Hz per mel below 1 kHz, then 27 mels per factor 6.4 in frequency.
_MEL_HZ_PER_MEL = 200.0 / 3.0
_MEL_MIN_LOG_HZ = 1000.0
_MEL_MIN_LOG = _MEL_MIN_LOG_HZ / _MEL_HZ_PER_MEL  # 15 mel
_MEL_LOG_STEP = math.log(6.4) / 27.0


@dataclass(frozen=True)
class SpectrogramConfig:
    """Which map, at which resolution; ``segments`` of ``segment_frames`` columns make one encoder window.

    ``floor`` is the dB reference of the map (module docstring): ``"official"`` (the official inference
    map: dB re 1.0 floored 80 dB below the file's peak; what ``import-tpos`` writes), ``"relative"`` (dB re
    the segment's own maximum; what ``train-encoder`` uses unless told otherwise) or ``"absolute"`` (dB re
    1.0 floored at -80 dB). Left None, it becomes the kind's :data:`LEGACY_FLOOR`, which is what a saved
    config without the field was made with.
    """

    kind: Literal["stft", "mel"]
    sample_rate: int = 44100
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 128
    height: int = 128
    segment_frames: int = 153
    segments: int = 5
    floor: Floor | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("stft", "mel"):
            raise ValueError(f"kind must be 'stft' or 'mel', got {self.kind!r}")
        if self.floor is None:
            object.__setattr__(self, "floor", LEGACY_FLOOR[self.kind])
        if self.floor not in FLOORS:
            raise ValueError(f"floor must be one of {', '.join(FLOORS)}, got {self.floor!r}")
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


def spectrogram(mono: np.ndarray, cfg: SpectrogramConfig, peak: float | None = None) -> np.ndarray:
    """The ``cfg.kind`` map of a mono signal at ``cfg.sample_rate``: ``(height, frames)`` float32.

    Needs at least ``n_fft`` samples. With the relative and official floors the dB reference is the
    maximum of this map (the official floor's: ``peak`` when given), so the map of a part differs from
    the columns of the whole by that reference; with the absolute floor every column depends on its own
    frame only.
    """
    values = decibels_to_map(frame_decibels(mono, cfg), cfg, peak if cfg.floor == "official" else None)
    if cfg.kind == "stft":
        values = _cached_resize(cfg.n_bins, cfg.height) @ values
    return values.astype(np.float32)


def frame_decibels(mono: np.ndarray, cfg: SpectrogramConfig) -> np.ndarray:
    """Step 1 of the module docstring: ``(n_bins, frames)`` amplitude dB (``"stft"``) or ``(n_mels, frames)``
    power dB (``"mel"``), re 1.0, not floored, float64. Needs at least ``n_fft`` samples."""
    mono = _check_mono(mono)
    if len(mono) < cfg.n_fft:
        raise ValueError(f"need at least n_fft={cfg.n_fft} samples for one frame, got {len(mono)}")
    magnitude = stft_magnitude(mono, cfg.n_fft, cfg.hop_length)
    if cfg.kind == "stft":
        return 20.0 * np.log10(np.maximum(magnitude, AMPLITUDE_FLOOR))
    mel_power = _cached_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels) @ (magnitude**2)
    return 10.0 * np.log10(np.maximum(mel_power, POWER_FLOOR))


def decibels_to_map(decibels: np.ndarray, cfg: SpectrogramConfig, peak: float | None = None) -> np.ndarray:
    """Step 2 of the module docstring: dB from :func:`frame_decibels` floored and scaled by ``cfg.floor``.

    ``peak`` is the dB the relative and official floors lie 80 dB below, by default the maximum of
    ``decibels`` (give it when ``decibels`` holds only some rows or columns of a map: the official floor
    takes the whole file's). A relative or official map whose peak is silence is all zeros.
    """
    if cfg.floor == "absolute":
        return np.maximum(decibels, -TOP_DB) / TOP_DB + 1.0
    peak = float(np.max(decibels)) if peak is None else peak
    if peak <= SILENCE_DB:
        # A silent segment must look silent, since windows are padded with silence: zeros, as the
        # official code's canvas. librosa would call every bin 0 dB (ref=np.max), or -100 dB (ref=1.0,
        # -0.25 in the official map of an all-silent file).
        return np.zeros(decibels.shape)
    if cfg.floor == "official":
        return np.maximum(decibels, peak - TOP_DB) / TOP_DB + 1.0
    return np.maximum(decibels - peak, -TOP_DB) / TOP_DB + 1.0


def segment_map(mono_segment: np.ndarray, cfg: SpectrogramConfig, peak: float | None = None) -> np.ndarray:
    """The map of one encoder segment, ``(height, segment_frames)`` float32, from its audio alone.

    ``mono_segment`` must hold exactly :func:`segment_samples` samples. With the absolute floor, the
    ``"stft"`` segment starting at sample ``s`` (a multiple of ``hop_length``) gives exactly the columns
    ``s // hop_length + [0, segment_frames)`` of ``spectrogram(whole)``. ``peak``: the dB the official
    floor lies 80 dB below (None: the segment's own peak, what a stream and the sliding windows use since
    they cannot know the file's); the relative floor always takes the segment's own maximum.

    Where this differs from the official TPoS code, and why: the official inference computes the map of
    a whole file (centre-padded frames, floored below the file's peak), crops one ~8.9 s window from it
    and cuts that into 5 segments (:func:`official_segment_maps` reproduces that, without the crop).
    Here a segment is computed from its own samples, so that a streaming window gives the same maps as a
    whole file, and the map (and the CNN feature) of a segment is computed once and reused by every window
    that contains it. The cost: with the official floor the reference is the segment's peak, not the
    file's, and a relative map does not show how loud a segment is next to the others of its window.
    """
    mono_segment = _check_mono(mono_segment)
    expected = segment_samples(cfg)
    if len(mono_segment) != expected:
        raise ValueError(f"a segment has {expected} samples, got {len(mono_segment)}")
    return spectrogram(mono_segment, cfg, peak)


def official_stride(cfg: SpectrogramConfig) -> int:
    """Samples between the starts of consecutive segments on the official grid, ``segment_frames *
    hop_length``: 78,336 for the defaults (a segment is 153 centre-padded columns; its 78,848 samples
    overlap the next segment's by ``n_fft - hop_length``)."""
    return cfg.segment_frames * cfg.hop_length


def centred_frame_count(n_samples: int, cfg: SpectrogramConfig) -> int:
    """Columns of the official (centre-padded) map of ``n_samples`` samples: ``1 + n_samples // hop``."""
    return 1 + n_samples // cfg.hop_length


def signal_peak_decibels(mono: np.ndarray, cfg: SpectrogramConfig) -> float:
    """The maximum dB of the centre-padded frames of a whole signal: the official floor's peak
    (``amplitude_to_db`` floors at the maximum of the STFT it is given, the whole file's)."""
    padded = _centre_padded(_check_mono(mono), cfg)
    frames = frame_count(len(padded), cfg)
    peak = SILENCE_DB
    for first in range(0, frames, _FRAMES_PER_CHUNK):
        count = min(_FRAMES_PER_CHUNK, frames - first)
        chunk = padded[first * cfg.hop_length : (first + count - 1) * cfg.hop_length + cfg.n_fft]
        peak = max(peak, float(frame_decibels(chunk, cfg).max()))
    return peak


def official_segment_maps(mono: np.ndarray, cfg: SpectrogramConfig) -> np.ndarray:
    """``(K, height, segment_frames)`` float32: the official code's map of a whole signal, cut into
    consecutive segments of ``segment_frames`` columns from column 0.

    As the official ``_preprocess``: centre-padded frames (zeros beyond both ends), the floor as
    :func:`decibels_to_map` makes it with the whole signal's peak for the official floor (the relative
    floor takes each segment's own maximum), and columns past the signal's last frame 0, as the zero
    canvas the official code places a short file in. Segment k starts at sample ``k * stride - n_fft // 2``
    (:func:`official_stride`). K covers every column of the signal. Not done: the official random crop
    of one 864-column window and the random 0-18 column shift of each segment (this is the crop at
    column 0, extended to the whole signal, with no shift).
    """
    audio = _check_mono(mono)
    columns = centred_frame_count(len(audio), cfg)
    count = -(-columns // cfg.segment_frames)
    stride, length = official_stride(cfg), segment_samples(cfg)
    padded = _centre_padded(audio, cfg, total=(count - 1) * stride + length)
    peak = signal_peak_decibels(audio, cfg) if cfg.floor == "official" else None
    maps = np.stack([segment_map(padded[k * stride : k * stride + length], cfg, peak) for k in range(count)])
    column = np.arange(count * cfg.segment_frames).reshape(count, 1, cfg.segment_frames)
    return np.where(column < columns, maps, np.float32(0.0))


def _centre_padded(audio: np.ndarray, cfg: SpectrogramConfig, total: int = 0) -> np.ndarray:
    """``audio`` with ``n_fft // 2`` zeros before it and as many after it, or more to make ``total``
    samples in all."""
    half = cfg.n_fft // 2
    after = max(half, total - half - len(audio))
    return np.concatenate([np.zeros(half), audio, np.zeros(after)])


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


def stft_magnitude(mono: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
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
