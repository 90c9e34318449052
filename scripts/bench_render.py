"""Seconds per frame of the renderer, fast mode against paper mode, on a full-size architecture.

Random weights (cost does not depend on their values); the JSON says so. Scene preparation (the
cached text-only steps) is timed apart from the per-frame cost. On a CUDA device
(``--compute-device cuda``) each region is timed with CUDA events (see ``bench_timing.py``). Example:

    .venv/bin/python scripts/bench_render.py --arch sd15 --size 256 --dtypes float32 bfloat16 -o bench.json
    python scripts/bench_render.py --arch sd15 --size 512 --compute-device cuda --dtypes float16 bfloat16
"""

from __future__ import annotations

import argparse
import json
import platform

import torch
from bench_timing import Stopwatch, parse_device, print_and_save, synchronize

from tpos_live.config import RenderSettings
from tpos_live.diffusion.random_stacks import build_random_stack
from tpos_live.diffusion.renderer import TPoSRenderer
from tpos_live.diffusion.stack import DTYPES


def time_mode(stack, mode: str, size: int, frames: int) -> dict:
    settings = RenderSettings.for_mode(mode, width=size, height=size)
    renderer = TPoSRenderer(stack, settings)
    watch = Stopwatch(stack.device)
    watch.start()
    scene = renderer.prepare_scene("a photo of a beautiful beach with a blue sky", seed=42)
    prepare_seconds = watch.stop()
    generator = torch.Generator().manual_seed(0)
    conditions = torch.randn(frames, 77, stack.cross_attention_dim, generator=generator)
    calls_before = renderer.unet_calls
    per_frame = []
    for i in range(frames):
        synchronize(stack.device)
        watch.start()
        renderer.render(scene, conditions[i:i + 1], torch.ones(1))  # ends in the frame's host copy
        per_frame.append(watch.stop())
    return {
        "mode": mode, "sampler": settings.sampler, "steps": settings.steps, "decoder": settings.decoder,
        "guided_from_step": renderer.first_guided, "scene_prepare_seconds": prepare_seconds,
        "frames": frames, "seconds_per_frame": min(per_frame), "seconds_per_frame_all": per_frame,
        "unet_calls_per_frame": (renderer.unet_calls - calls_before) / frames,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="sd15", choices=("sd15", "sd-turbo"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=sorted(DTYPES))
    parser.add_argument("--modes", nargs="+", default=["fast", "paper"], choices=("fast", "paper"))
    parser.add_argument("--fast-frames", type=int, default=3)
    parser.add_argument("--paper-frames", type=int, default=1)
    parser.add_argument("--compute-device", default="cpu", metavar="DEVICE",
                        help="torch device: cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("-o", "--output", help="write the JSON here too")
    args = parser.parse_args()
    try:
        device = parse_device(args.compute_device)
    except ValueError as error:
        parser.error(str(error))

    torch.manual_seed(0)
    stack = build_random_stack(args.arch, seed=0)
    for module in stack.modules().values():
        module.to(device)
    results = []
    for dtype in args.dtypes:
        stack.unet.to(DTYPES[dtype])
        stack.text_encoder.to(DTYPES[dtype])
        stack.vae.to(DTYPES[dtype])
        stack.taesd.to(DTYPES[dtype])
        for mode in args.modes:
            frames = args.fast_frames if mode == "fast" else args.paper_frames
            with torch.inference_mode():
                result = time_mode(stack, mode, args.size, frames)
            result["dtype"] = dtype
            results.append(result)
            print(json.dumps(result), flush=True)
    report = {
        "arch": args.arch, "random_weights": True, "size": args.size, "torch": torch.__version__,
        "compute_device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "results": results,
        "fast_over_paper_speedup": {
            dtype: _ratio(results, dtype) for dtype in args.dtypes if len(args.modes) == 2
        },
    }
    print_and_save(report, args.output)


def _ratio(results: list[dict], dtype: str) -> float:
    by_mode = {r["mode"]: r["seconds_per_frame"] for r in results if r["dtype"] == dtype}
    return by_mode["paper"] / by_mode["fast"]


if __name__ == "__main__":
    main()
