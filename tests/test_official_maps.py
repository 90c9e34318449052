"""The official floor and grid: the maps of the official windows equal the official inference's steps.

The official ``_preprocess`` (ku-vai/TPoS, ``ldm/sound/util.py``) is re-typed below with numpy, step by
step as librosa and the script compute it, with our resize matrix in place of ``cv2.resize``. Both sides
take the same samples (decoded and resampled by us; the official code resamples with librosa), so the
test checks the map steps, not the decoder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tpos_live.audio.decode import decode_audio
from tpos_live.audio.spectrogram import (
    SpectrogramConfig,
    frame_decibels,
    official_segment_maps,
    resize_matrix,
    segment_map,
    segment_samples,
    signal_peak_decibels,
)
from tpos_live.conditioning.windows import official_window_maps

OFFICIAL = SpectrogramConfig(kind="stft", floor="official")
GROOVE = Path(__file__).resolve().parents[1] / "examples" / "groove.wav"
SR = 44100


def retyped_official_preprocess(y: np.ndarray, crop: int, num_frames: int = 5) -> np.ndarray:
    """The official ``_preprocess`` with its random draws given: the 864-column crop (or the offset in the
    zero canvas of a short file) at ``crop``, and no shift of the segments in their 172-column canvas."""
    n_fft, hop_length = 1024, 512
    # librosa.stft(y, n_fft=1024, hop_length=512): center=True pads n_fft // 2 zeros at each end
    # (pad_mode "constant", librosa >= 0.10), periodic Hann window.
    padded = np.pad(y.astype(np.float64), n_fft // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    magnitude = np.abs(np.fft.rfft(frames * window, axis=1)).T
    # librosa.amplitude_to_db(S) = power_to_db(S**2, ref=1.0**2, amin=1e-5**2, top_db=80.0)
    power = magnitude**2
    log_spec = 10.0 * np.log10(np.maximum(1e-10, power)) - 10.0 * np.log10(np.maximum(1e-10, 1.0))
    log_spec = np.maximum(log_spec, log_spec.max() - 80.0)
    log_spectrogram = log_spec / 80.0 + 1

    audio_inputs = np.array([log_spectrogram])[:, :, :8640]
    input_size, time_length, width_resolution, n_mels = 513, 864, 768, 128
    w = audio_inputs.shape[2]
    if w >= time_length:
        audio_inputs = audio_inputs[:, :, crop : crop + time_length]
    else:
        zero = np.zeros((1, input_size, time_length))
        zero[:, :, crop : crop + w] = audio_inputs[:, :, :w]
        audio_inputs = zero
    audio_resize = audio_inputs[0, :input_size, :width_resolution]
    # cv2.resize(audio_resize, (768, 128)): the width stays 768, the 513 rows become 128.
    audio_inputs = (resize_matrix(input_size, n_mels) @ audio_resize).reshape(-1, n_mels, width_resolution)
    inter_frame = width_resolution // num_frames
    frame_per_audio = time_length // num_frames
    segments = []
    for idx_audio in range(num_frames):
        audio_seg = audio_inputs[:, :, idx_audio * inter_frame : idx_audio * inter_frame + inter_frame]
        zero = np.zeros((1, n_mels, frame_per_audio))
        zero[:, :, :inter_frame] = audio_seg  # the random shift j = 0
        segments.append(zero[0, :n_mels, :inter_frame])
    return np.array(segments)


def test_retyped_steps_match_the_issue_figures_for_groove() -> None:
    # The figures the audit gave for the official map of examples/groove.wav (whole file, before the crop).
    y = decode_audio(GROOVE, sample_rate=SR, channels=1).mono()
    official = retyped_official_preprocess(y, crop=0)
    columns = 1 + len(y) // 512
    flat = np.concatenate(list(official), axis=1)[:, :columns]
    assert flat.min() == pytest.approx(0.515, abs=2e-3)
    assert flat.max() == pytest.approx(1.498, abs=2e-3)


def test_groove_official_window_equals_the_official_steps() -> None:
    y = decode_audio(GROOVE, sample_rate=SR, channels=1).mono()  # 10 s: 862 columns, in the zero canvas
    ours = official_window_maps(y, OFFICIAL)
    assert ours.shape == (2, 5, 128, 153)  # 862 columns make 6 segments; official: one window, 5
    np.testing.assert_allclose(ours[0], retyped_official_preprocess(y, crop=0), rtol=0, atol=1e-6)


def test_a_short_sound_sits_in_the_zero_canvas() -> None:
    y = long_sound(seconds=4.0)  # 345 columns: 3 segments of sound, the rest canvas zeros
    ours = official_window_maps(y, OFFICIAL)
    assert ours.shape == (1, 5, 128, 153)
    np.testing.assert_allclose(ours[0], retyped_official_preprocess(y, crop=0), rtol=0, atol=1e-6)
    assert not ours[0, 2, :, 39:].any() and ours[0, 2, :, :39].min() > 0.3  # column 345 = 2 * 153 + 39


def long_sound(seconds: float = 20.0, seed: int = 3) -> np.ndarray:
    """Tones, noise bursts and a loud chord near the end (past the first window, so the file's peak is
    not the first window's)."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SR)) / SR
    sound = 0.05 * np.sin(2 * np.pi * (220 + 40 * t) * t) + 0.01 * rng.standard_normal(len(t))
    sound[(t > 3) & (t < 3.5)] += 0.2 * rng.standard_normal(int(np.sum((t > 3) & (t < 3.5))))
    late = t > 17
    sound[late] += 0.9 * np.sin(2 * np.pi * 1000 * t[late])
    return sound


def test_long_sound_official_windows_equal_the_official_crops() -> None:
    y = long_sound()
    ours = official_window_maps(y, OFFICIAL)
    for window in (0, 1):  # the crop at column 0, and at 765: our windows are consecutive 5 x 153 columns
        expected = retyped_official_preprocess(y, crop=765 * window)
        np.testing.assert_allclose(ours[window], expected, rtol=0, atol=1e-6)
    # The floor is the whole file's: the quiet first window's floor sits 80 dB below the late chord.
    assert ours[0].min() == pytest.approx(signal_peak_decibels(y, OFFICIAL) / 80.0, abs=1e-6)


def test_official_segments_lie_on_the_official_grid() -> None:
    # Segment k is the map of the samples from k * 78,336 - 512, floored below the file's peak.
    y = long_sound(seconds=6.0)
    maps = official_segment_maps(y, OFFICIAL)
    peak = signal_peak_decibels(y, OFFICIAL)
    length = segment_samples(OFFICIAL)
    padded = np.concatenate([np.zeros(512), y, np.zeros(length)])
    for k in range(len(maps) - 1):  # the last one holds canvas zeros past the end
        np.testing.assert_array_equal(maps[k], segment_map(padded[k * 78336 : k * 78336 + length], OFFICIAL, peak))


def test_official_floor_in_a_stream_takes_the_segment_peak() -> None:
    segment = long_sound(seconds=2.0)[: segment_samples(OFFICIAL)]
    segment[len(segment) // 2 :] = 0.0  # silence: columns at the floor
    own = segment_map(segment, OFFICIAL)
    assert own.min() == pytest.approx(frame_decibels(segment, OFFICIAL).max() / 80.0, abs=1e-6)
    louder_reference = segment_map(segment, OFFICIAL, peak=0.0)
    assert louder_reference.min() == pytest.approx(0.0, abs=1e-6)  # floored at -80 dB re 1.0
    assert own.max() == pytest.approx(louder_reference.max(), abs=1e-6)  # the same dB re 1.0 above the floor
