"""Loudness envelope: dBFS mapping, window placement, attack/release time constants."""

import math

import numpy as np
import pytest

from tpos_live.audio.envelope import attack_release, frame_loudness, loudness_envelope

RATE = 16000


def sine(seconds, amplitude=1.0, freq=440.0):
    t = np.arange(round(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_silence_gives_zero():
    levels = frame_loudness(np.zeros(RATE, np.float32), RATE, np.linspace(0.1, 1.0, 10))
    np.testing.assert_array_equal(levels, 0.0)


def test_full_scale_sine_gives_095():
    # RMS of a full-scale sine is -3.01 dBFS: 1 - 3.01 / 60.
    levels = frame_loudness(sine(1.0), RATE, np.array([0.2, 0.5, 1.0]))
    np.testing.assert_allclose(levels, 1 - 3.0103 / 60, atol=2e-3)


def test_level_maps_linearly_in_db_and_is_monotone():
    amplitudes = [0.0005, 0.002, 0.01, 0.1, 0.5, 1.0]
    levels = [frame_loudness(sine(0.5, a), RATE, np.array([0.5]))[0] for a in amplitudes]

    assert levels[0] == 0.0  # -69 dBFS RMS is below the -60 dB floor
    assert np.all(np.diff(levels) > 0)
    # 0.1 peak -> -23.01 dBFS RMS -> 1 - 23.01 / 60
    assert levels[3] == pytest.approx(1 - 23.0103 / 60, abs=2e-3)


def test_floor_db_moves_the_zero():
    level = frame_loudness(sine(0.5, 0.1), RATE, np.array([0.5]), floor_db=-30.0)[0]
    assert level == pytest.approx(1 - 23.0103 / 30, abs=3e-3)


def test_window_ends_at_each_time_and_outside_is_silence():
    # Silence for 0.5 s, then full-scale sine for 0.5 s.
    signal = np.concatenate([np.zeros(RATE // 2, np.float32), sine(0.5)])
    times = np.array([-1.0, 0.0, 0.45, 0.5, 0.55, 1.0, 1.04, 1.2])

    levels = frame_loudness(signal, RATE, times, window_seconds=0.05)

    np.testing.assert_array_equal(levels[:4], 0.0)  # before the start, and windows of silence only
    assert levels[4] == pytest.approx(0.95, abs=2e-3)  # the window (0.5, 0.55] is all sine
    assert levels[5] == pytest.approx(0.95, abs=2e-3)
    # At 1.04 s the window is one fifth signal: the mean square drops by 5 -> about 7 dB lower.
    assert levels[6] == pytest.approx(1 - (3.0103 + 10 * math.log10(5)) / 60, abs=5e-3)
    assert levels[7] == 0.0  # past the end


def test_attack_reaches_one_minus_one_over_e_after_one_time_constant():
    dt, attack = 0.001, 0.1
    out = attack_release(np.ones(300), dt, attack_seconds=attack, release_seconds=1.0)

    assert out[round(attack / dt) - 1] == pytest.approx(1 - math.exp(-1), abs=1e-6)
    assert np.all(np.diff(out) > 0)
    assert out[-1] == pytest.approx(1 - math.exp(-3), abs=1e-6)


def test_release_falls_with_its_own_time_constant():
    dt, release = 0.002, 0.25
    out = attack_release(np.zeros(500), dt, attack_seconds=0.01, release_seconds=release, initial=1.0)

    assert out[round(release / dt) - 1] == pytest.approx(math.exp(-1), abs=1e-6)
    assert np.all(np.diff(out) < 0)


def test_fast_attack_slow_release_on_a_pulse():
    levels = np.concatenate([np.zeros(10), np.ones(20), np.zeros(100)])
    out = attack_release(levels, 0.01, attack_seconds=0.01, release_seconds=0.5)

    assert out[29] > 0.99  # 20 steps of 1 time constant each
    assert out[29 + 50] == pytest.approx(out[29] * math.exp(-1), rel=1e-5)  # 0.5 s later


def test_per_step_dt_matches_scalar_dt():
    levels = np.random.default_rng(0).random(50)
    scalar = attack_release(levels, 0.02, 0.05, 0.3, initial=0.4)
    per_step = attack_release(levels, np.full(50, 0.02), 0.05, 0.3, initial=0.4)
    np.testing.assert_array_equal(scalar, per_step)


def test_loudness_envelope_is_the_follower_over_the_frame_levels():
    signal = np.concatenate([np.zeros(RATE, np.float32), sine(1.0, 0.3), sine(1.0)])
    times = np.arange(1, 90) / 30  # a 30 fps render from its first frame

    envelope = loudness_envelope(signal, RATE, times, attack_seconds=0.05, release_seconds=0.5)

    levels = frame_loudness(signal, RATE, times)
    np.testing.assert_array_equal(envelope, attack_release(levels, np.diff(times, prepend=0.0), 0.05, 0.5))
    assert envelope[28] == 0.0  # 0.967 s: still silence
    assert envelope[58] == pytest.approx(levels[58], abs=1e-3)  # 1.97 s: settled on the quieter sine
    assert envelope[-1] == pytest.approx(0.95, abs=2e-3)  # 2.97 s: settled on the full-scale sine


def test_loudness_envelope_falls_with_the_release_constant_after_the_sound_stops():
    signal = sine(1.0)  # silence from 1.0 s on, as past the end of any signal
    envelope = loudness_envelope(signal, RATE, np.array([0.9, 1.05, 1.55]), 0.05, 0.5)
    assert envelope[2] == pytest.approx(envelope[1] * math.exp(-1), rel=1e-4)


def test_loudness_envelope_starts_at_rest_at_time_zero():
    envelope = loudness_envelope(sine(1.0), RATE, np.array([0.0, 0.01]), 0.1, 0.1)
    assert envelope[0] == 0.0
    assert 0 < envelope[1] < 0.95 * (1 - math.exp(-0.1)) + 1e-6


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: frame_loudness(np.zeros((2, 10)), RATE, np.zeros(1)), "1-D"),
        (lambda: frame_loudness(np.zeros(10), 0, np.zeros(1)), "sample_rate"),
        (lambda: frame_loudness(np.zeros(10), RATE, np.zeros(1), window_seconds=0), "window_seconds"),
        (lambda: frame_loudness(np.zeros(10), RATE, np.array([np.nan])), "finite"),
        (lambda: frame_loudness(np.zeros(10), RATE, np.zeros(1), floor_db=0), "floor_db"),
        (lambda: attack_release(np.zeros(3), 0.0, 0.1, 0.1), "dt"),
        (lambda: attack_release(np.zeros(3), np.array([0.1, -0.1, 0.1]), 0.1, 0.1), "dt"),
        (lambda: attack_release(np.zeros(3), 0.1, 0.0, 0.1), "positive"),
        (lambda: attack_release(np.zeros(3), 0.1, 0.1, -1.0), "positive"),
        (lambda: loudness_envelope(np.zeros(10), RATE, np.array([0.2, 0.1]), 0.1, 0.1), "non-decreasing"),
    ],
)
def test_invalid_arguments_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
