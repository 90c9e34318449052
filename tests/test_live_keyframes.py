"""The live keyframe path on the tiny stack: the UNet runs once per condition (and again only for a new scene
or threshold), frames are composed at the fps cap on their own clock, and the per-frame path still runs
where it is asked for."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from tests.test_live_engine import RATE, Reports, frames_during, quick_provider, wait_until
from tpos_live.audio.signals import SyntheticSource, demo_pattern
from tpos_live.config import RenderSettings
from tpos_live.diffusion.renderer import TPoSRenderer
from tpos_live.live.context import StageContext
from tpos_live.live.control import LiveControl
from tpos_live.live.encoder_stage import LiveCondition
from tpos_live.live.engine import LiveEngine
from tpos_live.live.keyframes import KeyframeStage
from tpos_live.live.mailbox import Mailbox
from tpos_live.live.scenes import SceneCache, SceneStage
from tpos_live.live.settings import LiveSettings
from tpos_live.live.stats import LiveStats


def keyframe_settings(**overrides):
    """One guided step (the last of two): keyframes are exact and the default path."""
    return RenderSettings.for_mode("fast", **{"width": 64, "height": 64, "steps": 2, "delta_step": 1, "fps": 24,
                                              **overrides})


@pytest.fixture(scope="module")
def provider(tiny_stack):
    return quick_provider(tiny_stack)


class UNetCalls:
    """Counts the tiny UNet's forward calls (every caller: scenes, keyframes, frames)."""

    def __init__(self, unet) -> None:
        self.calls = 0
        self._hook = unet.register_forward_pre_hook(self._count)

    def _count(self, module, args) -> None:
        self.calls += 1

    def remove(self) -> None:
        self._hook.remove()


def make_engine(stack, provider, report=None, **settings):
    source = SyntheticSource(demo_pattern(RATE, seconds=1.0), RATE)
    return LiveEngine(stack, keyframe_settings(**settings), provider, source, "a beach",
                      live=LiveSettings(hop_seconds=0.25, crossfade_seconds=0.3), report=report)


# ---- the keyframe stage on its own (no threads) -----------------------------------------------------------

def conditions(stack, count: int) -> list[LiveCondition]:
    generator = torch.Generator().manual_seed(1)
    dim = stack.cross_attention_dim
    return [LiveCondition(torch.randn(77, dim, generator=generator), 1.0, 100 * i, float(i), float(i), i + 1)
            for i in range(count)]


def test_the_unet_runs_per_condition_threshold_and_scene_not_for_audio_guidance_or_envelope(tiny_stack):
    control = LiveControl(keyframe_settings(), "a beach")
    stats, cache = LiveStats(), SceneCache()
    scenes = SceneStage(tiny_stack, None, cache, stats, Reports())  # not started: scenes are put by hand
    published = Mailbox()
    stage = KeyframeStage(StageContext(tiny_stack, control, scenes, stats, Reports()), None,
                          Mailbox(), published)

    def prepare():
        state = control.state()
        cache.put(state.scene_key, TPoSRenderer(tiny_stack, state.settings).prepare_scene("a beach"))

    first, second, third = conditions(tiny_stack, 3)
    assert not stage.step(control.state(), first)  # no scene yet: the condition waits for it
    prepare()
    assert stage.step(control.state()) and stage.unet_calls == 1  # A costs no UNet call
    assert stage.step(control.state(), second) and stage.unet_calls == 2
    keys = published.peek()[1]
    assert keys.previous.condition is first and keys.newest.condition is second

    for knobs in ({"audio": 3.0}, {"envelope_depth": 0.2, "attack_seconds": 0.1, "release_seconds": 1.0}):
        control.set_guidance(**knobs)
        assert not stage.step(control.state()), f"{knobs} made new keyframes"
    assert stage.unet_calls == 2

    control.set_guidance(threshold=0.5)
    assert stage.step(control.state()) and stage.unet_calls == 3  # both keyframes again, in one call
    remade = published.peek()[1]
    assert remade.newest.ready == keys.newest.ready  # the interpolation goes on where it was
    assert not torch.equal(remade.newest.latents, keys.newest.latents)

    # Text guidance is a scene setting (the text-only steps before delta use it): a new scene, prepared by
    # the scene stage, then both keyframes again.
    control.set_guidance(text=2.0)
    assert not stage.step(control.state()) and stage.unet_calls == 3
    prepare()
    assert stage.step(control.state(), third) and stage.unet_calls == 5
    assert published.peek()[1].previous.condition is second


# ---- the engine -------------------------------------------------------------------------------------------

def test_keyframe_path_composes_frames_and_runs_the_unet_only_per_condition(tiny_stack, provider):
    with make_engine(tiny_stack, provider) as engine:
        assert engine.uses_keyframes and engine.describe_frames().startswith("frames: keyframes")
        engine.wait_frame(0, timeout=30)
        assert wait_until(lambda: engine.stats().counters["keyframes"] >= 2, 10)
        before = engine.stats().counters
        counter = UNetCalls(tiny_stack.unet)
        try:
            frames = frames_during(engine, 2.0)
        finally:
            engine.stop()
            counter.remove()
        after = engine.stats()
    made = {name: after.counters[name] - before[name] for name in ("keyframes", "conditions", "unet_calls")}
    assert abs(counter.calls - made["unet_calls"]) <= 1  # one call may straddle the hook's install
    assert made["unet_calls"] == made["keyframes"] >= 3  # one call per condition (batch 1)
    assert made["keyframes"] <= made["conditions"] + 1
    assert len(frames) >= 2 * made["keyframes"], "frames are not composed between keyframes"
    assert all(f.mix_audio_time is not None and f.ready - f.mix_audio_time < 2.0 for f in frames)
    assert "keyframes/s" in after.line() and after.counters["render_errors"] == 0


def test_a_slow_keyframe_does_not_hold_the_frames_up(tiny_stack, provider):
    def slow(module, args):
        time.sleep(0.8)

    with make_engine(tiny_stack, provider) as engine:
        engine.wait_frame(0, timeout=30)
        hook = tiny_stack.unet.register_forward_pre_hook(slow)
        try:
            frames = frames_during(engine, 2.0)
        finally:
            hook.remove()
    gaps = np.diff([f.ready for f in frames])
    assert len(frames) >= 10 and gaps.max() < 0.6, f"frames stalled {gaps.max():.2f} s behind a keyframe"


def test_a_failing_keyframe_keeps_the_frames_going_and_keyframes_come_back(tiny_stack, provider):
    reports = Reports()

    def explode(module, args):
        raise RuntimeError("simulated GPU fault")

    with make_engine(tiny_stack, provider, report=reports) as engine:
        engine.wait_frame(0, timeout=30)
        hook = tiny_stack.unet.register_forward_pre_hook(explode)
        try:
            during = frames_during(engine, 1.0)
        finally:
            hook.remove()
        made = engine.stats().counters["keyframes"]
        assert wait_until(lambda: engine.stats().counters["keyframes"] > made, 5), "keyframes did not come back"
        counters = engine.stats().counters
    assert len(during) >= 10, "the frames stopped while keyframes failed"
    assert counters["keyframe_errors"] >= 1 and reports.said("simulated GPU fault")


def test_a_scene_change_fades_without_stalling_the_frames(tiny_stack, provider):
    with make_engine(tiny_stack, provider) as engine:
        engine.wait_frame(0, timeout=30)
        before = frames_during(engine, 0.3)[-1]
        asked = time.monotonic()
        engine.control.set_prompt("a dark forest at night")
        during = frames_during(engine, 2.5)
        counters = engine.stats().counters
    assert counters["scenes"] == 2 and counters["scene_switches"] == 2 and counters["keyframe_errors"] == 0
    gaps = np.diff([asked] + [f.ready for f in during])
    assert gaps.max() < 0.75, f"output stalled for {gaps.max():.2f} s across the scene change"
    distance = [np.abs(f.image.astype(int) - before.image.astype(int)).mean() for f in during]
    assert distance[-1] > 2.0
    assert any(0.5 < d < distance[-1] - 0.5 for d in distance), "no in-between frames: a cut, not a fade"


def test_per_frame_path_runs_when_forced(tiny_stack, provider):
    reports = Reports()
    with make_engine(tiny_stack, provider, report=reports, frames="per-frame") as engine:
        assert not engine.uses_keyframes and engine.keyframe_stage is None
        assert engine.describe_frames() == "frames: per frame (1 guided step)"
        engine.wait_frame(0, timeout=30)
        frames = frames_during(engine, 1.0)
        counters = engine.stats().counters
    assert len(frames) >= 3 and counters["keyframes"] == 0
    assert counters["unet_calls"] >= counters["frames"] - 1  # one UNet call per frame


def test_keyframes_linearised_for_several_guided_steps_when_asked(tiny_stack, provider):
    with make_engine(tiny_stack, provider, delta_step=0, frames="keyframes") as engine:
        assert engine.uses_keyframes
        assert engine.describe_frames().startswith("frames: keyframes linearised in g_s (2 guided steps")
        engine.wait_frame(0, timeout=30)
        frames = frames_during(engine, 1.0)
        counters = engine.stats().counters
    assert len(frames) >= 5 and counters["keyframes"] >= 1 and counters["render_errors"] == 0
