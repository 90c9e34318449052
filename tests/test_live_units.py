"""The live engine's parts on their own: ring buffer, mailbox, control, stats, channel maps, sources."""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import pytest
import torch

from tests.media import write_tone
from tpos_live.audio.capture import CaptureConfig
from tpos_live.audio.channels import ChannelMap, db_to_gain, resample
from tpos_live.audio.file_source import FileSource
from tpos_live.audio.ringbuffer import RingBuffer
from tpos_live.audio.signals import SyntheticSource, noise, sequence, silence, tone
from tpos_live.config import RenderSettings
from tpos_live.errors import UserError
from tpos_live.live.control import LiveControl
from tpos_live.live.mailbox import Mailbox
from tpos_live.live.settings import LiveSettings
from tpos_live.live.stats import LiveStats


def to_frames(images: torch.Tensor) -> np.ndarray:
    """The reference conversion FrameDownload must match: images (B, 3, H, W) in [-1, 1] to uint8 (B, H, W, 3)."""
    frames = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return frames.permute(0, 2, 3, 1).contiguous().cpu().numpy()

def ramp(start: int, count: int, channels: int = 2) -> np.ndarray:
    """Frames whose value is their absolute index (channel c adds c / 10)."""
    index = np.arange(start, start + count, dtype=np.float32)[:, None]
    return index + np.arange(channels, dtype=np.float32)[None, :] / 10


# ---- ring buffer --------------------------------------------------------------------------------


def test_ring_buffer_is_addressed_by_absolute_sample_index_across_wraps():
    ring = RingBuffer(capacity=100, channels=2, sample_rate=1000)
    written = 0
    for size in (30, 45, 60, 1, 99, 100):
        ring.write(ramp(written, size))
        written += size
    assert ring.written == written == 335
    frames, lost = ring.read(250, 335)
    assert lost == 0 and np.array_equal(frames, ramp(250, 85))
    latest, end = ring.latest(100)
    assert end == 335 and np.array_equal(latest, ramp(235, 100))


def test_ring_buffer_reads_silence_before_the_start_and_reports_overwritten_samples():
    ring = RingBuffer(capacity=50, channels=1, sample_rate=1000)
    ring.write(ramp(0, 20, 1))
    frames, end = ring.latest(30)  # ten samples "before the start"
    assert end == 20 and not frames[:10].any() and np.array_equal(frames[10:], ramp(0, 20, 1))
    ring.write(ramp(20, 50, 1))
    frames, lost = ring.read(10, 30)  # 10..19 were overwritten by the wrap
    assert lost == 10 and not frames[:10].any() and np.array_equal(frames[10:], ramp(20, 10, 1))
    with pytest.raises(ValueError, match="cannot read"):
        ring.read(0, 71)
    with pytest.raises(ValueError, match="does not fit"):
        ring.write(np.zeros((51, 1), np.float32))


def test_each_reader_keeps_its_own_position_and_counts_what_it_missed():
    ring = RingBuffer(capacity=64, channels=1, sample_rate=1000)
    early, late = ring.reader(), None
    ring.write(ramp(0, 40, 1))
    late = ring.reader()  # starts at the next sample
    assert np.array_equal(early.read(25), ramp(0, 25, 1)) and early.available == 15
    ring.write(ramp(40, 10, 1))
    assert np.array_equal(late.read(), ramp(40, 10, 1))
    assert np.array_equal(early.read(), ramp(25, 25, 1)) and early.lost == 0
    ring.write(ramp(50, 64, 1))
    ring.write(ramp(114, 30, 1))  # early reader is now 94 behind a 64-sample ring
    assert np.array_equal(early.read(), ramp(80, 64, 1)) and early.lost == 30


def test_ring_buffer_maps_sample_indices_to_capture_times():
    ring = RingBuffer(capacity=1000, channels=1, sample_rate=100)
    assert ring.capture_time(0) is None
    ring.write(np.zeros((50, 1), np.float32), now=10.0)
    assert ring.capture_time(50) == pytest.approx(10.0) and ring.capture_time(0) == pytest.approx(9.5)


def test_a_concurrent_writer_never_hands_a_reader_torn_samples():
    ring = RingBuffer(capacity=256, channels=1, sample_rate=48000)
    reader = ring.reader()
    stop = threading.Event()

    def write():
        index = 0
        while not stop.is_set():
            ring.write(ramp(index, 32, 1))
            index += 32

    writer = threading.Thread(target=write)
    writer.start()
    seen = []
    try:
        for _ in range(2000):
            seen.append((reader.position, reader.read()))
    finally:
        stop.set()
        writer.join()
    for _, frames in seen:  # every sample handed out equals its index: contiguous runs, nothing torn
        if len(frames) > 1:
            assert np.all(np.diff(frames[:, 0]) == 1)


# ---- mailbox -----------------------------------------------------------------------------------


def test_mailbox_keeps_only_the_newest_item_and_counts_the_dropped():
    box: Mailbox[int] = Mailbox()
    assert box.take(timeout=0) is None and box.peek() == (0, None)
    assert box.put(1) is False
    assert box.put(2) is True  # 1 was never taken
    assert box.take(timeout=0) == 2 and box.take(timeout=0) is None
    assert box.put(3) is False and box.dropped == 1
    assert box.peek() == (3, 3)


def test_mailbox_wakes_waiting_readers():
    box: Mailbox[str] = Mailbox()
    threading.Timer(0.05, box.put, args=("hello",)).start()
    assert box.wait_newer(0, timeout=5) == (1, "hello")
    assert box.wait_newer(1, timeout=0.05) == (1, "hello")  # nothing newer: unchanged after the timeout
    assert box.take(timeout=0) == "hello"  # looking did not consume it; taking does
    threading.Timer(0.05, box.put, args=("again",)).start()
    assert box.take(timeout=5) == "again"


# ---- control, settings, stats ---------------------------------------------------------------------


def test_control_changes_are_validated_versioned_and_mark_scene_changes():
    control = LiveControl(RenderSettings(), "a beach")
    first = control.state()
    control.set_guidance(audio=9.0, threshold=0.9, envelope_depth=0.2)
    knobs = control.state()
    assert knobs.settings.audio_guidance == 9.0 and knobs.settings.threshold == 0.9
    assert knobs.version > first.version and knobs.scene_key == first.scene_key  # no new scene for knobs
    control.set_prompt("a forest", negative_prompt="fog")
    control.set_seed(7)
    control.set_guidance(text=2.0)
    scene = control.state()
    assert (scene.prompt, scene.negative_prompt, scene.settings.seed, scene.settings.text_guidance) == (
        "a forest", "fog", 7, 2.0)
    control.set_steps(6, delta_step=5)
    assert control.state().scene_key != scene.scene_key  # steps and delta make a new scene too
    control.set_steps(3)  # the delta step follows the steps down
    assert (control.state().settings.steps, control.state().settings.delta_step) == (3, 2)
    control.set_crossfade(2.0)
    assert control.state().scene_key == control.state().scene_key and control.state().crossfade_seconds == 2.0
    control.freeze(True)
    control.blackout(True)
    control.set_fps(30)
    state = control.state()
    assert state.frozen and state.blackout and state.settings.fps == 30
    for bad in (lambda: control.set_fps(0), lambda: control.set_guidance(threshold=1.5),
                lambda: control.set_guidance(loudness=1.0), lambda: control.set_seed(-1),
                lambda: control.set_prompt(None), lambda: control.set_prompt("x" * 5000),
                lambda: control.set_steps(0), lambda: control.set_steps(4, delta_step=4),
                lambda: control.set_crossfade(-1), lambda: control.set_crossfade(float("nan")),
                lambda: control.set_init_image("/no/such/image.png"),
                lambda: control.set_scene("ok", seed=3, guidance={"audio": -1.0}),
                lambda: control.set_scene("ok", guidance={"loudness": 1.0})):
        with pytest.raises(ValueError):
            bad()
    assert control.state() == state  # a refused change changes nothing
    control.set_scene("a desert", "", 11, {"audio": 3.0, "text": 1.5})
    switched = control.state()
    assert switched.version == state.version + 1  # one change: no half-applied scene is ever visible
    assert (switched.prompt, switched.settings.seed, switched.settings.audio_guidance) == ("a desert", 11, 3.0)


def test_live_and_capture_settings_refuse_out_of_range_values():
    for bad in ({"hop_seconds": 0.0}, {"crossfade_seconds": -1}, {"loudness_window_seconds": 5},
                {"stats_window_seconds": 0}, {"trim_seconds": 0.5}, {"trim_seconds": -1}):
        with pytest.raises(ValueError):
            LiveSettings(**bad)
    for bad in ({"gain_db": 99}, {"channel": -1}, {"channels": 2, "channel": 2}, {"latency": "fast"},
                {"sample_rate": 100}, {"retry_seconds": (2.0, 1.0)}, {"stall_seconds": 0}):
        with pytest.raises(ValueError):
            CaptureConfig(**bad)


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_stats_give_rates_means_and_totals_over_the_window():
    clock = FakeClock(100.0)
    stats = LiveStats(window_seconds=0.5, clock=clock)
    clock.now = now = 103.0
    for i in range(5):
        stats.frame(now - 0.05 * i, latency=0.1 * (i + 1) if i < 2 else None)
    stats.frame(now - 2.0)  # outside the window
    stats.stage("render", 0.02)
    stats.stage("render", 0.04)
    stats.add("dropped_frames", 3)
    with pytest.raises(ValueError, match="unknown counter"):
        stats.add("nonsense")
    snap = stats.snapshot(overflows=2, device_losses=1, source_state="lost")
    assert snap.fps == pytest.approx(5 / 0.5) and snap.frames == 6 and snap.dropped_frames == 3
    assert snap.latency_ms == pytest.approx(150) and snap.latency_max_ms == pytest.approx(200)
    assert snap.stage_ms == {"render": pytest.approx(30)}
    line = snap.line()
    assert "10.0 fps" in line and "latency 150 ms (max 200)" in line
    assert "overflows 2" in line and "LOST" in line


def test_stats_keep_only_their_window_however_long_the_show():
    clock = FakeClock(0.0)
    stats = LiveStats(window_seconds=1.0, clock=clock)
    for i in range(20_000):  # 200 s at 100 fps
        clock.now = i / 100
        stats.frame(clock.now, latency=0.05)
        stats.stage("render", 0.01)
    series = [stats._frames, stats._latencies, stats._stages["render"]]
    assert [len(entries) for entries in series] == [101, 101, 101]  # what the last second holds, no more
    snap = stats.snapshot()
    assert snap.fps == pytest.approx(100, abs=1) and snap.latency_ms == pytest.approx(50)
    assert snap.frames == 20_000


# ---- channels, resampling, signals, sources ------------------------------------------------------


def test_channel_map_picks_or_mixes_down_and_applies_gain():
    frames = np.array([[1.0, 3.0], [2.0, 4.0]], np.float32)
    mixed = ChannelMap(2, gain=db_to_gain(-6.0206))
    assert np.allclose(mixed.mono(frames), [1.0, 1.5]) and mixed.program(frames).shape == (2, 2)
    right = ChannelMap(2, pick=1)
    assert np.array_equal(right.mono(frames), [3.0, 4.0])
    assert np.array_equal(right.program(frames), [[3.0], [4.0]])
    many = ChannelMap(4)
    assert many.program_channels == 1 and np.allclose(many.program(np.ones((3, 4), np.float32)), 1.0)
    with pytest.raises(ValueError):
        ChannelMap(2, pick=2)


def test_resampling_keeps_a_tone_at_its_frequency_and_the_newest_sample_last():
    rate_in, rate_out = 48000, 16000
    t = np.arange(rate_in) / rate_in
    x = np.sin(2 * np.pi * 1000 * t) + 0.5 * np.sin(2 * np.pi * 12000 * t)  # 12 kHz is above the new Nyquist
    y = resample(x, rate_in, rate_out, rate_out)
    spectrum = np.abs(np.fft.rfft(y))
    assert len(y) == rate_out and np.argmax(spectrum) == 1000
    assert spectrum.max() > 100 * np.delete(spectrum, range(995, 1006)).max()  # no alias of 12 kHz at 4 kHz
    short = resample(np.ones(100), 16000, 32000, 300)
    assert len(short) == 300 and not short[:100].any() and np.allclose(short[-150:], 1.0, atol=0.05)


def test_signals_are_functions_of_the_absolute_sample_index():
    rate = 1000
    part = sequence([(0.01, silence()), (0.02, tone(100.0, rate)), (0.01, noise(seed=3))], rate)
    whole = part(0, 80)
    pieces = np.concatenate([part(0, 7), part(7, 30), part(37, 43)])
    assert np.array_equal(whole, pieces)  # blocks of any size give the same signal
    assert not whole[:10].any() and whole[10:30].any() and whole[30:40].any()
    # It loops; each part sees the absolute index (a tone keeps its phase, noise goes on being new noise).
    assert not whole[40:50].any() and np.allclose(whole[50:70], whole[10:30], atol=1e-5)
    once = sequence([(0.01, tone(100.0, rate))], rate, loop=False)
    assert not once(10, 10).any()


def test_synthetic_source_feeds_the_ring_in_real_time():
    source = SyntheticSource(tone(440.0, 8000), 8000)
    source.start()
    time.sleep(0.5)
    source.stop()
    assert 0.35 * 8000 <= source.ring.written <= 0.65 * 8000
    mono, end = source.mono_window(source.ring.written)
    assert end == source.ring.written and np.allclose(mono, tone(440.0, 8000)(0, end)[:, 0], atol=1e-6)


def test_file_source_plays_the_file_in_real_time_then_finishes(tmp_path):
    path = write_tone(tmp_path / "a.wav", seconds=0.4, freq=300.0, sample_rate=22050, channels=2)
    source = FileSource(path, sample_rate=16000, gain_db=-6.0206)
    assert source.sample_rate == 16000 and source.channel_map.program_channels == 2
    source.start()
    time.sleep(0.15)
    assert source.state == "running" and source.ring.written < 0.4 * 16000
    assert wait_for(lambda: source.state == "finished", 5)
    source.stop()
    mono, _ = source.mono_window(int(0.3 * 16000))
    assert source.state == "finished" and np.max(np.abs(mono)) == pytest.approx(0.25, rel=0.05)
    with pytest.raises(UserError, match="channel"):
        FileSource(path, channel=2)


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


# ---- command line ---------------------------------------------------------------------------------


def live_parser() -> argparse.ArgumentParser:
    from tpos_live.cli.live import add_command as add_live_command
    from tpos_live.cli.live import add_devices_command

    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers()
    add_devices_command(commands)
    add_live_command(commands)
    return parser


@pytest.mark.parametrize("argv, message", [
    (["--play-to", "x"], "go with --file"),
    (["--synthetic", "--sample-rate", "44100"], "leave them out"),
    (["--synthetic", "--duration", "0"], "duration"),
    (["--synthetic", "--hop", "0"], "hop"),
    (["--synthetic", "--record", "/no/such/folder/x.mp4"], "does not exist"),
    (["--file", "/no/such/file.wav", "--model", "tiny"], "does not exist"),
])
def test_live_command_refuses_bad_options_with_one_line(argv, message):
    args = live_parser().parse_args(["live", "--prompt", "x", *argv])
    with pytest.raises(UserError, match=message):
        args.run(args)


def test_live_command_runs_on_the_test_signal(tmp_path, capsys):
    args = live_parser().parse_args(["live", "--synthetic", "--model", "tiny", "--size", "64x64",
                                     "--fps", "8", "--hop", "0.5", "--prompt", "x", "--duration", "2.5"])
    assert args.run(args) == 0
    err = capsys.readouterr().err
    assert "sound: test signal" in err and "RANDOM weights" in err
    assert " fps | latency " in err  # the once-a-second stats line


# ---- the knob table ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["audio", "text", "threshold", "momentum_scale", "momentum_beta",
                                  "envelope_depth", "attack_seconds", "release_seconds", "fps"])
def test_every_path_takes_a_knobs_range_from_the_one_table(name):
    from tpos_live.control.midi import MidiMapping
    from tpos_live.control.osc import KNOB_ADDRESSES, OscControl
    from tpos_live.control.preset_bank import knob_value, set_knob
    from tpos_live.live.knobs import KNOBS
    from tpos_live.live.presets import Preset

    knob = KNOBS[name]
    control = LiveControl(RenderSettings(), "a beach")
    for value in (knob.low, knob.high):
        set_knob(control, name, value)  # the controllers' setter
        assert getattr(control.state().settings, knob.setting) == value
    for outside in (knob.low - knob.step, knob.high + knob.step):
        with pytest.raises(ValueError, match=f"{knob.low:g}..{knob.high:g}"):
            set_knob(control, name, outside)
        if name != "fps":
            with pytest.raises(ValueError, match=name):
                control.set_guidance(**{name: outside})  # the control API itself
            with pytest.raises(ValueError, match=name):
                Preset("p", "x", guidance={name: outside})  # presets
    osc = OscControl(control)
    address = next(a for a, k in KNOB_ADDRESSES.items() if k == name)
    osc.handle(address, (knob.high,))
    assert knob_value(control.state(), name) == knob.high
    rejected = osc.rejected
    osc.handle(address, (knob.high + knob.step,))  # OSC refuses it, counted, nothing changes
    assert osc.rejected == rejected + 1 and knob_value(control.state(), name) == knob.high
    mapping = MidiMapping(name, "cc", 0, 1)  # a fader's full travel spans the knob's range
    assert (mapping.value(0), mapping.value(127)) == (pytest.approx(knob.low), pytest.approx(knob.high))


def test_frame_download_matches_the_plain_conversion_flags_nan_and_hands_out_own_arrays():
    from tpos_live.diffusion.frames import FrameDownload

    download = FrameDownload("cpu")
    images = torch.randn(2, 3, 8, 16, generator=torch.Generator().manual_seed(0)) * 1.5
    latents = torch.zeros(2, 4, 1, 2)
    first, finite = download.start(images, latents).result()
    assert finite and first.flags["C_CONTIGUOUS"] and first.shape == (2, 8, 16, 3)
    assert np.array_equal(first, to_frames(images))
    kept = first.copy()
    latents[1, 0, 0, 0] = float("nan")
    _, finite = download.start(-images, latents).result()
    assert not finite and np.array_equal(first, kept)  # a later download does not write into a frame handed out
    half, finite = download.start(images.bfloat16(), latents.bfloat16().nan_to_num()).result()
    assert finite and np.array_equal(half, to_frames(images.bfloat16()))  # a bfloat16 decoder's images


def test_slerp_pair_matches_slerp():
    from tpos_live.conditioning.interpolate import SlerpPair, slerp

    generator = torch.Generator().manual_seed(3)
    a, b = torch.randn(77, 32, generator=generator), torch.randn(77, 32, generator=generator)
    t = np.array([0.0, 0.25, 0.7, 1.0])
    expected = slerp(a.reshape(1, -1).expand(4, -1), b.reshape(1, -1).expand(4, -1), torch.from_numpy(t))
    got = SlerpPair(a, b, a, b)(t)
    assert torch.allclose(got.reshape(4, -1), expected, atol=1e-6)
    assert torch.allclose(SlerpPair(a, a * 2, a, a * 2)(t)[1], a * 1.25, atol=1e-6)  # parallel: linear


class GateFence:
    """A completion fence that opens when the test says the device's work is done."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.waits = 0

    def synchronize(self) -> None:
        self.waits += 1
        assert self.open.wait(10), "the fence was never opened"


class LateBackend:
    """A backend on an asynchronous device: decode returns its output buffer at once, and the buffer
    holds the image only once the work is done (here: when the test writes it and opens the fence)."""

    name, decoder = "late", "taesd"

    def __init__(self) -> None:
        self.out = torch.zeros(1, 3, 8, 8)  # not yet written: converts to 128 grey
        self.gate = GateFence()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.out

    def fence(self) -> GateFence:
        return self.gate


def test_pending_frames_wait_for_the_backends_fence_before_converting():
    from tpos_live.backends.base import completion_fence
    from tpos_live.diffusion.frames import FrameDownload

    backend = LateBackend()
    images = backend.decode(torch.zeros(1, 4, 1, 1))
    pending = FrameDownload("cpu").start(images, torch.zeros(1, 4, 1, 1), completion_fence(backend))
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(pending.result()))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and not got, "result() handed out frames before the backend's fence"
    backend.out.fill_(1.0)  # the device finishes: white
    backend.gate.open.set()
    waiter.join(10)
    frames, finite = got[0]
    assert finite and backend.gate.waits == 1
    assert (frames == 255).all(), "the frames were converted before the fence was waited on"


def test_backends_without_a_fence_give_none_and_download_as_before():
    from tpos_live.backends.base import completion_fence
    from tpos_live.diffusion.frames import FrameDownload

    class NoneFence(LateBackend):
        def fence(self) -> None:
            return None

    assert completion_fence(object()) is None and completion_fence(None) is None
    assert completion_fence(NoneFence()) is None
    images = torch.linspace(-1, 1, 3 * 4 * 4).reshape(1, 3, 4, 4)
    frames, finite = FrameDownload("cpu").start(images, None, completion_fence(object())).result()
    assert finite and np.array_equal(frames, to_frames(images))


def test_a_swapped_source_is_read_from_the_sample_of_the_swap():
    """A reader that notices a swap late (the recorder pumps every 20 ms) still gets every sample the new
    source captured after the swap, and none from before it."""
    from tpos_live.live.source_feed import SourceFeed

    first, second = SyntheticSource(silence(), 16000), SyntheticSource(silence(), 16000)
    channels = second.ring.channels
    second.ring.write(np.ones((100, channels), np.float32))  # before the swap: not fed
    feed = SourceFeed(first)
    assert feed.swap(second) is first
    second.ring.write(np.full((50, channels), 2.0, np.float32))  # between the swap and the reader's next read
    source, start = feed.read_from()
    assert source is second and start == 100
    assert np.array_equal(source.ring.reader(start).read(), np.full((50, channels), 2.0, np.float32))
