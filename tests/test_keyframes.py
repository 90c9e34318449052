"""Keyframes: with one guided step a frame is A + g_s B(c), so composing frames from keyframes gives the
per-frame path's latents at the keyframes and is affine in g_s (the derivation is in diffusion/renderer.py).

Tolerance: the two paths evaluate the same float32 expression in another order (A + s (L(c, g) - A) / g
against L(c, s g) in one go), so they differ by rounding: measured 0.9-2.0e-7 of the latents' largest
magnitude on the tiny stack (LCM/DDIM, epsilon/v, with the edit prompt). 1e-5 leaves room for other
machines' kernels; the audio term itself is 2e-3 to 0.9 of that magnitude here, so a wrong formula misses.
"""

from dataclasses import replace

import pytest
import torch

from tpos_live.config import RenderSettings
from tpos_live.diffusion.renderer import TPoSRenderer

RELATIVE_TOLERANCE = 1e-5


def keyframe_renderer(stack, sampler, prediction, **overrides):
    if prediction != "epsilon":
        stack = replace(stack, scheduler_config={**stack.scheduler_config, "prediction_type": prediction})
    settings = RenderSettings.for_mode("fast", width=64, height=64, sampler=sampler, steps=4, delta_step=3,
                                       **overrides)
    return TPoSRenderer(stack, settings)


def conditions(stack, count, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 77, stack.cross_attention_dim, generator=generator)


def assert_close(actual, expected):
    scale = expected.abs().max()
    error = (actual - expected).abs().max()
    assert error <= RELATIVE_TOLERANCE * scale, f"error {float(error):.3g} against magnitude {float(scale):.3g}"


CASES = [
    pytest.param(sampler, prediction, edit, threshold,
                 id=f"{sampler}-{prediction}-{'edit' if edit else 'audio'}-q{threshold}")
    for sampler in ("lcm", "ddim")
    for prediction in ("epsilon", "v_prediction")
    for edit in (None, "a red sun")
    for threshold in (0.0, 0.8)
]


@pytest.mark.parametrize("sampler, prediction, edit, threshold", CASES)
def test_composed_frames_equal_the_per_frame_path_at_the_keyframes(tiny_stack, sampler, prediction, edit, threshold):
    renderer = keyframe_renderer(tiny_stack, sampler, prediction, threshold=threshold, text_guidance=1.5)
    assert renderer.keyframes_exact and renderer.uses_keyframes
    scene = renderer.prepare_scene("neon city", seed=3, edit_prompt=edit)
    calls = renderer.unet_calls
    base = renderer.scene_base(scene)
    assert renderer.unet_calls == calls  # A needs no UNet call
    keyed = conditions(tiny_stack, 2, 7)
    keys = renderer.keyframe_latents(scene, base, keyed)
    assert renderer.unet_calls == calls + 1  # one batched call for both keyframes
    scales = torch.tensor([0.25, 1.0, 1.7])
    for index, tau in ((0, 0.0), (1, 1.0)):
        composed = renderer.compose_latents(base, keys[:1], keys[1:], torch.full((3,), tau), scales)
        per_frame = renderer.render_latents(scene, keyed[index:index + 1].expand(3, -1, -1), scales)
        assert_close(composed, per_frame)


@pytest.mark.parametrize("sampler", ["lcm", "ddim"])
def test_a_frame_is_affine_in_the_audio_guidance(tiny_stack, sampler):
    renderer = keyframe_renderer(tiny_stack, sampler, "epsilon", threshold=0.8)
    scene = renderer.prepare_scene("neon city", seed=3)
    condition = conditions(tiny_stack, 1, 11).expand(4, -1, -1)
    scales = torch.tensor([0.0, 0.5, 1.0, 2.0])
    latents = renderer.render_latents(scene, condition, scales)
    base = renderer.scene_base(scene)
    assert_close(latents[:1], base)  # g_s = 0 is A
    slope = latents[2] - latents[0]
    for index in (1, 3):
        assert_close(latents[index], latents[0] + scales[index] * slope)
    assert (slope.abs().max() > 1e-3 * latents.abs().max())  # the audio moves the frame: the check can fail


def test_between_keyframes_the_audio_term_is_interpolated(tiny_stack):
    renderer = keyframe_renderer(tiny_stack, "lcm", "epsilon")
    scene = renderer.prepare_scene("neon city", seed=3)
    base = renderer.scene_base(scene)
    keys = renderer.keyframe_latents(scene, base, conditions(tiny_stack, 2, 5))
    middle = renderer.compose_latents(base, keys[:1], keys[1:], torch.tensor([0.5]), torch.tensor([1.0]))
    expected = base + renderer.settings.audio_guidance * (keys[0] + keys[1]) / 2
    assert_close(middle, expected)


def test_several_guided_steps_are_not_exact_and_render_per_frame_by_default(tiny_stack):
    settings = RenderSettings.for_mode("fast", width=64, height=64, steps=4, delta_step=1)
    renderer = TPoSRenderer(tiny_stack, settings)
    assert renderer.guided_steps == 3 and not renderer.keyframes_exact
    assert not renderer.uses_keyframes
    assert renderer.describe_frames() == "frames: per frame (3 guided steps)"
    forced = TPoSRenderer(tiny_stack, replace(settings, frames="keyframes"))
    assert forced.uses_keyframes and "linearised" in forced.describe_frames(4.0)
    one_step = TPoSRenderer(tiny_stack, replace(settings, delta_step=3))
    assert one_step.describe_frames(4.0) == "frames: keyframes (one UNet call per condition, 4/s)"
    assert not TPoSRenderer(tiny_stack, replace(settings, delta_step=3, frames="per-frame")).uses_keyframes


def test_linearised_keyframes_are_exact_at_the_keyframes_own_guidance(tiny_stack):
    settings = RenderSettings.for_mode("fast", width=64, height=64, steps=4, delta_step=1, frames="keyframes")
    renderer = TPoSRenderer(tiny_stack, settings)
    scene = renderer.prepare_scene("neon city", seed=3)
    base = renderer.scene_base(scene)
    keyed = conditions(tiny_stack, 1, 13)
    keys = renderer.keyframe_latents(scene, base, keyed)
    at_reference = renderer.compose_latents(base, keys, keys, torch.zeros(1), torch.ones(1))
    assert_close(at_reference, renderer.render_latents(scene, keyed, torch.ones(1)))
    # away from it the frame is an approximation: it must differ (else the test above proves nothing)
    half = renderer.compose_latents(base, keys, keys, torch.zeros(1), torch.tensor([0.5]))
    assert (half - renderer.render_latents(scene, keyed, torch.tensor([0.5]))).abs().max() > 0
