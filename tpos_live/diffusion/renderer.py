"""The TPoS frame renderer: a prepared scene plus per-frame audio conditions in, RGB frames out.

A :class:`Scene` holds everything that is the same for every frame of a prompt and seed
(docs/design.md, "Real-time design"): z^T, the step noise, c_text and c_null, z^delta after the text-only
steps, and the first guided step's text and null predictions. Rendering a batch of frames then costs one batched UNet
call per guided step and none for the cached steps.

Keyframes. With one guided step a frame's final latent is affine in its audio guidance s (g_s times
the loudness envelope): L(c, s) = A + s B(c), exactly, because
- the guided prediction is eps_null + g (eps_text - eps_null) + mask_q(s (eps_c - eps_null)) (+ the edit
  prompt's concept, which does not depend on s), and mask_q(s d) = s mask_q(d) for s >= 0 (the per-channel
  quantile of |s d| is s times that of |d|, so the same entries survive);
- the momentum is zero at a frame's first guided step, so it adds nothing there;
- a DDIM (eta 0), LCM or history-bearing PLMS step is affine in the model output, epsilon or v, and the
  last LCM step adds no noise.
So A = L(c, 0) needs no UNet call (the cached predictions at z^delta), B(c) = L(c, 1) - A one call per
condition, and a frame between two conditions is A + s(t) lerp(B_prev, B_next, tau): the envelope exact at
frame rate, the keyframes exact, only the audio term interpolated in between. In floating point the
composition differs from a per-frame render by rounding (relative ~1e-6 in float32).
With several guided steps the later masks and momentum see a latent moved by s, so L is not affine:
keyframes then linearise it around the keyframe's own g_s (``settings.frames == "keyframes"``), exact there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from tpos_live.config import RenderSettings
from tpos_live.diffusion.backend import completion_fence
from tpos_live.diffusion.frames import FrameDownload
from tpos_live.diffusion.guidance import audio_guided, joint_guided, text_guided
from tpos_live.diffusion.samplers import (
    Schedule,
    add_noise,
    make_schedule,
    sample_ddim,
    sample_lcm,
    sample_plms,
)
from tpos_live.diffusion.stack import ModelStack
from tpos_live.diffusion.text import TextSpace, encode_prompt, text_space_of
from tpos_live.diffusion.uploads import upload
from tpos_live.errors import UserError

if TYPE_CHECKING:
    from tpos_live.diffusion.backend import Backend


@dataclass(frozen=True)
class Scene:
    """Per-prompt, per-seed state shared by every frame. Latents are float32, shape (1, C, h, w).

    A scene may also hold one state per frame of a batch (leading size B instead of 1): a transition
    between two scenes is such a scene (see ``tpos_live.diffusion.transitions``).
    """

    trajectory: tuple[str, int, int]  # (sampler, steps, first guided step): what renders it
    prompt: str
    negative_prompt: str
    seed: int
    text: torch.Tensor  # c_text (1, 77, D), in the UNet's dtype
    null: torch.Tensor  # c_null (1, 77, D): the negative prompt, "" by default
    z_start: torch.Tensor  # z^T, or the noised init image
    step_noise: torch.Tensor  # (S, 1, C, h, w): the same injected noise for every frame
    z_delta: torch.Tensor  # latent at the first guided step
    history: tuple[torch.Tensor, ...]  # PLMS history at the first guided step
    eps_null_first: torch.Tensor  # eps(z^delta, c_null) at the first guided step
    eps_text_first: torch.Tensor  # eps(z^delta, c_text) at the first guided step
    edit: torch.Tensor | None = None  # the edit prompt's encoding (1, 77, D): a second edit concept
    eps_edit_first: torch.Tensor | None = None  # eps(z^delta, edit) at the first guided step


class TPoSRenderer:
    """Renders frames of one model stack with one set of :class:`RenderSettings`.

    Args:
        stack: the loaded models (UNet, text encoder, VAE, optional TAESD).
        settings: sampler, steps, guidance, size; validated against the stack here.
        backend: runs the UNet and the decoder instead of the stack's torch modules (same results
            up to precision; see ``tpos_live.backends``). None: the stack's modules, eager.
    """

    def __init__(self, stack: ModelStack, settings: RenderSettings, backend: Backend | None = None) -> None:
        factor = stack.vae_scale_factor
        if settings.width % factor or settings.height % factor:
            raise UserError(f"size {settings.width}x{settings.height} is not a multiple of the model's "
                            f"scale factor {factor}: pick a multiple of {factor}")
        if settings.decoder == "taesd" and stack.taesd is None:
            raise UserError("the TAESD decoder was asked for but the model has none: pass --decoder vae "
                            "or give a TAESD with --taesd")
        if backend is not None and backend.decoder != settings.decoder:
            raise UserError(f"backend {backend.name} runs the {backend.decoder} decoder but the settings "
                            f"ask for {settings.decoder}: make the backend for the settings' decoder")
        self.backend = backend
        self.stack = stack
        self.settings = settings
        # Read once: a diffusers model's .device and .dtype walk all its modules (~ms per call per frame).
        self.device, self.unet_dtype = stack.device, stack.unet.dtype
        self._decoder = stack.taesd if settings.decoder == "taesd" else stack.vae
        self._decoder_dtype = self._decoder.dtype
        self._download: FrameDownload | None = None
        self.schedule: Schedule = make_schedule(stack.scheduler_config, settings.sampler, settings.steps)
        self.init_step = self._init_step()
        self.first_guided = max(self._first_guided_step(), self.init_step or 0)
        self.unet_calls = 0
        self.unet_batch_items = 0

    # ---- public -------------------------------------------------------------------------------------

    def text_space(self) -> TextSpace:
        """The empty prompt's encoding, which audio providers need to build conditions."""
        return text_space_of(self.stack)

    def encode_prompt(self, text: str) -> torch.Tensor:
        """Text-encoder output (1, 77, D) in the UNet's dtype."""
        return encode_prompt(self.stack, text)

    @torch.inference_mode()
    def prepare_scene(self, prompt: str, negative_prompt: str = "", seed: int | None = None,
                      init_image: str | Path | None = None, edit_prompt: str | None = None) -> Scene:
        """Encode the prompts, draw z^T and the step noise, and run the text-only steps once.

        An init image is noised to the settings' strength (its step, :attr:`init_step`), else to delta.
        ``edit_prompt``: a text concept guided beside the audio (:func:`joint_guided`).
        """
        seed = self.settings.seed if seed is None else seed
        text, null = self.encode_prompt(prompt), self.encode_prompt(negative_prompt)
        z_t, step_noise = self._draw_noise(seed)
        z_start, start = z_t, 0
        if init_image is not None:
            start = self.first_guided if self.init_step is None else self.init_step
            z_start = self._noised_init_image(init_image, z_t, self._init_noise_step(start))
        # With PLMS and delta_step == 1 the first step's second evaluation (at step 1) stays text-only:
        # it only shapes z^delta, which must be the same for every frame.
        text_only = _TextOnlyModel(self, text, null)
        z_delta, history = self._sample(text_only, z_start, step_noise, start, self.first_guided, ())
        eps_null, eps_text = self._first_step_predictions(z_delta, text, null)
        edit = eps_edit = None
        if edit_prompt is not None:
            edit = self.encode_prompt(edit_prompt)
            eps_edit = self.unet(z_delta, self.first_guided, edit)
        return Scene(self.trajectory, prompt, negative_prompt, seed, text, null, z_start, step_noise, z_delta, history,
                     eps_null, eps_text, edit, eps_edit)

    @torch.inference_mode()
    def render_latents(self, scene: Scene, conditions: torch.Tensor, audio_scales: torch.Tensor) -> torch.Tensor:
        """Guided steps for a batch of frames: ``conditions`` (B, 77, D), ``audio_scales`` (B,) = g_s per frame."""
        self._check_trajectory(scene)
        scales = upload(audio_scales, self.device, torch.float32) * self.settings.audio_guidance
        return self._guided_latents(scene, upload(conditions, self.device, self.unet_dtype), scales)

    # ---- keyframes ------------------------------------------------------------------------------------

    @property
    def guided_steps(self) -> int:
        """How many steps of a frame are guided (from the first guided step to the end)."""
        return len(self.schedule) - self.first_guided

    @property
    def keyframes_exact(self) -> bool:
        """Whether a frame is exactly affine in g_s (:func:`compose_latents`): one guided step, taking one
        model evaluation (PLMS's first step, with no history, takes two)."""
        return self.guided_steps == 1 and not (self.settings.sampler == "plms" and not self.first_guided)

    @property
    def uses_keyframes(self) -> bool:
        """Whether frames are composed from keyframes (``settings.frames``; "auto": where that is exact)."""
        path = self.settings.frames
        return path == "keyframes" or (path == "auto" and self.keyframes_exact)

    def describe_frames(self, keyframes_per_second: float | None = None) -> str:
        """One line naming the path that makes the frames, e.g. "frames: keyframes (one UNet call per
        condition, 4/s)" or "frames: per frame (3 guided steps)"."""
        if not self.uses_keyframes:
            steps = self.guided_steps
            return f"frames: per frame ({steps} guided step{'s' if steps > 1 else ''})"
        rate = "" if keyframes_per_second is None else f", {keyframes_per_second:.3g}/s"
        if self.keyframes_exact:
            return f"frames: keyframes (one UNet call per condition{rate})"
        return (f"frames: keyframes linearised in g_s ({self.guided_steps} guided steps per keyframe{rate}; "
                f"exact at the keyframe's g_s only)")

    @torch.inference_mode()
    def scene_base(self, scene: Scene) -> torch.Tensor:
        """A: the frames' final latents with no audio guidance (g_s = 0), (S, C, h, w) for a scene of S states.

        With one guided step it needs no UNet call (the text and null predictions at z^delta are cached);
        with several, the guided steps' text and null branches run once per scene.
        """
        self._check_trajectory(scene)
        batch = scene.z_delta.shape[0]
        return self._guided_latents(scene, None, torch.zeros(batch, device=self.device))

    @torch.inference_mode()
    def keyframe_latents(self, scene: Scene, base: torch.Tensor, conditions: torch.Tensor,
                         reference: float | None = None) -> torch.Tensor:
        """B: each condition's audio term per unit of g_s, (K, C, h, w), from one batched UNet pass.

        ``base`` is :meth:`scene_base` of ``scene``. The keyframe is rendered at the absolute audio guidance
        ``reference`` (default: the settings' g_s, or 1 where that is 0) and B = (L(c, reference) - A) /
        reference, so that :func:`compose_latents` gives that latent back at g_s = reference. The batch runs
        as given: callers that need the same bytes however a render is split keep to a fixed batch grid.
        """
        self._check_trajectory(scene)
        reference = reference or self.settings.audio_guidance or 1.0
        scales = torch.full((conditions.shape[0],), float(reference), device=self.device)
        latents = self._guided_latents(scene, upload(conditions, self.device, self.unet_dtype), scales)
        return (latents - base) / reference

    def compose_latents(self, base: torch.Tensor, previous: torch.Tensor, following: torch.Tensor,
                        fractions: torch.Tensor, audio_scales: torch.Tensor) -> torch.Tensor:
        """Frames between two keyframes: A + g_s(t) * lerp(B_previous, B_following, tau), (F, C, h, w).

        ``fractions`` (F,) is tau per frame, ``audio_scales`` (F,) the envelope's multiplier of g_s, as
        :meth:`render_latents` takes it. ``previous``/``following`` are (F or 1, C, h, w); ``base`` (F or 1, ...).
        """
        return compose_latents(base, previous, following, upload(fractions, self.device, torch.float32),
                               upload(audio_scales, self.device, torch.float32) * self.settings.audio_guidance)

    def _check_trajectory(self, scene: Scene) -> None:
        if scene.trajectory != self.trajectory:
            raise ValueError(f"a scene prepared for {scene.trajectory} cannot be rendered with {self.trajectory} "
                             f"(sampler, steps, first guided step): prepare it with these settings")

    def _guided_latents(self, scene: Scene, conditions: torch.Tensor | None, scales: torch.Tensor) -> torch.Tensor:
        """The guided steps for a batch of frames at absolute g_s ``scales``; ``conditions`` None: no audio."""
        batch = scales.shape[0]
        guided = _AudioGuidedModel if scene.edit is None else _JointGuidedModel
        model = guided(self, scene, conditions, scales)
        x = scene.z_delta.expand(batch, -1, -1, -1)
        history = tuple(h.expand(batch, -1, -1, -1) for h in scene.history)
        latents, _ = self._sample(model, x, scene.step_noise, self.first_guided, len(self.schedule), history)
        return latents

    @torch.inference_mode()
    def decode_images(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, h, w) to images (B, 3, H, W) in [-1, 1], on the compute device (no download)."""
        decoder = self._decoder
        scaled = latents / decoder.config.scaling_factor
        if self.backend is not None:
            return self.backend.decode(scaled)
        return decoder.decode(scaled.to(self.device, self._decoder_dtype)).sample

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents (B, C, h, w) to uint8 RGB frames (B, H, W, 3), C-contiguous (see ``diffusion/frames.py``)."""
        if self._download is None:
            self._download = FrameDownload(self.device)
        images = self.decode_images(latents)
        frames, _ = self._download.start(images, fence=completion_fence(self.backend)).result()
        return frames

    def render(self, scene: Scene, conditions: torch.Tensor, audio_scales: torch.Tensor) -> np.ndarray:
        """Frames for a batch of conditions: guided steps, then decode."""
        return self.decode(self.render_latents(scene, conditions, audio_scales))

    @property
    def trajectory(self) -> tuple[str, int, int]:
        """(sampler, steps, first guided step): scenes that share it render with the same steps."""
        return self.settings.sampler, len(self.schedule), self.first_guided

    # ---- steps ----------------------------------------------------------------------------------------

    def unet(self, x: torch.Tensor, step: int, conditions: torch.Tensor) -> torch.Tensor:
        """One UNet call on float32 latents; the network runs in its own dtype."""
        self.unet_calls += 1
        self.unet_batch_items += x.shape[0]
        t = torch.full((x.shape[0],), self.schedule.timesteps[step], device=x.device, dtype=torch.long)
        if self.backend is not None:
            return self.backend.unet(x, t, conditions).float()
        out = self.stack.unet(x.to(self.unet_dtype), t, encoder_hidden_states=conditions).sample
        return out.float()

    def _sample(self, model, x, step_noise, start, stop, history):
        sampler = self.settings.sampler
        if sampler == "plms":
            return sample_plms(model, x, self.schedule, start, stop, history)
        if sampler == "lcm":
            return sample_lcm(model, x, self.schedule, step_noise, start, stop), ()
        return sample_ddim(model, x, self.schedule, start, stop), ()

    def _first_guided_step(self) -> int:
        s = self.settings
        first = s.delta_step if s.delta_step is not None else self.schedule.first_step_below(s.delta_timestep)
        if first >= len(self.schedule):
            raise UserError(f"delta {s.delta_timestep} leaves no guided step (timesteps run "
                            f"{self.schedule.timesteps[0]}..{self.schedule.timesteps[-1]}): raise --delta")
        return first

    def _init_step(self) -> int | None:
        """The step an init image is noised to with ``strength`` S: the last int(steps * S) steps run, as in
        diffusers' img2img and the official script (t_enc = int(S * steps)). None without a strength."""
        strength = self.settings.strength
        if strength is None:
            return None
        steps = len(self.schedule)
        start = steps - min(int(steps * strength), steps)
        if start >= steps:
            raise UserError(f"strength {strength:g} with {steps} steps runs no step (int(steps * strength) = 0): "
                            f"raise --strength or --steps")
        return start

    def _first_step_predictions(self, z_delta, text, null):
        both = self.unet(torch.cat([z_delta, z_delta]), self.first_guided, torch.cat([null, text]))
        return both[:1], both[1:]

    def _draw_noise(self, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.stack.latent_channels
        f = self.stack.vae_scale_factor
        shape = (1, c, self.settings.height // f, self.settings.width // f)
        generator = torch.Generator("cpu").manual_seed(seed)
        z_t = torch.randn(shape, generator=generator)
        step_noise = torch.randn((len(self.schedule), *shape), generator=generator)
        return z_t.to(self.stack.device), step_noise.to(self.stack.device)

    def _init_noise_step(self, start: int) -> int:
        """The step whose noise level an init image gets when denoising starts at ``start``: ``start``, or the
        step before it as the official img2img does (at strength 1 there is none before: the official
        script would index past its schedule there, so ours stays at ``start``)."""
        return max(start - 1, 0) if self.settings.init_noise_one_step_early else start

    def _noised_init_image(self, path: str | Path, noise: torch.Tensor, step: int) -> torch.Tensor:
        """The paper's visual conditioning: encode the image with the VAE (the posterior's mode, where the
        official img2img samples it: the same frames every run) and noise it to step ``step``."""
        from tpos_live.diffusion.images import load_image_tensor

        pixels = load_image_tensor(path, self.settings.width, self.settings.height)
        vae = self.stack.vae
        latent = vae.encode(pixels.to(self.stack.device, vae.dtype)).latent_dist.mode()
        latent = latent.float() * vae.config.scaling_factor
        return add_noise(latent, noise, self.schedule.alphas[step])


def compose_latents(base: torch.Tensor, previous: torch.Tensor, following: torch.Tensor, fractions: torch.Tensor,
                    guidance_scales: torch.Tensor) -> torch.Tensor:
    """A + g_s * lerp(B_previous, B_following, tau) per frame, with absolute g_s ``guidance_scales`` (F,).

    ``torch.lerp`` returns its ends exactly at tau 0 and 1, so a frame at a keyframe is that keyframe's.
    """
    tau = fractions[:, None, None, None].to(previous.dtype)
    scale = guidance_scales[:, None, None, None].to(previous.dtype)
    return base + scale * torch.lerp(previous, following, tau)


class _TextOnlyModel:
    """Steps before delta: text guidance only, run once per scene with batch 1."""

    def __init__(self, renderer: TPoSRenderer, text: torch.Tensor, null: torch.Tensor) -> None:
        self.renderer, self.text, self.null = renderer, text, null
        self.scale = renderer.settings.text_guidance

    def __call__(self, x: torch.Tensor, step: int) -> torch.Tensor:
        if self.scale == 1.0:  # eps_null + 1 * (eps_text - eps_null) is eps_text: one branch suffices
            return self.renderer.unet(x, step, self.text)
        null, text = self.renderer.unet(torch.cat([x, x]), step, torch.cat([self.null, self.text])).chunk(2)
        return text_guided(null, text, self.scale)


class _AudioGuidedModel:
    """Steps from delta: equations (6)-(7) for B frames, one batched UNet call per step.

    At the frame's first call the latent is z^delta for every frame, so the null and text
    predictions come from the scene cache and only the audio branches run.
    """

    def __init__(self, renderer: TPoSRenderer, scene: Scene, conditions: torch.Tensor | None,
                 guidance_scales: torch.Tensor) -> None:
        self.renderer, self.scene, self.conditions = renderer, scene, conditions
        self.audio_scales = guidance_scales  # absolute g_s per frame
        self.params = renderer.settings.guidance
        self.momentum: torch.Tensor | None = None
        self.fresh = True

    def __call__(self, x: torch.Tensor, step: int) -> torch.Tensor:
        batch = x.shape[0]
        if self.fresh:
            self.fresh = False
            eps_null = self.scene.eps_null_first.expand(batch, -1, -1, -1)
            eps_text = self.scene.eps_text_first.expand(batch, -1, -1, -1)
            eps_audio = self._audio_first(x, step, eps_null)
        else:
            eps_null, eps_text, eps_audio = self._branches(x, step)
        guided, self.momentum = audio_guided(eps_null, eps_text, eps_audio, self.audio_scales,
                                             self.params, self.momentum)
        return guided

    def _audio_first(self, x: torch.Tensor, step: int, eps_null: torch.Tensor) -> torch.Tensor:
        # Without conditions (the scene's base A) the audio edit is zero: eps_null stands in, no UNet call.
        return eps_null if self.conditions is None else self.renderer.unet(x, step, self.conditions)

    def _branches(self, x: torch.Tensor, step: int):
        batch = x.shape[0]
        null = self.scene.null.expand(batch, -1, -1)
        text = self.scene.text.expand(batch, -1, -1)
        if self.conditions is None:
            eps_null, eps_text = self.renderer.unet(torch.cat([x, x]), step, torch.cat([null, text])).chunk(2)
            return eps_null, eps_text, eps_null
        out = self.renderer.unet(torch.cat([x, x, x]), step, torch.cat([null, text, self.conditions]))
        return out.chunk(3)


class _JointGuidedModel(_AudioGuidedModel):
    """:class:`_AudioGuidedModel` with the scene's edit prompt as a second concept: branches
    [null, text, audio, edit], one batched UNet call per step (the first from the scene cache but audio)."""

    def __call__(self, x: torch.Tensor, step: int) -> torch.Tensor:
        batch = x.shape[0]
        if self.fresh:
            self.fresh = False
            eps_null, eps_text, eps_edit = (cached.expand(batch, -1, -1, -1) for cached in (
                self.scene.eps_null_first, self.scene.eps_text_first, self.scene.eps_edit_first))
            eps_audio = self._audio_first(x, step, eps_null)
        else:
            eps_null, eps_text, eps_audio, eps_edit = self._joint_branches(x, step)
        guided, self.momentum = joint_guided(eps_null, eps_text, eps_audio, eps_edit, self.audio_scales,
                                             self.renderer.settings.edit_scale, self.params, self.momentum)
        return guided

    def _joint_branches(self, x: torch.Tensor, step: int):
        batch = x.shape[0]
        null, text, edit = (c.expand(batch, -1, -1) for c in (self.scene.null, self.scene.text, self.scene.edit))
        if self.conditions is None:
            eps_null, eps_text, eps_edit = self.renderer.unet(torch.cat([x, x, x]), step,
                                                              torch.cat([null, text, edit])).chunk(3)
            return eps_null, eps_text, eps_null, eps_edit
        out = self.renderer.unet(torch.cat([x, x, x, x]), step, torch.cat([null, text, self.conditions, edit]))
        return out.chunk(4)
