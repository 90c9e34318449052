"""The renderer's cost and determinism on the tiny stack."""

import numpy as np
import pytest
import torch

from tpos_live.config import RenderSettings
from tpos_live.diffusion.renderer import TPoSRenderer


def fast_renderer(stack, **overrides):
    settings = RenderSettings.for_mode("fast", width=64, height=64, **overrides)
    return TPoSRenderer(stack, settings)


def random_conditions(stack, count, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 77, stack.cross_attention_dim, generator=generator)


@pytest.mark.parametrize("steps, delta_step", [(4, 3), (4, 2), (2, 0)])
def test_fast_mode_costs_one_unet_call_per_guided_step(tiny_stack, steps, delta_step):
    renderer = fast_renderer(tiny_stack, steps=steps, delta_step=delta_step, text_guidance=1.0)
    scene = renderer.prepare_scene("neon city", seed=1)
    # the scene: one call per text-only step (g = 1 needs the text branch only) + the first guided step's pair
    assert renderer.unet_calls == delta_step + 1
    guided_steps = steps - delta_step
    for frame in range(3):
        before = renderer.unet_calls
        renderer.render(scene, random_conditions(tiny_stack, 1, frame), torch.ones(1))
        assert renderer.unet_calls - before == guided_steps
    before_items = renderer.unet_batch_items
    before = renderer.unet_calls
    renderer.render(scene, random_conditions(tiny_stack, 4, 9), torch.ones(4))  # a batch of 4 frames
    assert renderer.unet_calls - before == guided_steps
    # first guided step: audio branches only; later ones: null, text and audio branches
    assert renderer.unet_batch_items - before_items == 4 + 3 * 4 * (guided_steps - 1)


def test_text_guidance_zero_skips_the_text_branch(tiny_stack):
    renderer = fast_renderer(tiny_stack, steps=3, delta_step=0, text_guidance=0.0)
    scene = renderer.prepare_scene("neon city", seed=1)
    before = renderer.unet_batch_items
    renderer.render(scene, random_conditions(tiny_stack, 2, 0), torch.ones(2))
    assert renderer.unet_batch_items - before == 2 + 2 * 2 * 2


def test_same_seed_same_frames_and_batching_changes_nothing(tiny_stack):
    conditions = random_conditions(tiny_stack, 3, 4)
    first = fast_renderer(tiny_stack, steps=4, delta_step=2)
    frames_a = first.render(first.prepare_scene("forest", seed=11), conditions, torch.ones(3))
    second = fast_renderer(tiny_stack, steps=4, delta_step=2)
    scene = second.prepare_scene("forest", seed=11)
    frames_b = np.concatenate([second.render(scene, conditions[i:i + 1], torch.ones(1)) for i in range(3)])
    assert frames_a.dtype == np.uint8 and frames_a.shape == (3, 64, 64, 3)
    assert np.abs(frames_a.astype(int) - frames_b.astype(int)).max() <= 1  # batch vs single: float noise only


def test_different_audio_conditions_give_different_frames(tiny_stack):
    renderer = fast_renderer(tiny_stack, delta_step=0)  # every step guided: the audio's full effect
    scene = renderer.prepare_scene("forest", seed=11)
    a = renderer.render(scene, random_conditions(tiny_stack, 1, 1), torch.ones(1))
    b = renderer.render(scene, random_conditions(tiny_stack, 1, 2), torch.ones(1))
    silent = renderer.render(scene, random_conditions(tiny_stack, 1, 1), torch.zeros(1))
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5.0
    assert np.abs(a.astype(int) - silent.astype(int)).mean() > 5.0


def test_one_guided_step_still_moves_the_latents(tiny_stack):
    renderer = fast_renderer(tiny_stack)  # the fast default: only the last step is guided
    scene = renderer.prepare_scene("forest", seed=11)
    a = renderer.render_latents(scene, random_conditions(tiny_stack, 1, 1), torch.ones(1))
    b = renderer.render_latents(scene, random_conditions(tiny_stack, 1, 2), torch.ones(1))
    unguided = renderer.render_latents(scene, random_conditions(tiny_stack, 1, 1), torch.zeros(1))
    assert (a - b).abs().mean() > 1e-2 and (a - unguided).abs().mean() > 1e-2


def test_different_seeds_give_different_frames(tiny_stack):
    renderer = fast_renderer(tiny_stack)
    conditions = random_conditions(tiny_stack, 1, 1)
    a = renderer.render(renderer.prepare_scene("forest", seed=1), conditions, torch.ones(1))
    b = renderer.render(renderer.prepare_scene("forest", seed=2), conditions, torch.ones(1))
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 1.0


def test_paper_mode_plms_renders(tiny_stack):
    settings = RenderSettings.for_mode("paper", width=64, height=64, steps=10)
    renderer = TPoSRenderer(tiny_stack, settings)
    scene = renderer.prepare_scene("forest", seed=1)
    assert renderer.first_guided == renderer.schedule.first_step_below(900)
    frames = renderer.render(scene, random_conditions(tiny_stack, 1, 0), torch.ones(1))
    assert frames.shape == (1, 64, 64, 3)


def test_init_image_starts_from_the_image(tiny_stack, tmp_path):
    from PIL import Image

    path = tmp_path / "init.png"
    Image.fromarray(np.full((80, 100, 3), (200, 30, 30), dtype=np.uint8)).save(path)
    renderer = fast_renderer(tiny_stack, steps=4, delta_step=2)
    with_image = renderer.prepare_scene("forest", seed=1, init_image=path)
    without = renderer.prepare_scene("forest", seed=1)
    assert not torch.allclose(with_image.z_delta, without.z_delta)
    assert renderer.render(with_image, random_conditions(tiny_stack, 1, 0), torch.ones(1)).shape == (1, 64, 64, 3)
