"""The renderer's cost and determinism on the tiny stack."""

import numpy as np
import pytest
import torch

from tpos_live.config import MIN_TEXT_GUIDANCE, RenderSettings
from tpos_live.diffusion.models import ALIASES, TINY_ALIAS, fast_defaults
from tpos_live.diffusion.renderer import TPoSRenderer
from tpos_live.errors import UserError
from tpos_live.live.knobs import KNOBS


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


def test_text_guidance_below_one_is_refused_saying_why():
    for below in (0.0, 0.5, 0.99):
        with pytest.raises(ValueError, match="at least 1.*prompt alone"):
            RenderSettings.for_mode("fast", text_guidance=below)
    assert KNOBS["text"].low == MIN_TEXT_GUIDANCE == 1.0  # the live knob starts where the settings do


def prompt_frames(stack, prompt, mode="fast", **overrides):
    settings = RenderSettings.for_mode(mode, width=64, height=64, **overrides)
    renderer = TPoSRenderer(stack, settings)
    scene = renderer.prepare_scene(prompt, seed=5)
    return renderer.render(scene, random_conditions(stack, 1, 3), torch.ones(1))


# Every model alias's own defaults (steps, guidance; sd-turbo: one step at g = 1), paper mode's 7.5, and
# guidances across the range the command line and the live knob accept.
PROMPT_CASES = [pytest.param("fast", fast_defaults(name), id=name) for name in (*ALIASES, TINY_ALIAS)] + [
    pytest.param("paper", {"steps": 10, "delta_step": 2}, id="paper-default"),
    *(pytest.param("fast", {"text_guidance": g, "steps": 2, "delta_step": 0}, id=f"g={g:g}")
      for g in (1.0, 1.5, 7.5, KNOBS["text"].high)),
]


@pytest.mark.parametrize("mode, overrides", PROMPT_CASES)
def test_two_prompts_give_different_frames(tiny_stack, mode, overrides):
    if mode == "paper":
        assert RenderSettings.for_mode("paper").text_guidance == ALIASES["sd14"].sampling.guidance == 7.5
    a = prompt_frames(tiny_stack, "a red car", mode, **overrides)
    b = prompt_frames(tiny_stack, "a green forest", mode, **overrides)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 1.0


def write_image(path):
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.parametrize("strength, steps", [(0.75, 10), (0.3, 8), (1.0, 6)])
def test_strength_noises_the_init_image_to_img2img_timestep_whatever_delta(tiny_stack, tmp_path, strength, steps):
    from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline

    from tpos_live.diffusion.images import load_image_tensor

    image = write_image(tmp_path / "init.png")
    pipe = StableDiffusionImg2ImgPipeline(
        vae=tiny_stack.vae, text_encoder=tiny_stack.text_encoder, tokenizer=tiny_stack.tokenizer,
        unet=tiny_stack.unet, scheduler=DDIMScheduler.from_config(tiny_stack.scheduler_config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.scheduler.set_timesteps(steps)
    timesteps, runs = pipe.get_timesteps(steps, strength, "cpu")  # diffusers' img2img: where it starts
    starts = []
    for delta in (999, 500, 100):  # delta before, inside and after the init's noise level
        settings = RenderSettings.for_mode("paper", width=64, height=64, sampler="ddim", steps=steps,
                                           delta_timestep=delta, strength=strength)
        renderer = TPoSRenderer(tiny_stack, settings)
        assert renderer.schedule.timesteps[renderer.init_step] == int(timesteps[0])
        assert len(renderer.schedule) - renderer.init_step == runs
        assert renderer.first_guided == max(renderer.init_step, renderer.schedule.first_step_below(delta))
        starts.append(renderer.prepare_scene("a beach", seed=4, init_image=image).z_start)
    assert all(torch.equal(starts[0], other) for other in starts[1:])  # independent of delta
    pixels = load_image_tensor(image, 64, 64)
    latent = tiny_stack.vae.encode(pixels).latent_dist.mode() * tiny_stack.vae.config.scaling_factor
    noise = torch.randn(starts[0].shape, generator=torch.Generator("cpu").manual_seed(4))  # z^T of seed 4
    expected = pipe.scheduler.add_noise(latent, noise, timesteps[:1])
    torch.testing.assert_close(starts[0], expected, rtol=1e-5, atol=1e-5)


def test_official_img2img_noises_the_image_one_step_above_where_it_starts(tiny_stack, tmp_path):
    """The official script: stochastic_encode at DDIM index t_enc = 37 (t = 741), decode from index 36 (t = 721)."""
    from tpos_live.config import IMG2IMG_PRESETS
    from tpos_live.diffusion.images import load_image_tensor
    from tpos_live.diffusion.samplers import add_noise

    image = write_image(tmp_path / "init.png")
    settings = RenderSettings.for_mode("paper", width=64, height=64, **IMG2IMG_PRESETS["official"])
    renderer = TPoSRenderer(tiny_stack, settings)
    timesteps = renderer.schedule.timesteps
    assert timesteps[renderer.init_step] == 721 and timesteps[renderer.init_step - 1] == 741
    pixels = load_image_tensor(image, 64, 64)
    latent = tiny_stack.vae.encode(pixels).latent_dist.mode() * tiny_stack.vae.config.scaling_factor
    noise = torch.randn((1, *latent.shape[1:]), generator=torch.Generator("cpu").manual_seed(4))
    z_start = renderer.prepare_scene("a beach", seed=4, init_image=image).z_start
    at_741 = add_noise(latent, noise, renderer.schedule.alphas[renderer.init_step - 1])
    torch.testing.assert_close(z_start, at_741, rtol=1e-5, atol=1e-5)
    assert (z_start - add_noise(latent, noise, renderer.schedule.alphas[renderer.init_step])).abs().max() > 1e-3


def test_strength_that_runs_no_step_is_refused(tiny_stack):
    settings = RenderSettings.for_mode("paper", width=64, height=64, steps=4, strength=0.1)
    with pytest.raises(UserError, match="strength 0.1"):
        TPoSRenderer(tiny_stack, settings)


def test_edit_prompt_adds_a_branch_and_changes_the_frames(tiny_stack):
    renderer = fast_renderer(tiny_stack, steps=3, delta_step=0)
    conditions = random_conditions(tiny_stack, 2, 0)
    plain = renderer.render(renderer.prepare_scene("neon city", seed=1), conditions, torch.ones(2))
    scene = renderer.prepare_scene("neon city", seed=1, edit_prompt="rain")
    before = renderer.unet_batch_items
    edited = renderer.render(scene, conditions, torch.ones(2))
    assert renderer.unet_batch_items - before == 2 + 2 * 4 * 2  # first step: audio only; then 4 branches
    assert np.abs(edited.astype(int) - plain.astype(int)).mean() > 1.0


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
