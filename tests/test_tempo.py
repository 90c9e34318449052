"""Tempo on generated click tracks: the BPM estimate at several tempi, following a tempo change, tap
tempo, and a beat-quantised preset switch landing within one frame of the beat."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.test_live_engine import quick_settings
from tpos_live.control.preset_bank import PresetBank
from tpos_live.control.tempo import BeatClock, BeatQuantiser, OnsetTempo, TapTempo
from tpos_live.live.control import LiveControl
from tpos_live.live.presets import Preset

RATE = 16000
BLOCK = 160  # 10 ms audio blocks, like a capture callback
FPS = 24


def click_track(tempi: list[tuple[float, float]], start: float = 0.137, seed: int = 0) -> tuple[np.ndarray, list]:
    """Clicks (10 ms decaying noise bursts) over faint noise; ``tempi`` is ``[(bpm, seconds), ...]``
    played in turn. Returns the samples and the click times."""
    rng = np.random.default_rng(seed)
    total = sum(seconds for _, seconds in tempi)
    audio = 0.01 * rng.standard_normal(round(total * RATE)).astype(np.float32)
    burst = rng.standard_normal(160) * np.exp(-np.arange(160) / 32.0) * 0.8
    beats, t, section_end = [], start, 0.0
    for bpm, seconds in tempi:
        section_end += seconds
        while t < section_end:
            i = round(t * RATE)
            audio[i:i + len(burst)] += burst[:len(audio) - i]
            beats.append(t)
            t += 60.0 / bpm
    return audio, beats


def feed(tracker: OnsetTempo, audio: np.ndarray, on_block=None) -> list[tuple[float, float | None]]:
    """Feed ``audio`` block by block (block end times on the track's clock); returns (time, bpm) pairs."""
    history = []
    for i in range(0, len(audio), BLOCK):
        end_time = (i + BLOCK - 1) / RATE
        history.append((end_time, tracker.feed(audio[i:i + BLOCK], end_time)))
        if on_block is not None:
            on_block(end_time)
    return history


@pytest.mark.parametrize("bpm", [90.0, 120.0, 128.0, 174.0])
def test_the_audio_tempo_is_within_one_bpm_after_a_few_bars(bpm):
    audio, beats = click_track([(bpm, 8.0)])
    clock = BeatClock()
    tracker = OnsetTempo(RATE, clock)
    history = feed(tracker, audio)
    settled = [estimate for t, estimate in history if t > 5.0]  # after three bars at 90 BPM
    assert settled and all(e is not None and abs(e - bpm) < 1.0 for e in settled), (bpm, settled[:5])
    # and the beat grid sits on the clicks: a predicted beat within 10 ms of a real one
    predicted = clock.next_beat_time(6.0)
    assert min(abs(predicted - b) for b in beats) < 0.010


def test_a_tempo_change_is_followed():
    audio, _ = click_track([(100.0, 8.0), (140.0, 10.0)])
    history = feed(OnsetTempo(RATE), audio)
    before = [e for t, e in history if 6.0 < t < 8.0]
    after = [e for t, e in history if t > 15.0]  # the 6 s window is full of the new tempo by 14 s
    assert all(abs(e - 100.0) < 1.0 for e in before)
    assert all(abs(e - 140.0) < 1.0 for e in after), after[:5]


def drum_loop(bpm: float, seconds: float) -> np.ndarray:
    """Kick and snare on alternate beats, hi-hats on every eighth note, over faint noise."""
    rng = np.random.default_rng(1)
    audio = 0.005 * rng.standard_normal(round(seconds * RATE))
    t = np.arange(round(0.15 * RATE)) / RATE
    kick = np.sin(2 * np.pi * (60 + 80 * np.exp(-30 * t)) * t) * np.exp(-20 * t) * 0.9
    snare = rng.standard_normal(len(t)) * np.exp(-25 * t) * 0.5
    hat = rng.standard_normal(480) * np.exp(-np.arange(480) / RATE * 150) * 0.25
    for eighth in range(int(seconds * bpm / 30)):
        start = round(eighth * 30.0 / bpm * RATE)
        for sound in [hat] + ([kick if eighth % 4 == 0 else snare] if eighth % 2 == 0 else []):
            stop = min(len(audio), start + len(sound))
            audio[start:stop] += sound[:stop - start]
    return audio.astype(np.float32)


@pytest.mark.parametrize("bpm", [120.0, 174.0])
def test_a_drum_loop_tempo_is_within_one_bpm(bpm):
    tracker = OnsetTempo(RATE)
    feed(tracker, drum_loop(bpm, 8.0))
    assert abs(tracker.bpm - bpm) < 1.0


def test_eighth_note_hats_can_read_double_and_a_narrower_range_settles_it():
    loop = drum_loop(90.0, 8.0)
    default, narrow = OnsetTempo(RATE), OnsetTempo(RATE, max_bpm=150.0)
    feed(default, loop)
    feed(narrow, loop)
    assert abs(default.bpm - 180.0) < 1.0  # the hats' grid: the known octave ambiguity (--bpm-range)
    assert abs(narrow.bpm - 90.0) < 1.0


def test_silence_gives_no_tempo():
    tracker = OnsetTempo(RATE)
    feed(tracker, np.zeros(RATE * 4, np.float32))
    assert tracker.bpm is None


def test_tap_tempo_sets_the_clock_and_a_pause_starts_over():
    clock = BeatClock(beats_per_bar=4)
    tap = TapTempo(clock)
    assert tap.tap(10.0) is None
    for i in range(1, 5):
        bpm = tap.tap(10.0 + i * 0.5 + (0.004 if i % 2 else -0.004))  # slightly uneven hands
    assert abs(bpm - 120.0) < 1.5 and abs(clock.bpm - 120.0) < 1.5
    assert clock.next_beat_time(12.1) == pytest.approx(12.5, abs=0.01)
    assert clock.next_beat_time(12.1, "bar") == pytest.approx(14.0, abs=0.02)  # taps began on a downbeat
    assert tap.tap(20.0) is None  # a long pause: a new series
    assert tap.tap(20.75) == pytest.approx(80.0)


def test_a_quantised_preset_switch_lands_within_one_frame_of_the_beat():
    """The click track plays; the tracker follows it; frames come at 24 fps. Preset switches asked
    for between beats are applied on the first frame at or after the next beat (bar)."""
    audio, beats = click_track([(128.0, 12.0)])
    beats = np.array(beats)
    control = LiveControl(quick_settings(), "a beach")
    clock = BeatClock(beats_per_bar=4)
    tracker = OnsetTempo(RATE, clock)
    now = {"t": 0.0}
    quantiser = BeatQuantiser(clock, "beat", now=lambda: now["t"])
    bank = PresetBank([Preset("a", "one"), Preset("b", "two")], control, schedule=quantiser.schedule)
    switches = []  # (asked at, applied at the frame at)
    asks = iter([4.03, 5.51, 7.77, 9.2, 10.66])
    next_ask, next_frame = next(asks), 0.0

    def on_block(t: float) -> None:
        nonlocal next_ask, next_frame
        now["t"] = t
        if next_ask is not None and t >= next_ask:
            asked, prompt = t, control.state().prompt
            bank.next()
            switches.append([asked, None, prompt])
            next_ask = next(asks, None)
        while next_frame <= t:  # a frame starts: the control state it reads is what the switch set
            version = control.state().version
            quantiser.poll(next_frame)
            if control.state().version != version:
                switches[-1][1] = next_frame
            next_frame += 1.0 / FPS

    feed(tracker, audio, on_block)
    assert len(switches) == 5 and all(applied is not None for _, applied, _ in switches)
    for asked, applied, _ in switches:
        beat = beats[beats >= asked][0]  # the next real beat after the request
        assert abs(applied - beat) < 1.0 / FPS, (asked, applied, beat)
    assert control.state().prompt == "one"  # five switches: a, b, a, b, a


def test_the_quantiser_thread_fires_on_the_wall_clock_beat():
    clock = BeatClock()
    start = time.monotonic()
    clock.set(150.0, start)  # a beat every 0.4 s from now
    fired = []
    quantiser = BeatQuantiser(clock, "beat").start()
    try:
        due = quantiser.schedule(lambda: fired.append(time.monotonic()), when=start + 0.05)
        assert due == pytest.approx(start + 0.4)
        deadline = time.monotonic() + 2.0
        while not fired and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        quantiser.stop()
    assert fired and 0.0 <= fired[0] - due < 1.0 / FPS


# ---- audio features mapped to knobs (tpos_live.control.modulation) ----------------------------------

def tone(freq: float, seconds: float = 0.2, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(round(seconds * RATE)) / RATE)).astype(np.float32)


def test_band_levels_onsets_and_loudness_follow_the_sound():
    from tpos_live.control.modulation import AudioFeatures

    features = AudioFeatures(RATE)
    bass, hiss = features(tone(80.0), 1 / 30), features(tone(6000.0), 1 / 30)
    assert bass["low"] > 0.8 and bass["high"] < 0.3 and hiss["high"] > 0.8 and hiss["low"] < 0.3
    quiet = features(tone(1000.0, amplitude=0.001), 1 / 30)
    assert quiet["loudness"] < 0.3 < features(tone(1000.0), 1 / 30)["loudness"]
    features(np.zeros(4000, np.float32), 1 / 30)
    hit = features(np.random.default_rng(0).standard_normal(4000).astype(np.float32) * 0.5, 1 / 30)
    held = features(np.random.default_rng(1).standard_normal(4000).astype(np.float32) * 0.5, 1 / 30)
    assert hit["onset"] > 0.9 and held["onset"] < 0.2  # a hit is an onset; the same sound held is not


def test_routes_move_knobs_with_gain_range_and_smoothing():
    from tpos_live.control.modulation import Modulator, parse_route

    control = LiveControl(quick_settings(), "a beach")
    route = parse_route("low:audio:4:14:1:0.1")
    modulator = Modulator(control, [route, parse_route("high:threshold:0.9:0.5:2:0")], RATE)
    modulator.update(np.zeros(2048, np.float32), 1 / 30)
    assert control.state().settings.audio_guidance == pytest.approx(4.0)
    assert control.state().settings.threshold == pytest.approx(0.9)
    wanted = route.target(modulator.features(tone(60.0, amplitude=0.9), 1 / 30))
    for _ in range(3):  # 0.1 s of a loud bass note: one time constant, 63 % of the way
        modulator.update(tone(60.0, amplitude=0.9), 1 / 30)
    assert control.state().settings.audio_guidance == pytest.approx(4.0 + 0.632 * (wanted - 4.0), rel=0.02)
    modulator.update(tone(7000.0, amplitude=0.9), 1 / 30)  # no smoothing, gain 2: clipped at the range end
    assert control.state().settings.threshold == pytest.approx(0.5)
    with pytest.raises(ValueError, match="knob must be"):
        parse_route("low:text:1:2")
    with pytest.raises(ValueError, match="range"):
        parse_route("low:threshold:0:2")


def test_the_tempo_of_a_live_source_is_followed_in_real_time():
    from tpos_live.audio.signals import SyntheticSource
    from tpos_live.control.tempo import SourceTempo
    from tpos_live.live.source_feed import SourceFeed

    loop, _ = click_track([(150.0, 3.2)], start=0.0)  # eight beats, looped seamlessly

    def clicks(start: int, count: int) -> np.ndarray:
        return loop[(start + np.arange(count)) % len(loop)][:, None]

    source = SyntheticSource(clicks, RATE)
    clock = BeatClock()
    source.start()
    follower = SourceTempo(SourceFeed(source), clock).start()
    try:
        assert wait_for(lambda: clock.bpm is not None and abs(clock.bpm - 150.0) < 1.0, 8.0), clock.bpm
    finally:
        follower.stop()
        source.stop()


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
