"""What a trained mini stack draws from text alone, told by the world's detector, with a contact sheet.

    flock /tmp/tpos-heavy.lock .venv/bin/python scripts/sample_mini_world.py MODEL \\
        [--steps 20] [--guidance 4] [--per-caption 3] [--sheet sheet.png] [-o report.json]

MODEL is a folder written by ``scripts/train_mini_world.py``. For every scene and concept of the world it
samples "<scene> with <concept>" (DDIM from the stack's scheduler config, classifier-free text guidance,
no audio), decodes with TAESD and with the autoencoder, and counts the pictures whose scene and object the
detector (``tpos_live/mini/detect.py``) names right. As a ceiling for those counts it also decodes the
world's own pictures through each autoencoder (encode, decode) and detects those: what the decoders lose,
the samples cannot show. The sheet has a row per sample and a column per concept, scenes in the world's
order (TAESD's decode).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from bench_timing import print_and_save
from diffusers import DDIMScheduler
from PIL import Image

from tpos_live.diffusion.frames import FrameDownload
from tpos_live.diffusion.loading import load_stack
from tpos_live.diffusion.models import ModelSpec
from tpos_live.diffusion.stack import ModelStack
from tpos_live.diffusion.text import encode_prompt
from tpos_live.fileio import write_atomically
from tpos_live.mini import detect, world

DECODERS = ("taesd", "vae")


def to_pixels(images: torch.Tensor) -> np.ndarray:
    return FrameDownload("cpu").start(images).result()[0]  # the frames' own conversion to uint8


def decode(stack: ModelStack, latents: torch.Tensor, decoder: str) -> np.ndarray:
    """The pictures of scaled latents, by TAESD or by the autoencoder."""
    if decoder == "taesd":
        return to_pixels(stack.taesd.decode(latents).sample)
    return to_pixels(stack.vae.decode(latents / stack.vae.config.scaling_factor).sample)


def encode(stack: ModelStack, images: torch.Tensor, decoder: str) -> torch.Tensor:
    if decoder == "taesd":
        return stack.taesd.encode(images).latents
    return stack.vae.encode(images).latent_dist.mean * stack.vae.config.scaling_factor


def sample(stack: ModelStack, text: str, count: int, steps: int, guidance: float,
           generator: torch.Generator) -> torch.Tensor:
    """DDIM with classifier-free guidance (Ho & Salimans 2022), text only: scaled latents."""
    scheduler = DDIMScheduler.from_config(stack.scheduler_config)
    scheduler.set_timesteps(steps)
    conditions = torch.cat([encode_prompt(stack, "").expand(count, -1, -1),
                            encode_prompt(stack, text).expand(count, -1, -1)])
    size = stack.unet.config.sample_size
    latents = torch.randn(count, stack.latent_channels, size, size, generator=generator)
    for timestep in scheduler.timesteps:
        unconditional, conditional = stack.unet(torch.cat([latents, latents]), timestep, conditions).sample.chunk(2)
        guided = unconditional + guidance * (conditional - unconditional)
        latents = scheduler.step(guided, timestep, latents).prev_sample
    return latents


def share_right(pictures: list[tuple[np.ndarray, str, str]]) -> dict[str, float]:
    """The share of (pixels, scene, concept) whose scene and whose object the detector names right."""
    found = [(detect.detect(pixels), scene, concept) for pixels, scene, concept in pictures]
    return {"scene": sum(d.scene == s for d, s, _ in found) / len(found),
            "object": sum(d.concept == c for d, _, c in found) / len(found)}


def samples_report(stack: ModelStack, args: argparse.Namespace) -> tuple[dict, np.ndarray]:
    generator = torch.Generator().manual_seed(args.seed)
    shown: dict[str, list] = {decoder: [] for decoder in DECODERS}
    rows = []
    for scene in world.SCENES:
        columns = []
        for concept in world.CONCEPTS:
            latents = sample(stack, f"{scene.words[0]} with {concept.words[0]}", args.per_caption, args.steps,
                             args.guidance, generator)
            pixels = {decoder: decode(stack, latents, decoder) for decoder in DECODERS}
            for decoder in DECODERS:
                shown[decoder] += [(p, scene.name, concept.name) for p in pixels[decoder]]
            columns.append(np.concatenate(list(pixels["taesd"]), axis=0))
        rows.append(np.concatenate(columns, axis=1))
    return {decoder: share_right(pictures) for decoder, pictures in shown.items()}, np.concatenate(rows, axis=0)


def reconstruction_report(stack: ModelStack, count: int) -> dict:
    drawn = [world.picture(detect.MEASURE_SEED, index) for index in range(count)]
    images = torch.from_numpy(np.stack([d.pixels for d in drawn])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return {decoder: share_right([(p, d.scene, d.concept) for p, d in
                                  zip(decode(stack, encode(stack, images, decoder), decoder), drawn, strict=True)])
            for decoder in DECODERS}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="a folder written by scripts/train_mini_world.py")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--per-caption", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sheet", type=Path, help="write the contact sheet (PNG) here")
    p.add_argument("-o", "--output", help="write the JSON report here too")
    args = p.parse_args(argv)
    if not (Path(args.model) / "model_index.json").is_file():
        print(f"error: '{args.model}' is not a diffusers folder: give one written by scripts/train_mini_world.py",
              file=sys.stderr)
        return 1
    stack = load_stack(ModelSpec(model=args.model, device="cpu", dtype="float32"), progress=False)
    with torch.inference_mode():
        samples, sheet = samples_report(stack, args)
        ceiling = reconstruction_report(stack, len(world.SCENES) * len(world.CONCEPTS) * args.per_caption)
    if args.sheet is not None:
        write_atomically(args.sheet, lambda temp: Image.fromarray(sheet).save(temp, format="PNG"))
    print_and_save({"model": args.model, "steps": args.steps, "guidance": args.guidance,
                    "pictures": len(world.SCENES) * len(world.CONCEPTS) * args.per_caption,
                    "detected_in_samples": samples, "detected_in_reconstructions": ceiling}, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
