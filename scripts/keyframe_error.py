"""How far linearised keyframes are from the per-frame path when a frame has several guided steps.

With one guided step a frame is exactly A + g_s B(c) (tests/test_keyframes.py). With several it is not:
``--frame-path keyframes`` then renders each keyframe at the settings' g_s and scales its audio term
L_key - A by the frame's envelope. This script measures, for a few guided-step counts and envelope
multipliers s, the error of that frame against the frame the per-frame path renders at s:

    relative error = |composed(s) - per_frame(s)| / |L_key - A|      (RMS over the latent, and max)

at a keyframe (tau = 0), where the only approximation is the linearisation in g_s. Random conditions and
random weights (the full-size architectures' cost does not matter here, but their numerics do). Example:

    flock /tmp/tpos-heavy.lock .venv/bin/python scripts/keyframe_error.py --arch tiny -o keyframe_error_tiny.json
    flock /tmp/tpos-heavy.lock .venv/bin/python scripts/keyframe_error.py --arch sd15 --size 256 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import platform
from dataclasses import replace

import torch
from bench_timing import print_and_save

from tpos_live.config import RenderSettings
from tpos_live.diffusion.random_stacks import build_random_stack, build_tiny_stack
from tpos_live.diffusion.renderer import TPoSRenderer
from tpos_live.diffusion.stack import DTYPES

PROMPT = "a photo of a beautiful beach with a blue sky"


def rms(x: torch.Tensor) -> float:
    return float(x.double().pow(2).mean().sqrt())


def measure(stack, size: int, steps: int, guided: int, scales: list[float], conditions: int) -> dict:
    settings = RenderSettings.for_mode("fast", width=size, height=size, steps=steps, delta_step=steps - guided,
                                       frames="keyframes")
    renderer = TPoSRenderer(stack, settings)
    scene = renderer.prepare_scene(PROMPT, seed=42)
    base = renderer.scene_base(scene)
    generator = torch.Generator().manual_seed(guided)
    rows = []
    for index in range(conditions):
        condition = torch.randn(1, 77, stack.cross_attention_dim, generator=generator)
        keys = renderer.keyframe_latents(scene, base, condition)
        audio_term = keys * settings.audio_guidance  # L_key - A
        for s in scales:
            multiplier = torch.tensor([s])
            composed = renderer.compose_latents(base, keys, keys, torch.zeros(1), multiplier)
            per_frame = renderer.render_latents(scene, condition, multiplier)
            error = composed - per_frame
            rows.append({"condition": index, "envelope": s,
                         "relative_rms": rms(error) / rms(audio_term),
                         "relative_max": float(error.abs().max() / audio_term.abs().max())})
    exact = TPoSRenderer(stack, replace(settings, frames="auto")).keyframes_exact
    return {"steps": steps, "guided_steps": guided, "exact": exact, "audio_guidance": settings.audio_guidance,
            "rows": rows, "worst_relative_rms": max(r["relative_rms"] for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="tiny", help="tiny, or a full-size architecture (sd15, ...)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--guided", type=int, nargs="+", default=[1, 2, 3, 4], help="guided-step counts")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0],
                        help="envelope multipliers of g_s (1: the keyframe's own g_s)")
    parser.add_argument("--conditions", type=int, default=3)
    parser.add_argument("-o", "--output", help="also write the JSON here")
    args = parser.parse_args()
    torch.manual_seed(0)
    stack = build_tiny_stack(0) if args.arch == "tiny" else build_random_stack(args.arch, seed=0)
    for module in (stack.unet, stack.text_encoder, stack.vae):
        module.to(DTYPES[args.dtype])
    results = [measure(stack, args.size, args.steps, guided, args.scales, args.conditions) for guided in args.guided]
    print_and_save({"arch": args.arch, "size": args.size, "dtype": args.dtype, "weights": "random",
                    "machine": platform.processor() or platform.machine(), "results": results}, args.output)


if __name__ == "__main__":
    main()
