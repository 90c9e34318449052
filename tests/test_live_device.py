"""Capture from a real PortAudio device: a PulseAudio null sink started here, with known audio played
into it (tests/pulse.py). What is captured matches what was played, conditions follow the sound,
frames keep coming, the engine survives the device being unplugged, a minute-long soak stays steady,
and ``tpos-live live --record`` writes both streams in sync."""

from __future__ import annotations

import argparse
import os
import statistics
import time

import av
import numpy as np
import pytest

from tests.media import write_wav
from tests.pulse import DEVICE, PulseServer, PulseUnavailable
from tests.test_live_engine import RATE, Reports, frames_during, quick_provider, quick_settings, wait_until
from tpos_live.audio.capture import CaptureConfig, DeviceSource
from tpos_live.audio.file_source import FileSource
from tpos_live.live.engine import LiveEngine
from tpos_live.live.settings import LiveSettings
from tpos_live.video.probe import probe_media

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the live engine on the tiny stack (conftest.py)

PLAY_RATE = 44100


@pytest.fixture(scope="module")
def pulse(tmp_path_factory):
    server = PulseServer(tmp_path_factory.mktemp("pulse"))
    try:
        server.start()
    except PulseUnavailable as error:
        pytest.skip(f"no PulseAudio null sink to capture from: {error}")
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def silence_after(pulse):
    """Every test ends with nothing playing into the sink: a player left running (the soak's minute-long
    file) would mix into the next test's capture."""
    yield
    pulse.stop_playing()


@pytest.fixture(scope="module")
def provider(tiny_stack):
    return quick_provider(tiny_stack)


def sine(freq: float, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq * np.arange(round(seconds * PLAY_RATE)) / PLAY_RATE)


def white(seconds: float, amplitude: float = 0.3) -> np.ndarray:
    return amplitude * np.random.default_rng(0).standard_normal(round(seconds * PLAY_RATE))


def peak_frequency(mono: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return float(np.argmax(spectrum) * rate / len(mono))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def device_engine(stack, provider, reports=None) -> LiveEngine:
    source = DeviceSource(CaptureConfig(device=DEVICE, stall_seconds=1.0, retry_seconds=(0.2, 1.0)),
                          preferred_rate=RATE, report=reports)
    return LiveEngine(stack, quick_settings(), provider, source, "a beach",
                      live=LiveSettings(hop_seconds=0.25, crossfade_seconds=0.3), report=reports)


def test_captured_audio_matches_what_was_played(pulse, tmp_path):
    wav = write_wav(tmp_path / "lr.wav", sine(440.0, 6.0), sine(1000.0, 6.0))
    mixed = DeviceSource(CaptureConfig(device=DEVICE), preferred_rate=PLAY_RATE)
    right = DeviceSource(CaptureConfig(device=DEVICE, channel=1, gain_db=-6.0206), preferred_rate=PLAY_RATE)
    assert mixed.sample_rate == PLAY_RATE and mixed.ring.channels == 2
    assert mixed.channel_map.program_channels == 2
    assert right.channel_map.pick == 1 and right.channel_map.program_channels == 1
    mixed.start()
    right.start()
    try:
        pulse.play(wav)
        half = PLAY_RATE // 2  # the tone at full level fills the last half second once playback runs
        assert wait_until(lambda: rms(mixed.ring.latest(half)[0][:, 0]) > 0.3, 10), "nothing was heard"
        time.sleep(0.6)
        frames, _ = mixed.ring.latest(half)
        picked, _ = right.mono_window(half)
    finally:
        mixed.stop()
        right.stop()
        pulse.stop_playing()
    assert abs(peak_frequency(frames[:, 0], PLAY_RATE) - 440.0) <= 2.0
    assert abs(peak_frequency(frames[:, 1], PLAY_RATE) - 1000.0) <= 2.0
    assert rms(frames[:, 0]) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)  # unchanged level through the sink
    assert abs(peak_frequency(picked, PLAY_RATE) - 1000.0) <= 2.0  # channel 1 alone ...
    assert rms(picked) == pytest.approx(0.25 / np.sqrt(2), rel=0.03)  # ... at -6 dB


def test_a_file_source_plays_to_an_output_device_in_real_time(pulse, tmp_path):
    wav = write_wav(tmp_path / "a.wav", sine(880.0, 3.0))
    listener = DeviceSource(CaptureConfig(device=DEVICE, channel=0), preferred_rate=PLAY_RATE)
    player = FileSource(wav, output_device=DEVICE, sample_rate=PLAY_RATE)
    listener.start()
    player.start()
    try:
        half = PLAY_RATE // 2
        assert wait_until(lambda: rms(listener.mono_window(half)[0]) > 0.3, 10), "nothing was heard"
        time.sleep(0.6)
        heard, _ = listener.mono_window(half)
        played, _ = player.mono_window(half)
        assert player.state == "running" and player.ring.written < 2.5 * PLAY_RATE  # real time, not at once
    finally:
        player.stop()
        listener.stop()
    assert abs(peak_frequency(heard, PLAY_RATE) - 880.0) <= 2.0
    assert abs(peak_frequency(played, PLAY_RATE) - 880.0) <= 2.0


def test_conditions_follow_the_sound_and_frames_keep_coming(pulse, tiny_stack, provider, tmp_path):
    noise_wav = write_wav(tmp_path / "noise.wav", white(8.0))
    tone_wav = write_wav(tmp_path / "tone.wav", sine(660.0, 8.0))
    window = 1.8  # > the quick provider's 1.3 s window, plus the sink's latency
    with device_engine(tiny_stack, provider) as engine:
        assert engine.source.sample_rate == RATE  # the device was opened at the encoder's rate
        engine.wait_frame(0, timeout=30)
        phases = {}
        plan = (("silence", None), ("silence again", None), ("noise", noise_wav), ("tone", tone_wav))
        for name, wav in plan:
            pulse.stop_playing()
            if wav is not None:
                pulse.play(wav)
            frames = frames_during(engine, window)
            phases[name] = (engine.latest_condition(), frames)
        stats = engine.stats()
    for name, (_, frames) in phases.items():
        assert len(frames) >= 5, f"frames stopped coming during {name}"

    def distance(a: str, b: str) -> float:
        x, y = phases[a][0].condition, phases[b][0].condition
        return float((x - y).norm() / x.norm())

    assert distance("silence", "silence again") < 1e-4  # the same sound gives the same condition
    for a, b in (("silence", "noise"), ("silence", "tone"), ("noise", "tone")):
        assert distance(a, b) > 0.02, f"{a} and {b} gave the same condition"
    assert phases["silence"][1][-1].loudness == 0.0 < 0.5 < phases["noise"][1][-1].loudness
    assert stats.latency_ms is not None and stats.latency_ms < 3000


def test_the_engine_survives_unplugging_and_resumes(pulse, tiny_stack, provider, tmp_path):
    reports = Reports()
    with device_engine(tiny_stack, provider, reports) as engine:
        engine.wait_frame(0, timeout=30)
        pulse.unload_sink()
        try:
            assert wait_until(lambda: engine.source.state == "lost", 5), "the lost device went unnoticed"
            time.sleep(0.3)  # a frame in flight may still land
            held, last = engine.frames.peek()
            time.sleep(1.0)
            assert engine.frames.peek()[0] == held, "frames kept changing without sound"
            assert engine.frames.peek()[1] is last
        finally:
            pulse.load_sink()
        assert wait_until(lambda: engine.source.state == "running", 15), "the device was not reopened"
        resumed, _ = engine.wait_frame(held, timeout=10)
        written = engine.source.ring.written
        assert wait_until(lambda: engine.source.ring.written > written + RATE // 2, 5), "no audio after"
        stats = engine.stats()
    assert resumed > held
    assert stats.device_losses == 1 and stats.counters["render_errors"] == 0
    assert reports.said("keeping the last frame") and reports.said("is back")
    assert all(stage.alive is False for stage in (engine.encoder, engine.frame_stage))


def test_low_and_high_latency_capture_report_the_devices_own_input_latency(pulse, tiny_stack, provider):
    from tpos_live.audio.source_spec import SourceSpec, open_source

    latencies = {}
    for wanted in ("high", "low"):
        source = open_source(SourceSpec(device=DEVICE, latency=wanted), RATE, Reports())
        assert source.config.latency == wanted and source.device_latency is None  # not open yet
        source.start()
        try:
            assert wait_until(lambda: source.ring.written > RATE // 10, 5), "no audio captured"  # noqa: B023
            latencies[wanted] = source.device_latency
            index = source.ring.written - 1
            # capture times count the device's latency: the sound reached it that much before the callback
            assert source.capture_time(index) == pytest.approx(source.ring.capture_time(index) - latencies[wanted])
        finally:
            source.stop()
    print(f"input latency: low {1000 * latencies['low']:.1f} ms, high {1000 * latencies['high']:.1f} ms")
    assert 0 < latencies["low"] <= latencies["high"]
    source = open_source(SourceSpec(device=DEVICE), RATE, Reports())  # low by default
    with LiveEngine(tiny_stack, quick_settings(), provider, source, "a beach",
                    live=LiveSettings(hop_seconds=0.25)) as engine:
        assert wait_until(lambda: engine.stats().latency_ms is not None, 30)
        stats = engine.stats()
    assert stats.input_latency_ms == pytest.approx(1000 * source.input_latency)
    assert stats.latency_ms >= stats.input_latency_ms and f"input {stats.input_latency_ms:.0f} ms" in stats.line()


@pytest.mark.soak
def test_soak_a_minute_with_steady_memory_and_latency(pulse, tiny_stack, provider, tmp_path):
    # Noise and tones in turn, so conditions keep changing: one file, played once, longer than the run.
    parts = [sine(330.0 * (1 + i % 3), 2.0) if i % 2 else white(2.0) for i in range(34)]
    pulse.play(write_wav(tmp_path / "long.wav", np.concatenate(parts)))
    seconds, samples = 60.0, []
    with device_engine(tiny_stack, provider) as engine:
        engine.wait_frame(0, timeout=30)
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            time.sleep(1.0)
            samples.append((elapsed, engine.stats(), _rss_mb()))
        stats = engine.stats()
    early = [s for t, s, _ in samples if 5 <= t < 20 and s.latency_ms is not None]
    late = [s for t, s, _ in samples if t >= seconds - 15 and s.latency_ms is not None]
    early_latency = statistics.median(s.latency_ms for s in early)
    late_latency = statistics.median(s.latency_ms for s in late)
    memory = [(t, mb) for t, _, mb in samples]
    growth = max(mb for t, mb in memory if t >= seconds - 15) - min(mb for t, mb in memory if 5 <= t < 20)
    frames_per_second = [s.fps for _, s, _ in samples[2:]]
    print(f"soak: latency median {early_latency:.0f} -> {late_latency:.0f} ms, max "
          f"{max(s.latency_max_ms for s in early + late):.0f} ms; "
          f"fps {statistics.mean(frames_per_second):.1f} "
          f"(min {min(frames_per_second):.1f}); RSS {memory[0][1]:.0f} -> {memory[-1][1]:.0f} MB; "
          f"frames {stats.frames}, dropped {stats.dropped_frames}, overflows {stats.overflows}")
    assert min(frames_per_second) > 0, "frames stopped coming for a whole second"
    # Queueing would make latency climb steadily; the margin absorbs other load on a shared machine.
    assert late_latency < max(2 * early_latency, early_latency + 250), "latency grew: work is queueing"
    assert max(s.latency_max_ms for s in late) < 2000
    assert growth < 40, f"memory grew by {growth:.0f} MB in {seconds:.0f} s"
    assert stats.counters["render_errors"] == stats.counters["encoder_errors"] == 0
    assert stats.device_losses == 0


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def test_devices_command_lists_the_capture_device(pulse, capsys):
    from tpos_live.cli.live import add_devices_command

    parser = argparse.ArgumentParser()
    add_devices_command(parser.add_subparsers())
    args = parser.parse_args(["devices"])
    assert args.run(args) == 0
    out = capsys.readouterr().out
    assert DEVICE in out and "ALSA" in out


def test_live_command_records_frames_and_captured_audio_in_sync(pulse, tmp_path):
    from tpos_live.cli.live import add_command as add_live_command

    parser = argparse.ArgumentParser()
    add_live_command(parser.add_subparsers())
    out = tmp_path / "set1.mp4"
    fps = 8
    pulse.play(write_wav(tmp_path / "tone.wav", sine(440.0, 10.0)))
    args = parser.parse_args(["live", "--device", DEVICE, "--model", "tiny", "--size", "64x64",
                              "--fps", str(fps), "--hop", "0.5", "--prompt", "neon city",
                              "--record", str(out), "--duration", "3", "--quiet"])
    assert args.run(args) == 0
    pulse.stop_playing()
    info = probe_media(out)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert abs(info.video_duration - info.audio_duration) <= 1 / fps
    assert 1.0 <= info.video_duration <= 3.5
    with av.open(str(out)) as container:
        sound = np.concatenate([f.to_ndarray().mean(axis=0) for f in container.decode(audio=0)])
    assert abs(peak_frequency(sound[-len(sound) // 2 :], info.audio_sample_rate) - 440.0) < 5.0


def test_the_app_smoke_run_captures_from_the_virtual_device(pulse, tmp_path, capsys):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt starts: no display needed
    from tpos_live.cli.app import add_command as add_app_command

    parser = argparse.ArgumentParser()
    add_app_command(parser.add_subparsers())
    pulse.play(write_wav(tmp_path / "tone.wav", sine(440.0, 12.0)))
    args = parser.parse_args(["app", "--smoke", "6", "--device", DEVICE, "--encoder", "random", "--hop", "1.0",
                              "--size", "64x64"])
    try:
        assert args.run(args) == 0
    finally:
        pulse.stop_playing()
    captured = capsys.readouterr()
    assert f"sound: {DEVICE} (ALSA)" in captured.err  # the device, not the test signal
    line = next(text for text in captured.out.splitlines() if text.startswith("smoke:"))
    assert "in the output window" in line and "latency -" not in line  # fresh frames from captured sound
