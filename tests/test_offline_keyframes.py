"""Offline renders composed from keyframes: the UNet runs once per condition of the track, not per frame; any
split of a render into ranges (batches, workers, a resumed run) gives the same bytes; at a condition's time a
composed frame is the per-frame path's frame. The keyframe algebra itself is tested in test_keyframes.py."""

import numpy as np
import pytest
import torch
from test_keyframes import assert_close

from tpos_live.conditioning.base import ConditionTrack
from tpos_live.config import RenderSettings
from tpos_live.diffusion.renderer import TPoSRenderer
from tpos_live.offline import FramePlan, FrameRenderer

FPS, FRAMES, CONDITIONS = 8.0, 20, 5


def plan(stack, batch: int, times: np.ndarray | None = None) -> FramePlan:
    """A track of 5 conditions 0.5 s apart, from 0.2 s (the first frames hold the first condition) and frames
    at 8 fps with an envelope that moves, on a grid of ``batch`` frames."""
    generator = torch.Generator().manual_seed(0)
    track = ConditionTrack(times=0.2 + 0.5 * np.arange(CONDITIONS), weights=np.ones(CONDITIONS),
                           conditions=torch.randn(CONDITIONS, 77, stack.cross_attention_dim, generator=generator))
    times = np.arange(FRAMES) / FPS if times is None else times
    scales = 0.6 + 0.4 * np.sin(np.arange(len(times)))
    return FramePlan(times, track, scales, batch)


def frame_renderer(stack, frame_plan: FramePlan, **overrides) -> FrameRenderer:
    settings = RenderSettings.for_mode("fast", width=64, height=64, steps=4, batch_frames=frame_plan.batch_frames,
                                       **overrides)
    renderer = TPoSRenderer(stack, settings)
    return FrameRenderer(renderer, renderer.prepare_scene("neon city", seed=3), frame_plan)


@pytest.mark.parametrize("batch", [1, 3])
def test_keyframes_cost_one_unet_item_per_condition_and_per_frame_one_per_frame(tiny_stack, batch):
    keyed = frame_renderer(tiny_stack, plan(tiny_stack, batch))
    assert keyed.renderer.uses_keyframes  # fast mode's one guided step
    calls, items = keyed.renderer.unet_calls, keyed.renderer.unet_batch_items
    assert keyed.render(0, FRAMES).shape == (FRAMES, 64, 64, 3)
    assert keyed.renderer.unet_batch_items - items == CONDITIONS
    assert keyed.renderer.unet_calls - calls == -(-CONDITIONS // batch)  # the keyframes' batches on their grid

    per_frame = frame_renderer(tiny_stack, plan(tiny_stack, batch), frames="per-frame")
    assert not per_frame.renderer.uses_keyframes
    calls, items = per_frame.renderer.unet_calls, per_frame.renderer.unet_batch_items
    per_frame.render(0, FRAMES)
    assert per_frame.renderer.unet_batch_items - items == FRAMES
    assert per_frame.renderer.unet_calls - calls == -(-FRAMES // batch)


@pytest.mark.parametrize("batch", [1, 3])
def test_any_split_into_ranges_gives_the_same_frames(tiny_stack, batch):
    whole = frame_renderer(tiny_stack, plan(tiny_stack, batch)).render(0, FRAMES)
    # each range by a renderer of its own (a Ray worker, a resumed run), in an order a farm may take
    bounds = [0, 3, 4, FRAMES] if batch == 1 else [0, 6, 12, FRAMES]
    pieces = {a: frame_renderer(tiny_stack, plan(tiny_stack, batch)).render(a, b)
              for a, b in reversed(list(zip(bounds, bounds[1:], strict=False)))}
    split = np.concatenate([pieces[a] for a in bounds[:-1]])
    assert np.array_equal(split, whole)
    # the frames move between keyframes (else equal bytes would prove little)
    assert np.abs(np.diff(whole.astype(int), axis=0)).max() > 0


@pytest.mark.parametrize("linearised", [False, True], ids=["one-guided-step", "linearised"])
def test_at_a_conditions_time_the_composed_frame_is_the_per_frame_one(tiny_stack, linearised):
    """With the envelope at 1 (the keyframe's own g_s), where linearised keyframes are exact too."""
    track_times = 0.2 + 0.5 * np.arange(CONDITIONS)
    at_conditions = plan(tiny_stack, batch=2, times=track_times)
    at_conditions = FramePlan(at_conditions.times, at_conditions.track, np.ones(CONDITIONS), 2)
    overrides = {"delta_step": 1, "frames": "keyframes"} if linearised else {}
    keyed = frame_renderer(tiny_stack, at_conditions, **overrides)
    per_frame = frame_renderer(tiny_stack, at_conditions, **overrides | {"frames": "per-frame"})
    assert keyed.renderer.uses_keyframes and not per_frame.renderer.uses_keyframes
    for a, b in at_conditions.batches():
        assert_close(keyed.latents(a, b), per_frame.latents(a, b))


def test_between_conditions_a_frame_is_composed_at_the_fraction_the_conditions_are_slerped(tiny_stack):
    between = plan(tiny_stack, batch=1, times=np.array([0.0, 0.45, 2.5]))  # before, 1/2 way, after the track
    lower, upper, fractions, _ = between.keyframe_inputs(0, 3)
    assert lower.tolist() == [0, 0, 3] and upper.tolist() == [1, 1, 4]
    torch.testing.assert_close(fractions, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
