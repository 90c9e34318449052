"""How long a full garbage collection stops the live frames, with and without the engine's freeze.

A full collection of Python's cyclic collector walks every tracked object while it holds the GIL, so
every stage waits. The live engine freezes the objects alive when it starts (``live/memory.py``); the
baseline is the same engine with that freeze undone (``gc.unfreeze()`` right after the start). Each
run starts the live engine on the tiny stack in a process that has imported the app's modules (as the
app has: several hundred thousand tracked objects), lets it run, forces one full collection as the
collector would on its own, and reports the longest gap between frames around it.

Reported per run: ``tracked_objects`` (what a full collection walks), ``collection_ms`` (its length),
``longest_gap_ms`` and ``median_gap_ms`` (between frames, ``--seconds`` around the collection).

    flock /tmp/tpos-heavy.lock .venv/bin/python scripts/bench_collector_pause.py -o pause.json
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np
import torch
from bench_timing import print_and_save

import tpos_live.app.main_window  # noqa: F401  (the app's modules: the heap a show runs beside)
from tpos_live.audio.signals import SyntheticSource, demo_pattern
from tpos_live.conditioning.checkpoint import random_tpos
from tpos_live.conditioning.tpos_encoder import TPoSConfig
from tpos_live.config import RenderSettings
from tpos_live.diffusion.random_stacks import build_tiny_stack
from tpos_live.live.engine import LiveEngine
from tpos_live.live.settings import LiveSettings


def measure(frozen: bool, seconds: float) -> dict:
    stack = build_tiny_stack(seed=0)
    provider = random_tpos(TPoSConfig(embed_dim=stack.cross_attention_dim, text_family=stack.text_family))
    settings = RenderSettings.for_mode("fast", width=64, height=64, fps=12)
    source = SyntheticSource(demo_pattern(provider.sample_rate, seconds=1.0), provider.sample_rate)
    with LiveEngine(stack, settings, provider, source, "a beach", live=LiveSettings(trim_seconds=0)) as engine:
        if not frozen:
            gc.unfreeze()
        number, _ = engine.wait_frame(0, timeout=120)
        times = []
        collect_at = time.monotonic() + seconds / 2
        end = collect_at + seconds / 2
        collection_ms = tracked = None
        while time.monotonic() < end:
            if collection_ms is None and time.monotonic() >= collect_at:
                tracked = len(gc.get_objects())
                started = time.perf_counter()
                gc.collect()
                collection_ms = (time.perf_counter() - started) * 1000
            newer, _ = engine.wait_frame(number, 0.02)
            if newer != number:
                times.append(time.monotonic())
                number = newer
    gaps = np.diff(times) * 1000
    return {"frozen": frozen, "tracked_objects": tracked, "collection_ms": round(collection_ms, 1),
            "frames": len(times), "longest_gap_ms": round(float(gaps.max()), 1),
            "median_gap_ms": round(float(np.median(gaps)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="frames watched around the collection")
    parser.add_argument("-o", "--output", help="also write the JSON here")
    args = parser.parse_args()
    runs = [measure(frozen, args.seconds) for frozen in (False, True)]
    print_and_save({"torch_threads": torch.get_num_threads(), "baseline": runs[0], "frozen": runs[1]},
                   args.output)


if __name__ == "__main__":
    main()
