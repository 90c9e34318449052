"""The live engine on the tiny stack with a synthetic source: frames keep coming, the controls act,
faults are survived, recordings are in sync. (Capture from a real device: test_live_device.py.)"""

from __future__ import annotations

import gc
import sys
import threading
import time

import numpy as np
import pytest
import torch

from tpos_live.audio.signals import SyntheticSource, demo_pattern, noise, silence, tone
from tpos_live.audio.spectrogram import SpectrogramConfig
from tpos_live.backends.torch_backend import TorchBackend
from tpos_live.conditioning.checkpoint import random_tpos
from tpos_live.conditioning.providers import match_token_spread
from tpos_live.conditioning.tpos_encoder import TPoSConfig
from tpos_live.config import RenderSettings
from tpos_live.diffusion.renderer import TPoSRenderer
from tpos_live.live.engine import LiveEngine
from tpos_live.live.settings import LiveSettings
from tpos_live.video.probe import probe_media

RATE = 16000
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the live engine on the tiny stack (conftest.py)
FPS = 12


def quick_provider(stack):
    """A random TPoS encoder on a small spectrogram (16 kHz, 32 x 24 per segment, 1.3 s window): the real
    classes, a fraction of the default front end's cost, so tests leave CPU for rendering."""
    spectrogram = SpectrogramConfig("stft", sample_rate=RATE, n_fft=256, hop_length=128, height=32,
                                    segment_frames=24)
    config = TPoSConfig(embed_dim=stack.cross_attention_dim, text_family=stack.text_family,
                        spectrogram=spectrogram)
    provider = random_tpos(config, seed=0)
    text_space = TPoSRenderer(stack, quick_settings()).text_space()
    match_token_spread(provider.map_model, text_space)
    return provider


def quick_settings(**overrides) -> RenderSettings:
    # every step guided: on random weights one guided step barely moves a frame (see fast_defaults("tiny"))
    return RenderSettings.for_mode("fast", width=64, height=64, steps=2, delta_step=0, fps=FPS, **overrides)


class Reports:
    """Collects what the engine reports."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def __call__(self, level: str, message: str) -> None:
        self.messages.append((level, message))

    def said(self, text: str) -> bool:
        return any(text in message for _, message in self.messages)


def wait_until(predicate, timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def frames_during(engine: LiveEngine, seconds: float) -> list:
    """The frames delivered in the next ``seconds`` (every one, in order)."""
    frames, number = [], engine.frames.peek()[0]
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        newer, frame = engine.wait_frame(number, left)
        if newer != number:
            frames.append(frame)
            number = newer
    return frames


@pytest.fixture(scope="module")
def provider(tiny_stack):
    return quick_provider(tiny_stack)


def make_engine(stack, provider, signal=None, report=None, live=None, **settings):
    source = SyntheticSource(signal or demo_pattern(RATE, seconds=1.0), RATE)
    return LiveEngine(stack, quick_settings(**settings), provider, source, "a beach",
                      live=live or LiveSettings(hop_seconds=0.25, crossfade_seconds=0.3), report=report)


def test_frames_keep_coming_and_follow_the_sound(tiny_stack, provider):
    with make_engine(tiny_stack, provider, silence()) as engine:
        assert engine.wait_frame(0, timeout=30)[1] is not None
        quiet = frames_during(engine, 1.2)
        engine.source.signal = tone(440.0, RATE, amplitude=0.6)
        time.sleep(0.2)
        loud = frames_during(engine, 1.5)
        stats = engine.stats()
    assert len(quiet) >= 3 and len(loud) >= 3, "frames stopped coming"
    assert all(f.image.shape == (64, 64, 3) and f.image.dtype == np.uint8 for f in quiet + loud)
    # The loudness envelope raises g_s at once when the tone starts; the condition follows at hop rate.
    assert max(f.audio_scale for f in quiet) < 0.3 < min(f.audio_scale for f in loud[1:])
    assert np.abs(quiet[-1].image.astype(int) - loud[-1].image.astype(int)).mean() > 1.0
    assert stats.counters["conditions"] >= 8 and stats.latency_ms is not None
    assert stats.counters["render_errors"] == stats.counters["bad_frames"] == 0


def test_a_new_prompt_is_prepared_in_the_background_and_crossfaded(tiny_stack, provider):
    with make_engine(tiny_stack, provider) as engine:
        engine.wait_frame(0, timeout=30)
        assert wait_until(lambda: engine.stats().counters["scenes"] == 1, 5)
        before = frames_during(engine, 0.3)[-1]
        asked = time.monotonic()
        engine.control.set_prompt("a dark forest at night", negative_prompt="people")
        during = frames_during(engine, 2.0)
        counters = engine.stats().counters
    assert counters["scenes"] == 2 and counters["scene_errors"] == 0
    gaps = np.diff([asked] + [f.ready for f in during])
    assert gaps.max() < 1.0, f"output stalled for {gaps.max():.2f} s while the scene was prepared"
    # The fade blends the last frame of the old scene into the new one, so the output moves away
    # from the old picture gradually and ends somewhere else.
    distance = [np.abs(f.image.astype(int) - before.image.astype(int)).mean() for f in during]
    assert distance[-1] > 2.0
    assert any(0.5 < d < distance[-1] - 0.5 for d in distance), "no in-between frames: a cut, not a fade"


def test_freeze_and_blackout_hold_or_blank_the_output(tiny_stack, provider):
    with make_engine(tiny_stack, provider) as engine:
        engine.wait_frame(0, timeout=30)
        engine.control.freeze(True)
        # frames already in flight (rendered, being converted, handed to the finisher) may still land
        assert wait_until(lambda: frames_during(engine, 0.3) == [], 5), "frames kept coming while frozen"
        held = engine.frames.peek()[0]
        assert frames_during(engine, 0.6) == []
        engine.control.freeze(False)
        assert engine.wait_frame(held, timeout=5)[0] > held
        engine.control.blackout(True)
        assert wait_until(lambda: not engine.frames.peek()[1].image.any(), 5)
        engine.control.blackout(False)
        assert wait_until(lambda: engine.frames.peek()[1].image.any(), 5)


def test_runtime_knobs_take_effect(tiny_stack, provider):
    with make_engine(tiny_stack, provider, signal=tone(440.0, RATE)) as engine:
        engine.wait_frame(0, timeout=30)
        engine.control.set_guidance(envelope_depth=0.0)
        assert wait_until(lambda: engine.frames.peek()[1].audio_scale == 1.0, 5)
        engine.control.set_fps(4)
        time.sleep(0.5)
        slow = frames_during(engine, 1.5)
        assert 3 <= len(slow) <= 9
        with pytest.raises(ValueError, match="fps"):
            engine.control.set_fps(0)


def test_render_faults_keep_the_last_good_frame_and_the_loop_goes_on(tiny_stack, provider):
    reports = Reports()

    def explode(module, args, kwargs):
        raise RuntimeError("simulated GPU fault")

    def poison(module, args, kwargs, output):
        output.sample.fill_(float("nan"))
        return output

    with make_engine(tiny_stack, provider, report=reports) as engine:
        engine.wait_frame(0, timeout=30)
        unet = tiny_stack.unet
        faults = ((unet.register_forward_pre_hook, explode), (unet.register_forward_hook, poison))
        for register, fault in faults:
            hook = register(fault, with_kwargs=True)
            try:
                time.sleep(0.2)  # let a frame in flight land
                number, last_good = engine.frames.peek()
                time.sleep(0.6)
                assert engine.frames.peek()[0] == number, "a broken render was shown"
            finally:
                hook.remove()
            assert engine.wait_frame(number, timeout=5)[0] > number, "the loop did not go on"
            assert last_good.image.any()
        counters = engine.stats().counters
    assert counters["render_errors"] >= 1 and counters["bad_frames"] >= 1
    assert reports.said("simulated GPU fault") and reports.said("NaN")


def test_batched_frames_are_presented_one_interval_apart(tiny_stack, provider):
    with make_engine(tiny_stack, provider, batch_frames=3) as engine:
        engine.wait_frame(0, timeout=30)
        frames = frames_during(engine, 2.0)
    assert len(frames) >= 6
    gaps = np.diff([f.ready for f in frames])
    assert np.median(gaps) > 0.5 / FPS  # spread out, not delivered three at once


def test_recording_holds_frames_and_audio_in_sync(tiny_stack, provider, tmp_path):
    path = tmp_path / "set.mp4"
    with make_engine(tiny_stack, provider, signal=noise()) as engine:
        engine.wait_frame(0, timeout=30)
        engine.start_recording(path)
        time.sleep(2.0)
        written = engine.stop_recording()
    assert written == path
    info = probe_media(path)
    assert info.video_codec == "h264" and info.audio_codec == "aac" and info.audio_sample_rate == RATE
    assert abs(info.video_duration - info.audio_duration) <= 1 / FPS
    assert 1.5 <= info.video_duration <= 2.6
    assert b"moof" in path.read_bytes()  # fragmented: its index does not grow in memory over a show


def test_conditions_are_float32_on_the_cpu(tiny_stack, provider):
    with make_engine(tiny_stack, provider) as engine:
        assert wait_until(lambda: engine.latest_condition() is not None, 10)
        condition = engine.latest_condition()
    assert condition.condition.dtype == torch.float32 and condition.condition.shape == (77, 32)
    assert 0.0 <= condition.weight <= 1.0


# ---- changing scenes, steps, sound source and conditioning while it runs ------------------------


def test_a_prefetched_scene_switches_without_waiting_and_morphs(tiny_stack, provider):
    with make_engine(tiny_stack, provider) as engine:
        engine.wait_frame(0, timeout=30)
        assert wait_until(lambda: engine.stats().counters["scene_switches"] == 1, 5)
        desert = engine.control.state().with_scene("a desert at noon", seed=5, guidance={"audio": 5.0})
        assert desert.scene_key not in engine.scene_cache
        engine.prefetch([desert])
        assert wait_until(lambda: desert.scene_key in engine.scene_cache, 10), "the prefetched scene was not prepared"
        prepared = engine.stats().counters["scenes"]
        before = frames_during(engine, 0.3)[-1]
        engine.control.set_scene("a desert at noon", seed=5, guidance={"audio": 5.0})
        during = frames_during(engine, 1.0)
        counters = engine.stats().counters
    assert counters["scenes"] == prepared, "the switch prepared its scene again"
    assert counters["scene_switches"] == 2 and counters["morphs"] == 1
    assert all(f.image.max() > 0 for f in during), "a black frame during the switch"
    distance = [np.abs(f.image.astype(int) - before.image.astype(int)).mean() for f in during]
    assert distance[-1] > 2.0 and any(0.5 < d < distance[-1] - 0.5 for d in distance), "a cut, not a morph"


def test_steps_and_init_image_change_in_the_running_engine(tiny_stack, provider, tmp_path):
    from PIL import Image

    image = tmp_path / "init.png"
    Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[:, None, None], (1, 64, 3))).save(image)
    with make_engine(tiny_stack, provider) as engine:
        engine.wait_frame(0, timeout=30)
        asked = time.monotonic()
        engine.control.set_steps(3, delta_step=1)  # other steps: a pixel fade, not a morph
        assert wait_until(lambda: engine.stats().counters["scene_switches"] == 2, 10)
        frames = frames_during(engine, 0.5)
        engine.control.set_init_image(image)  # same steps: a morph
        assert wait_until(lambda: engine.stats().counters["morphs"] == 1, 10)
        frames += frames_during(engine, 0.5)
        counters = engine.stats().counters
        assert engine.frame_stage.renderer.trajectory == ("lcm", 3, 1)
    assert counters["scene_errors"] == counters["render_errors"] == 0
    assert all(f.image.max() > 0 for f in frames)
    assert np.diff([asked] + [f.ready for f in frames]).max() < 2.0, "the output stalled"


def test_the_sound_source_changes_without_stopping_frames_or_the_recording(tiny_stack, provider, tmp_path):
    path = tmp_path / "set.mp4"
    with make_engine(tiny_stack, provider, signal=silence()) as engine:
        engine.wait_frame(0, timeout=30)
        engine.start_recording(path)
        time.sleep(1.0)
        loud = SyntheticSource(tone(440.0, RATE, amplitude=0.6), RATE)
        old = engine.set_source(loud)
        assert old.state == "running" and engine.source is loud  # the caller stops the old one
        old.stop()
        frames = frames_during(engine, 1.5)
        written = engine.stop_recording()
        condition = engine.latest_condition()
    assert len(frames) >= 3 and frames[-1].audio_scale > 0.3  # the new sound drives the frames
    assert frames[-1].loudness > 0.3 and condition.index > 1
    info = probe_media(written)
    assert abs(info.video_duration - info.audio_duration) <= 1 / FPS and info.video_duration > 2.0


def test_a_source_that_cannot_open_changes_nothing(tiny_stack, provider):
    from tpos_live.errors import UserError

    class Broken(SyntheticSource):
        def start(self) -> None:
            raise UserError("no such device")

    with make_engine(tiny_stack, provider) as engine:
        source = engine.source
        with pytest.raises(UserError):
            engine.set_source(Broken(silence(), RATE))
        assert engine.source is source and engine.encoder.source is source


def test_the_conditioning_changes_at_the_next_hop(tiny_stack, provider):
    from tpos_live.errors import UserError

    other = quick_provider(tiny_stack)
    other.map_model.linear2.bias.data += 0.5  # another encoder: other conditions for the same sound
    with make_engine(tiny_stack, provider, signal=tone(440.0, RATE)) as engine:
        assert wait_until(lambda: engine.latest_condition() is not None, 10)
        first = engine.latest_condition()
        assert engine.set_provider(other) is provider
        assert wait_until(lambda: engine.latest_condition().index > first.index + 1, 10)
        after = engine.latest_condition()
        wide = random_tpos(TPoSConfig(embed_dim=64), seed=0)
        with pytest.raises(UserError, match="64-d"):
            engine.set_provider(wide)
        assert engine.provider is other
    assert (after.condition - first.condition).abs().mean() > 0.1


class DeferredFence:
    """Completes a deferred backend's decodes when waited on, and says on which thread it was."""

    def __init__(self, backend: TorchBackend, work: list, threads: list) -> None:
        self.backend, self.work, self.threads = backend, work, threads

    def synchronize(self) -> None:
        self.threads.append(threading.current_thread().name)
        with torch.inference_mode():  # the buffers were made in the renderer's inference mode
            for latents, out in self.work:
                out.copy_(self.backend.decode(latents))


class DeferredBackend:
    """The torch backend on a stand-in asynchronous device: decode returns an unwritten buffer at once
    (zeros: a uniform grey frame) and the image lands in it only when the fence is waited on."""

    decoder = "taesd"

    def __init__(self, stack) -> None:
        self.backend = TorchBackend(stack)
        self.name, self.factor = "deferred torch", stack.vae_scale_factor
        self.work: list = []
        self.threads: list[str] = []

    def unet(self, *args):
        return self.backend.unet(*args)

    def decode(self, latents):
        batch, _, h, w = latents.shape
        out = torch.zeros(batch, 3, self.factor * h, self.factor * w)
        self.work.append((latents, out))
        return out

    def fence(self) -> DeferredFence:
        work, self.work = self.work, []
        return DeferredFence(self.backend, work, self.threads)

    def describe(self) -> str:
        return "torch, decodes deferred to the fence"


def test_frames_wait_for_the_backends_fence_on_the_finisher(tiny_stack, provider):
    backend = DeferredBackend(tiny_stack)
    source = SyntheticSource(silence(), RATE)
    with LiveEngine(tiny_stack, quick_settings(), provider, source, "a beach", backend=backend) as engine:
        _, frame = engine.wait_frame(0, timeout=30)
        frames = frames_during(engine, 0.5)
    assert frame is not None and frames
    assert all(f.image.std() > 1 for f in [frame, *frames]), "a frame was converted before its fence"
    assert set(backend.threads) == {"tpos-render-finisher"}  # the render thread never waits on it
    offline = TPoSRenderer(tiny_stack, quick_settings(), DeferredBackend(tiny_stack))
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = TPoSRenderer(tiny_stack, quick_settings()).decode(latents)
    assert np.array_equal(offline.decode(latents), expected)  # the offline decode waits on it too


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_the_engine_trims_the_heap_while_running_unless_told_not_to(tiny_stack, provider):
    engine = make_engine(tiny_stack, provider, live=LiveSettings(hop_seconds=0.25, trim_seconds=1.0))
    with engine:
        assert wait_until(lambda: engine.heap_trimmer.trims >= 1, 5)
    assert not engine.heap_trimmer.alive
    assert make_engine(tiny_stack, provider, live=LiveSettings(trim_seconds=0)).heap_trimmer is None


def test_a_full_garbage_collection_during_a_show_skips_what_was_alive_at_its_start(tiny_stack, provider):
    long_lived = [[i] for i in range(50_000)]  # like a model's objects: tracked by the cyclic collector
    with make_engine(tiny_stack, provider) as engine:
        engine.wait_frame(0, timeout=30)
        assert gc.get_freeze_count() >= len(long_lived)
        tracked = {id(o) for o in gc.get_objects()}  # what a full collection walks
        assert id(long_lived) not in tracked and id(long_lived[0]) not in tracked
        quiet = frames_during(engine, 0.5)
    assert len(quiet) >= 1
    assert gc.get_freeze_count() == 0  # walked again once the show is over
