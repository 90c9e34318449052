"""Frame rate and audio-to-frame latency of the live engine, and how much of the latency is model time.

First times each model step alone (encode, render, decode; best of three), then runs the engine on
a synthetic source (silence, noise and tones in turn, at the encoder's rate) with
random weights (cost does not depend on their values; the JSON says so) and the default TPoS
front end (44.1 kHz, 5 segments of ~1.79 s). Latency is measured for each frame that is the first
to use a new condition: from the capture of the newest sample of the condition's window to the
frame being delivered. It splits into audio -> condition (waiting for the encoder's hop, the encode)
and condition -> frame (waiting for the next frame slot, the render, the decode). Model time is the
mean encode + render + decode in the live loop (above the isolated figures when encoder and
renderer share the cores); the rest is pipeline overhead (waits and hand-over). ``mix_latency_ms`` is
the engine's own figure over every frame: the age on screen of the condition mix it shows.

Each path of ``--frame-paths`` runs in turn in the same process, on the same stack and sound: by
default ``keyframes`` (the UNet once per condition, frames composed and decoded at the fps cap) against
``per-frame`` (the UNet for every frame). Each gets the engine's line ("frames: ..."), displayed fps,
keyframes per second, latency and the UNet calls of its measured run (counted at the UNet module, so
nothing is left out); ``comparison`` gives the ratios. Example:

    .venv/bin/python scripts/bench_live.py --arch tiny --size 256 --seconds 30 -o live_tiny.json
    flock /tmp/tpos-heavy.lock .venv/bin/python scripts/bench_live.py --arch sd15 --size 256 \\
        --dtype bfloat16 --seconds 60 -o live_sd15.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from dataclasses import replace

import numpy as np
import torch
from bench_timing import Stopwatch, parse_device, print_and_save, synchronize

from tpos_live.audio.signals import SyntheticSource, demo_pattern
from tpos_live.conditioning.checkpoint import random_tpos
from tpos_live.conditioning.providers import match_token_spread
from tpos_live.conditioning.streaming import StreamingConditioner
from tpos_live.conditioning.tpos_encoder import TPoSConfig
from tpos_live.config import RenderSettings
from tpos_live.diffusion.random_stacks import build_random_stack, build_tiny_stack
from tpos_live.diffusion.renderer import TPoSRenderer
from tpos_live.diffusion.stack import DTYPES
from tpos_live.live.encoder_stage import window_samples
from tpos_live.live.engine import LiveEngine
from tpos_live.live.settings import LiveSettings


def build(arch: str, dtype: str, device: torch.device):
    stack = build_tiny_stack(seed=0) if arch == "tiny" else build_random_stack(arch, seed=0)
    for module in (stack.unet, stack.text_encoder, stack.vae, stack.taesd):
        if dtype != "float32":
            module.to(DTYPES[dtype])
        module.to(device)
    return stack


def isolated_model_ms(stack, settings, provider, text_space, repeats: int = 3) -> dict:
    """Each model step alone, one thread at a time (best of ``repeats``): the floor the live loop sits on."""
    renderer = TPoSRenderer(stack, settings)
    scene = renderer.prepare_scene("a photo of a beautiful beach with a blue sky")
    stream = StreamingConditioner(provider, text_space, hop_seconds=LiveSettings().hop_seconds)
    hop, window = stream.grid.hop_samples, window_samples(provider)
    sound = np.random.default_rng(0).standard_normal(2 * window + (repeats + 1) * hop).astype(np.float32) * 0.1
    stream.push(sound[: 2 * window])  # every segment of the next windows is cached: one CNN per hop
    condition = stream.latest().condition
    times = {"encode": [], "render": [], "decode": []}
    device = stack.device
    watch = Stopwatch(device)
    for index in range(repeats):
        synchronize(device)
        watch.start()
        start = 2 * window + index * hop
        stream.push(sound[start : start + hop], latest_only=True)
        times["encode"].append(watch.stop())
        watch.start()
        latents = renderer.render_latents(scene, condition[None], torch.ones(1))
        times["render"].append(watch.stop())
        watch.start()
        renderer.decode(latents)
        times["decode"].append(watch.stop())
    return {name: 1000 * min(values) for name, values in times.items()}


def follow(engine: LiveEngine, seconds: float) -> tuple[list, list]:
    """Every frame delivered for ``seconds``, and a stats snapshot each second."""
    frames, snapshots = [], []
    number = engine.frames.peek()[0]
    started = time.monotonic()
    next_snapshot = started + 1.0
    while (now := time.monotonic()) - started < seconds:
        newer, frame = engine.wait_frame(number, timeout=max(0.01, next_snapshot - now))
        if newer != number:
            frames.append(frame)
            number = newer
        if time.monotonic() >= next_snapshot:
            snapshots.append(engine.stats())
            next_snapshot += 1.0
    return frames, snapshots


class UNetCalls:
    """Counts the UNet module's forward calls and batch items while installed."""

    def __init__(self, unet) -> None:
        self.calls = self.items = 0
        self._hook = unet.register_forward_pre_hook(self._count)

    def _count(self, module, args) -> None:
        self.calls += 1
        self.items += args[0].shape[0]

    def remove(self) -> None:
        self._hook.remove()


def summarize(frames: list, snapshots: list, seconds: float) -> dict:
    fresh, seen = [], set()
    for frame in frames:
        if frame.condition_index and frame.condition_index not in seen:
            seen.add(frame.condition_index)
            fresh.append(frame)
    latency = np.array([f.ready - f.audio_time for f in fresh]) * 1000
    to_condition = np.array([f.condition_time - f.audio_time for f in fresh]) * 1000
    to_frame = np.array([f.ready - f.condition_time for f in fresh]) * 1000
    stages = {name: statistics.mean(s.stage_ms[name] for s in snapshots if name in s.stage_ms)
              for name in ("encode", "render", "keyframe", "compose", "decode")
              if any(name in s.stage_ms for s in snapshots)}
    model_ms = sum(stages.values())
    ages = np.array([f.ready - f.mix_audio_time for f in frames if f.mix_audio_time is not None]) * 1000
    last = snapshots[-1]
    return {
        "fps": len(frames) / seconds,
        "frames": len(frames),
        "latency_ms": {"mean": float(latency.mean()), "median": float(np.median(latency)),
                       "p95": float(np.percentile(latency, 95)), "max": float(latency.max()),
                       "measured_frames": len(fresh)},
        "mix_latency_ms": {"p50": float(np.percentile(ages, 50)), "p95": float(np.percentile(ages, 95)),
                           "max": float(ages.max())},
        "audio_to_condition_ms": float(to_condition.mean()),
        "condition_to_frame_ms": float(to_frame.mean()),
        "stage_ms": stages,
        "model_ms": model_ms,
        "overhead_ms": float(latency.mean()) - model_ms,
        "dropped_frames": last.dropped_frames,
        "dropped_conditions": last.counters["dropped_conditions"],
        "overflows": last.overflows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="tiny", choices=("tiny", "sd15", "sd-turbo"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--fps", type=float, default=24.0, help="frame-rate cap")
    parser.add_argument("--hop", type=float, default=0.25, help="encoder hop, seconds")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured run, after the first frame")
    parser.add_argument("--compute-device", default="cpu", metavar="DEVICE",
                        help="torch device for the models and the encoder: cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--frame-paths", nargs="+", default=["keyframes", "per-frame"],
                        choices=("auto", "keyframes", "per-frame"), help="how frames are made, one run each "
                        "(default: keyframes, then per-frame)")
    parser.add_argument("-o", "--output", help="write the JSON here too")
    args = parser.parse_args()
    try:
        device = parse_device(args.compute_device)
    except ValueError as error:
        parser.error(str(error))

    torch.manual_seed(0)
    started = time.perf_counter()
    stack = build(args.arch, args.dtype, device)
    settings = RenderSettings.for_mode("fast", width=args.size, height=args.size, fps=args.fps)
    text_space = TPoSRenderer(stack, settings).text_space()
    provider = random_tpos(TPoSConfig(embed_dim=stack.cross_attention_dim, text_family=stack.text_family),
                           device=device)
    match_token_spread(provider.map_model, text_space)
    build_seconds = time.perf_counter() - started
    alone = isolated_model_ms(stack, settings, provider, text_space)
    paths = {path: run_path(stack, replace(settings, frames=path), provider, args) for path in args.frame_paths}
    report = {
        "arch": args.arch, "size": args.size, "dtype": args.dtype, "random_weights": True,
        "sampler": settings.sampler, "steps": settings.steps, "guided_from_step": settings.delta_step,
        "decoder": settings.decoder, "fps_cap": args.fps, "hop_seconds": args.hop,
        "encoder_window_seconds": window_samples(provider) / provider.sample_rate,
        "build_seconds": build_seconds, "seconds": args.seconds,
        "isolated_stage_ms": alone, "isolated_model_ms": sum(alone.values()),
        "paths": paths, "comparison": compare(paths),
        "compute_device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    print_and_save(report, args.output)


def run_path(stack, settings: RenderSettings, provider, args: argparse.Namespace) -> dict:
    """One measured run of the live engine with ``settings`` (its frame path), from a fresh source."""
    source = SyntheticSource(demo_pattern(provider.sample_rate), provider.sample_rate)
    engine = LiveEngine(stack, settings, provider, source, "a photo of a beautiful beach with a blue sky",
                        live=LiveSettings(hop_seconds=args.hop))
    with engine:
        started = time.perf_counter()
        engine.wait_frame(0, timeout=600)
        first_frame_seconds = time.perf_counter() - started
        before = engine.stats().counters
        unet = UNetCalls(stack.unet)
        try:
            frames, snapshots = follow(engine, args.seconds)
        finally:
            unet.remove()
        after = engine.stats().counters
        described = engine.describe_frames()
    made = {name: after[name] - before[name] for name in ("keyframes", "conditions")}
    return {"frames_path": described, "first_frame_seconds": first_frame_seconds,
            **summarize(frames, snapshots, args.seconds),
            "keyframes_per_second": made["keyframes"] / args.seconds,
            "conditions_per_second": made["conditions"] / args.seconds,
            "unet_calls": unet.calls, "unet_items": unet.items}


def compare(paths: dict) -> dict:
    """Keyframes against per-frame, where both ran: fps ratio and latency p50 difference (the
    keyframe path's target: fps at least 6x, latency p50 no worse)."""
    keyframes, per_frame = paths.get("keyframes"), paths.get("per-frame")
    if keyframes is None or per_frame is None:
        return {}
    fps_ratio = keyframes["fps"] / max(per_frame["fps"], 1e-9)
    latency_change = keyframes["mix_latency_ms"]["p50"] - per_frame["mix_latency_ms"]["p50"]
    return {"fps_ratio": fps_ratio, "mix_latency_p50_change_ms": latency_change,
            "unet_calls_ratio": keyframes["unet_calls"] / max(per_frame["unet_calls"], 1),
            "target": "keyframes fps >= 6x per-frame, latency p50 no worse",
            "target_met": fps_ratio >= 6.0 and latency_change <= 0.0}


if __name__ == "__main__":
    main()
