"""What a scene switch costs: preparing a scene, and a morph frame against an ordinary frame (the baseline).

A switch prepares the new scene in the background (prompt encodings, z^T, the text-only steps, the
first guided step's cached predictions), then renders each frame of the crossfade from a blend of
the two scenes (``tpos_live.diffusion.transitions``). This times, on random weights (cost does not
depend on their values), best of ``--repeats``:

- ``scene_prepare_ms``: one ``prepare_scene``;
- ``frame_ms``: one ordinary frame (guided steps and decode), the baseline;
- ``morph_frame_ms``: one frame of a morph (blend + guided steps + decode), and ``blend_ms`` alone;
- the UNet calls of each frame (a morph frame must make no more than an ordinary one).

    .venv/bin/python scripts/bench_scene_switch.py --arch tiny --size 128 -o switch_tiny.json
    flock /tmp/tpos-heavy.lock .venv/bin/python scripts/bench_scene_switch.py --arch sd15 --size 256 \\
        --dtype bfloat16 -o switch_sd15.json
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from bench_timing import print_and_save

from tpos_live.config import RenderSettings
from tpos_live.diffusion.models import fast_defaults
from tpos_live.diffusion.random_stacks import build_random_stack, build_tiny_stack
from tpos_live.diffusion.renderer import TPoSRenderer
from tpos_live.diffusion.transitions import blend_scenes

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def best_ms(action, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=("tiny", "sd15", "sd-turbo"), default="tiny")
    parser.add_argument("--size", type=int, default=128, help="square frame size in pixels")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("-o", "--output", help="write the JSON here too")
    args = parser.parse_args()

    torch.manual_seed(0)
    stack = build_tiny_stack(seed=0) if args.arch == "tiny" else build_random_stack(args.arch, seed=0)
    if args.dtype != "float32":
        for module in (stack.unet, stack.text_encoder, stack.vae, stack.taesd):
            module.to(DTYPES[args.dtype])
    defaults = fast_defaults("tiny" if args.arch == "tiny" else "sd15-lcm")
    settings = RenderSettings.for_mode("fast", width=args.size, height=args.size, **defaults)
    renderer = TPoSRenderer(stack, settings)
    conditions = renderer.encode_prompt("a sound").float()
    scales = torch.ones(1)
    scenes = {}

    def prepare() -> None:
        scenes[len(scenes)] = renderer.prepare_scene(f"scene {len(scenes)}", seed=len(scenes))

    prepare_ms = best_ms(prepare, args.repeats)
    a, b = scenes[0], scenes[1]
    halfway = torch.tensor([0.5])
    calls = renderer.unet_calls
    frame_ms = best_ms(lambda: renderer.render(b, conditions, scales), args.repeats)
    frame_calls = (renderer.unet_calls - calls) / args.repeats
    calls = renderer.unet_calls
    morph_ms = best_ms(lambda: renderer.render(blend_scenes(a, b, halfway), conditions, scales), args.repeats)
    morph_calls = (renderer.unet_calls - calls) / args.repeats
    blend_ms = best_ms(lambda: blend_scenes(a, b, halfway), max(args.repeats, 10))
    result = {
        "arch": args.arch, "size": args.size, "dtype": args.dtype, "weights": "random",
        "sampler": settings.sampler, "steps": settings.steps, "first_guided_step": renderer.first_guided,
        "device": str(stack.device), "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(), "repeats": args.repeats,
        "scene_prepare_ms": round(prepare_ms, 1),
        "baseline": {"frame_ms": round(frame_ms, 1), "unet_calls": frame_calls},
        "morph": {"frame_ms": round(morph_ms, 1), "unet_calls": morph_calls, "blend_ms": round(blend_ms, 2)},
        "morph_over_baseline": round(morph_ms / frame_ms, 3),
    }
    print_and_save(result, args.output)


if __name__ == "__main__":
    main()
