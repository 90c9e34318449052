"""Spectrogram front ends: where energy lands, value ranges, segment locality, and the mel filterbank."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tpos_live.audio.spectrogram import (
    LEGACY_FLOOR,
    SpectrogramConfig,
    frame_count,
    hz_to_mel,
    mel_band_edges,
    mel_filterbank,
    mel_to_hz,
    resize_matrix,
    segment_map,
    segment_samples,
    spectrogram,
)

STFT = SpectrogramConfig(kind="stft")  # no floor named: the legacy one, absolute
MEL = SpectrogramConfig(kind="mel")  # relative


def tone(freq: float, seconds: float, amplitude: float = 0.5, sample_rate: int = 44100) -> np.ndarray:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def noise(samples: int, amplitude: float, seed: int = 0) -> np.ndarray:
    return amplitude * np.random.default_rng(seed).uniform(-1, 1, samples)


def test_config_validates() -> None:
    with pytest.raises(ValueError, match="kind"):
        SpectrogramConfig(kind="cqt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hop_length"):
        SpectrogramConfig(kind="stft", hop_length=2048)
    with pytest.raises(ValueError, match="n_mels"):
        SpectrogramConfig(kind="mel", n_mels=64, height=128)
    with pytest.raises(ValueError, match="at least 1"):
        SpectrogramConfig(kind="stft", segment_frames=0)
    with pytest.raises(ValueError, match="floor must be one of official, relative, absolute"):
        SpectrogramConfig(kind="stft", floor="max")  # type: ignore[arg-type]


def test_a_config_without_a_floor_gets_what_its_kind_had_before() -> None:
    assert (STFT.floor, MEL.floor) == ("absolute", "relative") == (LEGACY_FLOOR["stft"], LEGACY_FLOOR["mel"])
    assert SpectrogramConfig(kind="stft", floor="absolute") == STFT
    assert SpectrogramConfig(kind="stft", floor="relative") != STFT


@pytest.mark.parametrize("kind", ["stft", "mel"])
def test_an_encoder_checkpoint_without_a_floor_loads_with_the_maps_it_was_trained_on(tmp_path, kind) -> None:
    from tpos_live.conditioning.checkpoint import load_tpos, random_tpos, save_tpos
    from tpos_live.conditioning.tpos_encoder import TPoSConfig

    spectrogram_config = SpectrogramConfig(kind=kind, floor="relative" if kind == "stft" else "absolute")
    provider = random_tpos(TPoSConfig(embed_dim=8, spectrogram=spectrogram_config, text_family="tiny"))
    weights, config_file = save_tpos(tmp_path / "enc", provider.encoder, provider.map_model, provider.config)
    assert load_tpos(weights).config.spectrogram.floor == spectrogram_config.floor  # recorded
    document = json.loads(config_file.read_text())
    del document["spectrogram"]["floor"]  # as written before the field existed
    config_file.write_text(json.dumps(document))
    assert load_tpos(weights).config.spectrogram.floor == LEGACY_FLOOR[kind]


@pytest.mark.parametrize("kind", ["stft", "mel"])
def test_relative_maps_ignore_a_gain_change_absolute_and_official_maps_keep_it(kind) -> None:
    base = SpectrogramConfig(kind=kind)
    relative, absolute = (dataclasses.replace(base, floor=floor) for floor in ("relative", "absolute"))
    length = segment_samples(base)
    quiet = noise(length, 0.01) + tone(2000, length / 44100, 0.002)  # a quiet window
    gain_db = 34.0
    loud = quiet * 10 ** (gain_db / 20)  # the same sound 34 dB louder
    quiet_map, loud_map = segment_map(quiet, relative), segment_map(loud, relative)
    np.testing.assert_allclose(loud_map, quiet_map, atol=1e-6)
    assert quiet_map.min() >= 0.0 and quiet_map.max() <= 1.0
    if kind == "mel":  # not resized: its loudest band is exactly the reference
        assert quiet_map.max() == pytest.approx(1.0)
    # Absolute: every bin above the floor in both moves up by the gain, 34 / 80 of the map's range.
    shift = segment_map(loud, absolute) - segment_map(quiet, absolute)
    assert np.median(shift) == pytest.approx(gain_db / 80, abs=1e-5)
    assert segment_map(quiet, absolute).max() < 1.0 < segment_map(loud, absolute).max()
    # Official: the floor follows the peak, so the whole map moves up by the gain.
    official = dataclasses.replace(base, floor="official")
    np.testing.assert_allclose(segment_map(loud, official) - segment_map(quiet, official), gain_db / 80, atol=1e-5)


def test_segment_samples_give_exactly_segment_frames() -> None:
    length = segment_samples(STFT)
    assert length == 1024 + 152 * 512 == 78848  # 1.788 s at 44.1 kHz
    assert frame_count(length, STFT) == 153
    assert frame_count(length - 1, STFT) == 152
    assert segment_map(noise(length, 0.1), STFT).shape == (128, 153)
    with pytest.raises(ValueError, match="78848"):
        segment_map(noise(length + 1, 0.1), STFT)


@pytest.mark.parametrize("freq", [1000.0, 5000.0])
def test_stft_tone_lands_on_its_row(freq: float) -> None:
    values = spectrogram(tone(freq, 1.0), STFT)
    assert values.shape == (128, frame_count(44100, STFT))
    # Bin of the tone, then the half-pixel-centre resize from 513 bins to 128 rows.
    bin_index = freq / (44100 / 1024)
    expected_row = (bin_index + 0.5) * 128 / 513 - 0.5
    assert abs(int(values.mean(axis=1).argmax()) - expected_row) <= 1.0


@pytest.mark.parametrize("freq", [1000.0, 5000.0])
def test_mel_tone_lands_on_its_band(freq: float) -> None:
    values = spectrogram(tone(freq, 1.0), MEL)
    centres = mel_band_edges(44100, 128)[1:-1]
    expected_row = int(np.abs(centres - freq).argmin())
    assert abs(int(values.mean(axis=1).argmax()) - expected_row) <= 1


def test_value_ranges() -> None:
    quiet = noise(44100, 0.01)
    stft_quiet = spectrogram(quiet, STFT)
    assert stft_quiet.dtype == np.float32
    assert stft_quiet.min() >= 0.0 and stft_quiet.max() <= 1.0  # every bin below 0 dB re 1.0
    # With the absolute floor loud audio goes above 1, but no higher than a full-scale bin can reach:
    # |X| <= sum(window) = n_fft / 2.
    loud = spectrogram(noise(44100, 1.0), STFT)
    assert 1.0 < loud.max() <= 1.0 + 20 * math.log10(512) / 80
    mel_loud = spectrogram(noise(44100, 1.0), MEL)
    assert mel_loud.min() >= 0.0 and mel_loud.max() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "cfg",
    [STFT, MEL, dataclasses.replace(STFT, floor="relative"), dataclasses.replace(MEL, floor="absolute"),
     dataclasses.replace(STFT, floor="official")],
    ids=["stft", "mel", "stft-relative", "mel-absolute", "stft-official"],
)
def test_silence_maps_to_zero(cfg: SpectrogramConfig) -> None:
    assert not spectrogram(np.zeros(20000), cfg).any()
    assert not segment_map(np.zeros(segment_samples(cfg)), cfg).any()


def test_absolute_stft_segment_map_equals_columns_of_the_whole() -> None:
    length = segment_samples(STFT)
    whole_audio = noise(3 * length, 0.3) + tone(700, 3 * length / 44100, 0.2)
    whole = spectrogram(whole_audio, STFT)
    for start in (0, 3 * 512, length, 2 * length):  # any multiple of the hop, including the next segment
        column = start // 512
        part = segment_map(whole_audio[start : start + length], STFT)
        np.testing.assert_allclose(part, whole[:, column : column + 153], rtol=0, atol=1e-6)


def test_mel_segment_map_is_relative_to_its_own_maximum() -> None:
    length = segment_samples(MEL)
    whole_audio = noise(3 * length, 0.01)
    whole_audio[length + 1000 : length + 5000] += tone(3000, 4000 / 44100, 0.9)  # the loudest part
    whole = spectrogram(whole_audio, MEL)
    with_peak = segment_map(whole_audio[length : 2 * length], MEL)
    np.testing.assert_allclose(with_peak, whole[:, length // 512 : length // 512 + 153], atol=1e-6)
    # A quieter segment is scaled to its own maximum, so it no longer matches the whole's columns.
    without_peak = segment_map(whole_audio[:length], MEL)
    assert without_peak.max() == pytest.approx(1.0)
    assert np.abs(without_peak - whole[:, :153]).max() > 0.1


def test_mel_scale_is_slaney() -> None:
    assert float(hz_to_mel(1000.0)) == pytest.approx(15.0)
    assert float(hz_to_mel(500.0)) == pytest.approx(7.5)
    assert float(hz_to_mel(6400.0)) == pytest.approx(15.0 + 27.0)  # 27 mels per factor 6.4 above 1 kHz
    freqs = np.array([0.0, 100.0, 999.0, 1000.0, 4000.0, 22050.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(freqs)), freqs, atol=1e-9)


def test_mel_filterbank_shape_and_bands() -> None:
    sample_rate, n_fft, n_mels = 44100, 1024, 128
    filters = mel_filterbank(sample_rate, n_fft, n_mels)
    bin_hz = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_band_edges(sample_rate, n_mels)
    assert filters.shape == (n_mels, n_fft // 2 + 1)
    assert (filters >= 0).all()
    assert (filters.max(axis=1) > 0).all(), "every filter sees at least one bin"
    assert np.all(np.diff(edges[1:-1]) > 0), "centres increase"
    for i in range(n_mels):
        covered = bin_hz[filters[i] > 0]
        assert edges[i] < covered.min() and covered.max() < edges[i + 2], f"filter {i} leaves its band"
        peak_hz = bin_hz[filters[i].argmax()]
        assert abs(peak_hz - edges[i + 1]) <= sample_rate / n_fft, f"filter {i} peaks off its centre"
    # Slaney normalisation: unit area in Hz, exact for filters spanning many bins.
    areas = filters.sum(axis=1) * (sample_rate / n_fft)
    wide = (edges[2:] - edges[:-2]) > 20 * sample_rate / n_fft
    np.testing.assert_allclose(areas[wide], 1.0, rtol=0.02)


def test_resize_matches_torch_bilinear() -> None:
    values = np.random.default_rng(0).standard_normal((513, 7))
    ours = resize_matrix(513, 128) @ values
    theirs = F.interpolate(
        torch.from_numpy(values)[None, None], size=(128, 7), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    np.testing.assert_allclose(resize_matrix(9, 9), np.eye(9))
