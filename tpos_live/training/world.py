"""Training the mini world's model stack on its pictures and captions (``tpos_live/mini/models.py``).

The audio encoder is trained afterwards by ``train-encoder`` against this stack's text encoder. Here,
in steps (:func:`train_mini_stack`):

1. draw the pictures and their captions (``tpos_live/mini/world.py``);
2. the autoencoder (``vae``) learns to reconstruct them (L1 and a small KL term: LDM's first stage
   without its adversarial loss); the spread of its latents sets its scaling factor, so that the UNet
   works on latents of unit spread as SD's does;
3. TAESD is distilled from it, as the real one was from SD's VAE: its encoder learns the scaled
   latents, its decoder the pictures from them;
4. the text encoder and the UNet learn together to predict the noise (the epsilon objective of DDPM,
   on SD's noise schedule), with the caption left empty ``caption_dropout`` of the time so that
   classifier-free guidance works. Two measures from the diffusion literature make a short run count:
   offset noise (a per-channel constant added to the noise; Guttenberg, "Diffusion with offset noise",
   2023), without which SD's schedule leaves the picture's mean colour to the initial noise and the
   scene, a background colour here, would not follow the text (SD's 0.1 is sized for 64 x 64
   latents, whose noise has a mean spread of 1/64; on 16 x 16 that spread is 1/16, so the mini's is
   larger); and an exponential moving average of the weights (Song & Ermon 2020), which is what is
   kept.

The reconstruction losses (steps 2 and 3's decoder) and the noise loss (step 4) weigh the pixels (or
latent cells) the sound object covers 1 + ``object_weight`` times the scene's (``world.object_mask``,
normalised per batch; TAESD's latent loss stays plain): the object is what the sound asks for,
yet it covers a seventh to a third of a picture, so an unweighted loss spends most of a short run on
backgrounds, which a text's scene word already gets right.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from tpos_live.diffusion.stack import ModelStack
from tpos_live.mini.world import object_mask, picture

Say = Callable[[str], None]


@dataclass(frozen=True)
class WorldRecipe:
    """How the mini stack is trained. The defaults take about 30 minutes on the 2-core development CPU
    (1.3 s a step of the autoencoder and of TAESD, 0.46 s of the denoiser, at batch 32)."""

    pictures: int = 4800
    seed: int = 0
    batch: int = 32
    autoencoder_steps: int = 400
    taesd_steps: int = 300
    denoiser_steps: int = 1800
    autoencoder_lr: float = 1e-3
    denoiser_lr: float = 1e-3
    denoiser_warmup: int = 100
    kl_weight: float = 1e-6
    caption_dropout: float = 0.1
    noise_offset: float = 0.3
    ema_decay: float = 0.998
    object_weight: float = 3.0

    def __post_init__(self) -> None:
        for name in ("pictures", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("autoencoder_steps", "taesd_steps", "denoiser_steps", "denoiser_warmup"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be at least 0, got {getattr(self, name)}")
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ValueError(f"caption_dropout must lie in [0, 1), got {self.caption_dropout}")
        if not 0.0 <= self.noise_offset <= 1.0:
            raise ValueError(f"noise_offset must lie in [0, 1], got {self.noise_offset}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.object_weight <= 100.0:
            raise ValueError(f"object_weight must lie in [0, 100], got {self.object_weight}")


@dataclass(frozen=True)
class WorldData:
    """The pictures as (N, 3, 64, 64) float32 in [-1, 1], where their objects are as (N, 1, 64, 64)
    float32 0 / 1, and their captions."""

    images: torch.Tensor
    objects: torch.Tensor
    captions: tuple[str, ...]


def world_data(count: int, seed: int) -> WorldData:
    drawn = [picture(seed, index) for index in range(count)]
    pixels = np.stack([item.pixels for item in drawn])
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    masks = np.stack([object_mask(seed, index, item) for index, item in enumerate(drawn)])
    objects = torch.from_numpy(masks).float()[:, None]
    return WorldData(images.contiguous(), objects.contiguous(), tuple(item.caption for item in drawn))


def object_weights(objects: torch.Tensor, weight: float, size: int) -> torch.Tensor:
    """Per-pixel loss weights at ``size`` x ``size`` for (B, 1, 64, 64) object masks: 1 on the scene,
    1 + ``weight`` on the object (its share of each cell, at a coarser size), divided by their batch mean
    so that a loss keeps its scale."""
    share = F.adaptive_avg_pool2d(objects, size) if size != objects.shape[-1] else objects
    weights = 1.0 + weight * share
    return weights / weights.mean()


def _object_weighted_mean(errors: torch.Tensor, objects: torch.Tensor, recipe: WorldRecipe) -> torch.Tensor:
    """The mean of per-element ``errors`` (B, C, S, S), each weighted by :func:`object_weights` at S."""
    return (object_weights(objects, recipe.object_weight, errors.shape[-1]) * errors).mean()


def train_mini_stack(stack: ModelStack, recipe: WorldRecipe, say: Say) -> dict[str, float]:
    """Train ``stack`` (an :func:`~tpos_live.mini.models.untrained_mini_stack`) in place; returns the
    last losses. In steps: see the module's docs."""
    torch.manual_seed(recipe.seed)
    data = world_data(recipe.pictures, recipe.seed)
    say(f"{len(data.captions)} pictures drawn")
    batches = _Batches(len(data.captions), recipe.batch, recipe.seed)
    losses = {"autoencoder": _train_autoencoder(stack, data, batches, recipe, say)}
    latents = _scaled_latents(stack, data.images)
    say(f"autoencoder scaling factor {stack.vae.config.scaling_factor:.4f}")
    losses["taesd"] = _distill_taesd(stack, data, latents, batches, recipe, say)
    losses["denoiser"] = _train_denoiser(stack, latents, data, batches, recipe, say)
    for module in stack.modules().values():
        module.eval()
    return losses


class _Batches:
    """Random batches of indices, from a seeded generator of their own."""

    def __init__(self, count: int, size: int, seed: int) -> None:
        self.count, self.size = count, min(size, count)
        self.generator = torch.Generator().manual_seed(seed)

    def next(self) -> torch.Tensor:
        return torch.randint(self.count, (self.size,), generator=self.generator)


def _loop(name: str, steps: int, step: Callable[[], torch.Tensor], say: Say) -> float:
    """Run ``step`` (returns the loss) ``steps`` times; says the mean loss of each tenth of the way and
    returns the last tenth's."""
    started, window, last = time.monotonic(), [], float("nan")
    every = max(1, steps // 10)
    for number in range(1, steps + 1):
        window.append(step().item())
        if number % every == 0 or number == steps:
            last = sum(window) / len(window)
            window.clear()
            say(f"{name}: step {number}/{steps}, loss {last:.4f}, {time.monotonic() - started:.0f} s")
    return last


def _train_autoencoder(stack: ModelStack, data: WorldData, batches: _Batches, recipe: WorldRecipe,
                       say: Say) -> float:
    vae = stack.vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=recipe.autoencoder_lr)

    def step() -> torch.Tensor:
        index = batches.next()
        images = data.images[index]
        posterior = vae.encode(images).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        loss = (_object_weighted_mean((reconstruction - images).abs(), data.objects[index], recipe)
                + recipe.kl_weight * posterior.kl().mean())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return _loop("autoencoder", recipe.autoencoder_steps, step, say)


@torch.no_grad()
def _scaled_latents(stack: ModelStack, images: torch.Tensor) -> torch.Tensor:
    """The pictures' latents (the posterior means) times the scaling factor they set: unit spread."""
    vae = stack.vae.eval()
    raw = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in images.split(256)])
    vae.register_to_config(scaling_factor=float(1.0 / raw.std()))
    return raw * vae.config.scaling_factor


def _distill_taesd(stack: ModelStack, data: WorldData, latents: torch.Tensor, batches: _Batches,
                   recipe: WorldRecipe, say: Say) -> float:
    taesd = stack.taesd.train()
    optimizer = torch.optim.AdamW(taesd.parameters(), lr=recipe.autoencoder_lr)

    def step() -> torch.Tensor:
        index = batches.next()
        images = data.images[index]
        encoded = taesd.encode(images).latents
        decoded = taesd.decode(latents[index]).sample
        loss = (F.mse_loss(encoded, latents[index])
                + _object_weighted_mean((decoded - images).abs(), data.objects[index], recipe))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return _loop("taesd", recipe.taesd_steps, step, say)


def _train_denoiser(stack: ModelStack, latents: torch.Tensor, data: WorldData, batches: _Batches,
                    recipe: WorldRecipe, say: Say) -> float:
    unet, text_encoder, tokenizer = stack.unet.train(), stack.text_encoder.train(), stack.tokenizer
    noise_schedule = DDPMScheduler.from_config(stack.scheduler_config)
    ids = tokenizer(list(data.captions), padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    empty = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length,
                      return_tensors="pt").input_ids
    parameters = [*unet.parameters(), *text_encoder.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=recipe.denoiser_lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda number: _warmup_cosine(number, recipe.denoiser_warmup, recipe.denoiser_steps))
    average = _Average(parameters, recipe.ema_decay)
    generator = torch.Generator().manual_seed(recipe.seed + 1)

    def step() -> torch.Tensor:
        index = batches.next()
        clean = latents[index]
        noise = torch.randn(clean.shape, generator=generator)
        noise += recipe.noise_offset * torch.randn((*clean.shape[:2], 1, 1), generator=generator)
        steps = torch.randint(noise_schedule.config.num_train_timesteps, (len(index),), generator=generator)
        dropped = torch.rand(len(index), generator=generator) < recipe.caption_dropout
        tokens = torch.where(dropped[:, None], empty, ids[index])
        conditions = text_encoder(tokens)[0]
        predicted = unet(noise_schedule.add_noise(clean, noise, steps), steps, conditions).sample
        loss = _object_weighted_mean((predicted - noise).square(), data.objects[index], recipe)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        average.update()
        return loss.detach()

    last = _loop("denoiser", recipe.denoiser_steps, step, say)
    average.copy_to()
    return last


def _warmup_cosine(number: int, warmup: int, total: int) -> float:
    """The learning rate's factor at step ``number``: a linear warm-up, then half a cosine down to zero."""
    if number < warmup:
        return (number + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (number - warmup) / max(1, total - warmup)))


class _Average:
    """An exponential moving average of parameters, with the usual warm-up of its decay (the average of
    the first steps is not dragged towards the initial weights)."""

    def __init__(self, parameters: list[torch.nn.Parameter], decay: float) -> None:
        self.parameters, self.decay, self.updates = parameters, decay, 0
        self.shadow = [parameter.detach().clone() for parameter in parameters]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for shadow, parameter in zip(self.shadow, self.parameters, strict=True):
            shadow.lerp_(parameter.detach(), 1.0 - decay)

    @torch.no_grad()
    def copy_to(self) -> None:
        for parameter, shadow in zip(self.parameters, self.shadow, strict=True):
            parameter.copy_(shadow)
