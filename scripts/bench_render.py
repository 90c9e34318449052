"""Seconds per frame of the renderer, fast mode against paper mode, on a full-size architecture; and of a
fast render's frames composed from keyframes against the same render with one UNet call per frame.

Random weights (cost does not depend on their values); the JSON says so. Scene preparation (the
cached text-only steps) is timed apart from the per-frame cost. On a CUDA device
(``--compute-device cuda``) each region is timed with CUDA events (see ``bench_timing.py``).

The render comparison (``--frame-paths``) runs the offline renderer's frames (``offline.FrameRenderer``)
of ``--render-seconds`` of sound at ``--fps``, one random condition every ``--hop`` seconds (as the live
encoder's hop), envelope at 1: the UNet, composition and decode, not the audio encoder or the MP4. Examples:

    .venv/bin/python scripts/bench_render.py --arch sd15 --size 256 --dtypes float32 bfloat16 -o bench.json
    .venv/bin/python scripts/bench_render.py --arch sd15 --size 256 --dtypes bfloat16 --modes \
        --frame-paths keyframes per-frame --fps 24 -o bench_render_keyframes.json
    python scripts/bench_render.py --arch sd15 --size 512 --compute-device cuda --dtypes float16 bfloat16
"""

from __future__ import annotations

import argparse
import json
import platform

import numpy as np
import torch
from bench_timing import Stopwatch, parse_device, print_and_save, synchronize

from tpos_live.conditioning.base import ConditionTrack
from tpos_live.config import RenderSettings
from tpos_live.diffusion.random_stacks import build_random_stack, build_tiny_stack
from tpos_live.diffusion.renderer import TPoSRenderer
from tpos_live.diffusion.stack import DTYPES
from tpos_live.offline import FramePlan, FrameRenderer

PROMPT = "a photo of a beautiful beach with a blue sky"


def time_mode(stack, mode: str, size: int, frames: int) -> dict:
    settings = RenderSettings.for_mode(mode, width=size, height=size)
    renderer = TPoSRenderer(stack, settings)
    watch = Stopwatch(stack.device)
    watch.start()
    scene = renderer.prepare_scene(PROMPT, seed=42)
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


def hop_plan(cross_attention_dim: int, seconds: float, fps: float, hop: float, batch_frames: int = 1) -> FramePlan:
    """The frames of ``seconds`` of sound at ``fps`` with a random condition every ``hop`` seconds (from 0
    to past the last frame) and the envelope at 1."""
    times = np.arange(max(1, round(seconds * fps))) / fps
    count = int(np.ceil(times[-1] / hop)) + 1
    track = ConditionTrack(times=hop * np.arange(count), weights=np.ones(count),
                           conditions=torch.randn(count, 77, cross_attention_dim,
                                                  generator=torch.Generator().manual_seed(0)))
    return FramePlan(times, track, np.ones(len(times)), batch_frames)


def time_render(stack, path: str, size: int, fps: float, seconds: float, hop: float) -> dict:
    """A fast render's frames (keyframes or per-frame), timed whole after one warm-up frame."""
    settings = RenderSettings.for_mode("fast", width=size, height=size, fps=fps, frames=path)
    renderer = TPoSRenderer(stack, settings)
    plan = hop_plan(stack.cross_attention_dim, seconds, fps, hop)
    scene = renderer.prepare_scene(PROMPT, seed=42)
    renderer.render(scene, plan.track.conditions[:1], torch.ones(1))  # warm-up: first-call costs
    frames = FrameRenderer(renderer, scene, plan)
    calls, items = renderer.unet_calls, renderer.unet_batch_items
    watch = Stopwatch(stack.device)
    synchronize(stack.device)
    watch.start()
    frames.render(0, plan.count)  # ends in the last frame's host copy
    elapsed = watch.stop()
    keyframes = len(plan.track.times) if renderer.uses_keyframes else 0
    return {
        "frame_path": path, "frames_made_by": renderer.describe_frames(1 / hop if keyframes else None),
        "fps_clock": fps, "sound_seconds": seconds, "hop_seconds": hop, "frames": plan.count,
        "keyframes": keyframes, "unet_calls": renderer.unet_calls - calls,
        "unet_batch_items": renderer.unet_batch_items - items, "seconds": elapsed,
        "seconds_per_frame": elapsed / plan.count, "frames_per_second": plan.count / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="sd15", choices=("sd15", "sd-turbo", "tiny"),
                        help="full-size architecture, random weights (tiny: a smoke test of this script)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=sorted(DTYPES))
    parser.add_argument("--modes", nargs="*", default=["fast", "paper"], choices=("fast", "paper"),
                        help="single frames of each mode (none: only the render comparison)")
    parser.add_argument("--frame-paths", nargs="*", default=[], choices=("keyframes", "per-frame"),
                        help="also time a fast render's frames made each of these ways (e.g. keyframes per-frame)")
    parser.add_argument("--fps", type=float, default=24.0, help="render comparison: frames per second (24)")
    parser.add_argument("--render-seconds", type=float, default=2.0, help="render comparison: seconds of sound (2)")
    parser.add_argument("--hop", type=float, default=0.25,
                        help="render comparison: seconds between conditions, one keyframe each (0.25)")
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
    stack = build_tiny_stack(0) if args.arch == "tiny" else build_random_stack(args.arch, seed=0)
    for module in stack.modules().values():
        module.to(device)
    results, renders = [], []
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
        for path in args.frame_paths:
            with torch.inference_mode():
                result = time_render(stack, path, args.size, args.fps, args.render_seconds, args.hop)
            result["dtype"] = dtype
            renders.append(result)
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
        "renders": renders,
        "keyframes_over_per_frame_speedup": {
            dtype: _render_ratio(renders, dtype) for dtype in args.dtypes if len(set(args.frame_paths)) == 2
        },
    }
    print_and_save(report, args.output)


def _render_ratio(renders: list[dict], dtype: str) -> float:
    """Per-frame seconds per frame over keyframes' (how many times faster the keyframes' render is)."""
    by_path = {r["frame_path"]: r["seconds_per_frame"] for r in renders if r["dtype"] == dtype}
    return by_path["per-frame"] / by_path["keyframes"]


def _ratio(results: list[dict], dtype: str) -> float:
    by_mode = {r["mode"]: r["seconds_per_frame"] for r in results if r["dtype"] == dtype}
    return by_mode["paper"] / by_mode["fast"]


if __name__ == "__main__":
    main()
