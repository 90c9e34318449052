"""Audio semantic guidance against diffusers' SemanticStableDiffusionPipeline (SEGA) on the tiny stack.

Configured the same way - DDIM, editing concepts given as embeddings, the same z^T - our renderer
(which caches z^delta and the first guided step's text/null predictions) must give SEGA's latents.
SEGA builds momentum during its warm-up, the official TPoS code does not (we follow the latter, see
tpos_live/diffusion/guidance.py), so the comparison uses either no warm-up or no momentum.
"""

import pytest
import torch
from diffusers import DDIMScheduler, SemanticStableDiffusionPipeline

from tpos_live.config import IMG2IMG_PRESETS, GuidanceParams, RenderSettings, layered
from tpos_live.diffusion.guidance import audio_guided, quantile_mask
from tpos_live.diffusion.renderer import TPoSRenderer

STEPS = 8


def sega_latents(stack, scene, condition, warmup, momentum_scale, momentum_beta, threshold, g_s, g):
    pipe = SemanticStableDiffusionPipeline(
        vae=stack.vae, text_encoder=stack.text_encoder, tokenizer=stack.tokenizer, unet=stack.unet,
        scheduler=DDIMScheduler.from_config(stack.scheduler_config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    height, width = scene.z_start.shape[-2] * stack.vae_scale_factor, scene.z_start.shape[-1] * stack.vae_scale_factor
    return pipe(scene.prompt, height=height, width=width, num_inference_steps=STEPS, guidance_scale=g,
                latents=scene.z_start.clone(), output_type="latent", editing_prompt_embeddings=condition,
                edit_guidance_scale=g_s, edit_warmup_steps=warmup, edit_threshold=threshold,
                edit_momentum_scale=momentum_scale, edit_mom_beta=momentum_beta).images


@pytest.mark.parametrize("warmup, momentum_scale", [(0, 0.3), (3, 0.0), (5, 0.0)])
def test_guidance_reproduces_sega(tiny_stack, warmup, momentum_scale):
    settings = RenderSettings.for_mode("paper", width=64, height=64, sampler="ddim", steps=STEPS,
                                       delta_step=warmup, momentum_scale=momentum_scale, decoder="vae")
    renderer = TPoSRenderer(tiny_stack, settings)
    scene = renderer.prepare_scene("a red house by the sea", seed=3)
    condition = renderer.encode_prompt("waves crashing loud") + 0.5 * torch.randn(
        1, 77, tiny_stack.cross_attention_dim, generator=torch.Generator().manual_seed(5))
    ours = renderer.render_latents(scene, condition, torch.ones(1))
    theirs = sega_latents(tiny_stack, scene, condition, warmup, momentum_scale, settings.momentum_beta,
                          settings.threshold, settings.audio_guidance, settings.text_guidance)
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-4, atol=1e-4)
    # and the audio guidance actually did something
    unguided = renderer.render_latents(scene, condition, torch.zeros(1))
    assert (ours - unguided).abs().max() > 1e-3


@pytest.mark.parametrize("warmup, momentum_scale", [(0, 0.3), (3, 0.0)])
def test_edit_prompt_is_sega_with_two_concepts(tiny_stack, warmup, momentum_scale):
    """--edit-prompt: the audio condition and the edit prompt's encoding are SEGA's two editing concepts
    (each scaled and masked, summed with weights 1, momentum on the sum)."""
    settings = RenderSettings.for_mode("paper", width=64, height=64, sampler="ddim", steps=STEPS,
                                       delta_step=warmup, momentum_scale=momentum_scale, decoder="vae",
                                       edit_scale=4.0)
    renderer = TPoSRenderer(tiny_stack, settings)
    scene = renderer.prepare_scene("a red house by the sea", seed=3, edit_prompt="snow falling at night")
    condition = renderer.encode_prompt("waves crashing loud") + 0.5 * torch.randn(
        1, 77, tiny_stack.cross_attention_dim, generator=torch.Generator().manual_seed(5))
    ours = renderer.render_latents(scene, condition, torch.ones(1))
    concepts = torch.cat([condition, renderer.encode_prompt("snow falling at night")])
    theirs = sega_latents(tiny_stack, scene, concepts, warmup, momentum_scale, settings.momentum_beta,
                          settings.threshold, [settings.audio_guidance, settings.edit_scale], settings.text_guidance)
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-4, atol=1e-4)
    # the edit concept counts: without it (audio alone) the latents differ
    audio_only = renderer.render_latents(renderer.prepare_scene("a red house by the sea", seed=3), condition,
                                         torch.ones(1))
    assert (ours - audio_only).abs().max() > 1e-3


def test_warmup_momentum_is_where_we_follow_the_official_code(tiny_stack):
    """With warm-up and momentum both on, SEGA (momentum built during warm-up) and TPoS differ."""
    settings = RenderSettings.for_mode("paper", width=64, height=64, sampler="ddim", steps=STEPS,
                                       delta_step=3, momentum_scale=0.3, decoder="vae")
    renderer = TPoSRenderer(tiny_stack, settings)
    scene = renderer.prepare_scene("a red house by the sea", seed=3)
    condition = renderer.encode_prompt("waves crashing loud")
    ours = renderer.render_latents(scene, condition, torch.ones(1))
    theirs = sega_latents(tiny_stack, scene, condition, 3, 0.3, settings.momentum_beta, settings.threshold,
                          settings.audio_guidance, settings.text_guidance)
    assert not torch.allclose(ours, theirs.float(), atol=1e-4)


def test_quantile_mask_is_per_batch_and_channel():
    edit = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5) - 30
    masked = quantile_mask(edit, 0.75)
    for b in range(2):
        for c in range(3):
            values = edit[b, c].abs().flatten()
            cutoff = torch.quantile(values, 0.75)
            kept = masked[b, c] != 0
            assert torch.equal(kept, edit[b, c].abs() >= cutoff)
            assert kept.sum() == 5  # 20 entries, top quarter


def test_momentum_follows_the_official_update():
    params = GuidanceParams(text_scale=1.0, audio_scale=1.0, threshold=0.0, momentum_scale=0.3, momentum_beta=0.6)
    zeros = torch.zeros(1, 1, 2, 2)
    audio = torch.ones(1, 1, 2, 2)
    first, momentum = audio_guided(zeros, zeros, audio, torch.ones(1), params, None)
    assert torch.allclose(first, audio) and torch.allclose(momentum, 0.4 * audio)
    second, momentum = audio_guided(zeros, zeros, audio, torch.ones(1), params, momentum)
    assert torch.allclose(second, audio + 0.3 * 0.4 * audio)  # edit' = edit + 0.3 v
    assert torch.allclose(momentum, 0.6 * 0.4 * audio + 0.4 * second)  # v = 0.6 v + 0.4 edit'


def test_paper_mode_scales_the_edit_concept_as_the_audio_unless_told() -> None:
    # The official code scales every concept by the same s_e; fast mode keeps SEGA's default 5.
    assert RenderSettings.for_mode("fast").edit_scale == 5.0
    assert RenderSettings.for_mode("paper").edit_scale == 7.0
    assert RenderSettings.for_mode("paper", audio_guidance=9.0).edit_scale == 9.0
    assert RenderSettings.for_mode("paper", **IMG2IMG_PRESETS["official"]).edit_scale == 5.0  # 10, halved
    assert RenderSettings.for_mode("paper", **layered({"audio_guidance": 9.0}, {"edit_scale": 2.0})).edit_scale == 2.0
