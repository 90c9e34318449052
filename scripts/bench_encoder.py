"""Encode time per live hop: the whole window encoded each hop (the live encoder before it streamed) against
the streaming encoder (each hop: the newest segment's CNN, one LSTM/attention/MAP window), in one run.

Both use the full-size TPoS encoder (ResNet-18 per segment, LSTM, MAP to 76 x 768) with random weights
(cost does not depend on their values) and the default front end (44.1 kHz, 5 segments of 1.79 s), on
the same sound, hop by hop. The streaming side is timed after its warm-up (the first N * L / H hops,
which compute more segments while the cache fills). Example:

    flock /tmp/tpos-heavy.lock .venv/bin/python scripts/bench_encoder.py --hops 40 -o encoder_hop.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch
from bench_timing import print_and_save

from tpos_live.conditioning.base import TextSpace
from tpos_live.conditioning.checkpoint import random_tpos
from tpos_live.conditioning.streaming import StreamingConditioner
from tpos_live.conditioning.tpos_encoder import TPoSConfig


def sound(seconds: float, rate: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(round(seconds * rate)) / rate
    return 0.3 * np.sin(2 * np.pi * (220 * t + 40 * t**2)) + 0.1 * rng.standard_normal(len(t))


def whole_window_ms(provider, text_space: TextSpace, audio: np.ndarray, ends: list[int]) -> list[float]:
    """Milliseconds per hop when every hop encodes the whole window ending then and keeps the newest."""
    window = provider.config.segments * provider.config.segment_samples
    times = []
    for end in ends:
        started = time.perf_counter()
        track = provider.encode(audio[end - window : end], text_space)
        track.conditions[-1].cpu()
        times.append(1000 * (time.perf_counter() - started))
    return times


def streamed_hop_ms(provider, text_space: TextSpace, audio: np.ndarray, hop_seconds: float,
                    hops: int) -> tuple[list[float], int, int]:
    """Milliseconds per hop of a warmed streaming encoder; also its hop in samples and the warm-up hops."""
    stream = StreamingConditioner(provider, text_space, hop_seconds=hop_seconds)
    hop = stream.grid.hop_samples
    warm_up = stream.grid.window_segments * stream.grid.segment_samples // hop
    position = stream.grid.window_segments * stream.grid.segment_samples
    stream.push(audio[:position], latest_only=True)
    times = []
    for index in range(warm_up + hops):
        started = time.perf_counter()
        done = stream.push(audio[position : position + hop], latest_only=True)
        done[-1].condition.cpu()
        if index >= warm_up:
            times.append(1000 * (time.perf_counter() - started))
        position += hop
    return times, hop, warm_up


def summary(times: list[float]) -> dict:
    return {"median_ms": statistics.median(times), "p90_ms": float(np.percentile(times, 90)),
            "min_ms": min(times), "hops": len(times)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hops", type=int, default=30, help="hops timed on each side (30)")
    parser.add_argument("--hop", type=float, default=0.25, help="the live hop in seconds (0.25)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("-o", "--output", help="write the JSON here too")
    options = parser.parse_args()
    if options.threads:
        torch.set_num_threads(options.threads)
    config = TPoSConfig(embed_dim=768, text_family="clip-vit-l-14")
    provider = random_tpos(config, seed=0)
    text_space = TextSpace(empty=torch.zeros(77, 768), family="clip-vit-l-14")
    rate, window = provider.sample_rate, config.segments * config.segment_samples
    audio = sound(60.0, rate)
    with torch.inference_mode():
        streamed, hop, warm_up = streamed_hop_ms(provider, text_space, audio, options.hop, options.hops)
        whole = whole_window_ms(provider, text_space, audio, [window + i * hop for i in range(options.hops)])
    result = {
        "what": "encode time per live hop, full-size TPoS encoder (random weights), this CPU, one run",
        "cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
        "hop_seconds": hop / rate, "window_seconds": window / rate, "warm_up_hops": warm_up,
        "whole_window_per_hop": summary(whole), "streaming_per_hop": summary(streamed),
        "speedup_median": statistics.median(whole) / statistics.median(streamed),
    }
    print_and_save(result, options.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
