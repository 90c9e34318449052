"""Scene transitions: blended scenes, the fade a switch starts, and the scene cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tpos_live.config import RenderSettings
from tpos_live.diffusion.renderer import TPoSRenderer
from tpos_live.diffusion.transitions import blend_scenes, can_blend
from tpos_live.live.scenes import SceneCache, start_fade


def settings(**overrides) -> RenderSettings:
    return RenderSettings.for_mode("fast", **({"width": 64, "height": 64, "steps": 2, "delta_step": 0} | overrides))


@pytest.fixture(scope="module")
def scenes(tiny_stack):
    renderer = TPoSRenderer(tiny_stack, settings())
    return renderer, renderer.prepare_scene("a beach", seed=1), renderer.prepare_scene("a forest", "fog", seed=2)


def test_a_blend_is_each_scene_at_its_ends_and_renders_frame_by_frame(scenes):
    renderer, a, b = scenes
    blend = blend_scenes(a, b, torch.tensor([0.0, 0.5, 1.0]))
    for field in ("z_delta", "text", "null", "eps_null_first", "eps_text_first"):
        mixed, start, end = getattr(blend, field), getattr(a, field), getattr(b, field)
        assert mixed.shape[0] == 3
        torch.testing.assert_close(mixed[:1], start, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(mixed[2:], end, atol=1e-5, rtol=1e-4)
        assert (mixed[1] - start[0]).abs().max() > 1e-3 and (mixed[1] - end[0]).abs().max() > 1e-3
    assert blend.step_noise.shape == (a.step_noise.shape[0], 3, *a.step_noise.shape[2:])
    # slerp keeps the latents' spread (a linear mix of two independent noises would shrink it by ~0.7)
    assert blend.z_delta[1].std() > 0.9 * min(a.z_delta.std(), b.z_delta.std())

    conditions = renderer.encode_prompt("").float().expand(3, -1, -1)
    scales = torch.ones(3)
    calls = renderer.unet_calls
    together = renderer.render_latents(blend, conditions, scales)
    blend_calls, calls = renderer.unet_calls - calls, renderer.unet_calls
    renderer.render_latents(b, conditions, scales)
    assert blend_calls == renderer.unet_calls - calls  # a transition frame costs what any frame costs
    alone_a = renderer.render_latents(a, conditions[:1], scales[:1])
    alone_b = renderer.render_latents(b, conditions[:1], scales[:1])
    torch.testing.assert_close(together[:1], alone_a, atol=1e-3, rtol=1e-3)  # batch 3 vs batch 1: float noise
    torch.testing.assert_close(together[2:], alone_b, atol=1e-3, rtol=1e-3)


def test_scenes_with_other_steps_do_not_blend_and_a_renderer_refuses_them(tiny_stack, scenes):
    renderer, a, _ = scenes
    other = TPoSRenderer(tiny_stack, settings(steps=3, delta_step=1))
    c = other.prepare_scene("a beach", seed=1)
    assert can_blend(a, a) and not can_blend(a, c)
    with pytest.raises(ValueError, match="cannot be blended"):
        blend_scenes(a, c, torch.tensor([0.5]))
    with pytest.raises(ValueError, match="cannot be rendered"):
        renderer.render_latents(c, renderer.encode_prompt("").float(), torch.ones(1))


def test_a_switch_morphs_fades_pixels_or_cuts(tiny_stack, scenes):
    _, a, b = scenes
    c = TPoSRenderer(tiny_stack, settings(steps=3, delta_step=1)).prepare_scene("a beach", seed=1)
    last = np.full((64, 64, 3), 200, np.uint8)
    assert start_fade(None, None, a, None, 1.0, now=0.0) is None  # the first scene: nothing to fade from
    assert start_fade(a, None, b, last, 0.0, now=0.0) is None  # crossfade 0: a cut
    morph = start_fade(a, None, b, last, 1.0, now=10.0)
    assert morph.source is a and not morph.done(np.array([10.5])) and morph.done(np.array([11.0]))
    halfway = morph.scene_at(b, np.array([10.5]))
    assert halfway.z_delta.shape[0] == 1 and morph.scene_at(b, np.array([11.5])) is b
    pixels = start_fade(b, None, c, last, 1.0, now=0.0)  # other steps: the last picture fades out
    assert isinstance(pixels.source, np.ndarray)
    faded = pixels.images_at(np.zeros((2, 64, 64, 3), np.uint8), np.array([0.25, 1.0]))
    assert faded[0].mean() == pytest.approx(150, abs=1) and faded[1].max() == 0
    # a switch in mid-morph goes on from the blend on screen, not from either scene
    again = start_fade(b, morph, a, last, 1.0, now=10.5)
    torch.testing.assert_close(again.source.z_delta, halfway.z_delta)


def test_the_scene_cache_keeps_the_newest(scenes):
    _, a, b = scenes
    cache = SceneCache(size=2)
    cache.put(("a",), a)
    cache.put(("b",), b)
    assert cache.get(("a",)) is a  # now the newest used
    cache.put(("c",), b)
    assert ("a",) in cache and ("b",) not in cache and len(cache) == 2
