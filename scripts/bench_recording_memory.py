"""Memory of a long recording: RSS growth of the VideoWriter over hours of content, standard vs fragmented mp4.

A standard mp4 keeps an index entry for every packet in memory until it is closed; a fragmented one (what
``live --record`` writes) flushes a small index with each fragment. Each layout is written in a process
of its own (64x64 frames at 30 fps with stereo 44.1 kHz audio, as fast as the encoders go: an hour of
content takes about 80 s here), reading the RSS after every 10 minutes of content. Example:

    .venv/bin/python scripts/bench_recording_memory.py --minutes 60 -o recording_memory.json
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
from pathlib import Path

import numpy as np
from bench_timing import print_and_save, rss_mb

from tpos_live.video.writer import MP4_LAYOUTS

FPS, RATE, SIZE = 30, 44100, 64



def record(fragmented: bool, minutes: int) -> dict:
    """RSS (MB) after each 10 minutes of content, from the first 10 minutes on."""
    from tpos_live.video.writer import VideoWriter

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8)
    audio = (0.1 * rng.standard_normal((2, RATE // FPS))).astype(np.float32)
    readings = []
    with tempfile.TemporaryDirectory() as folder, \
            VideoWriter(Path(folder) / "set.mp4", FPS, SIZE, SIZE, audio_sample_rate=RATE,
                        fragmented=fragmented) as writer:
        for minute in range(1, minutes + 1):
            for _ in range(60 * FPS):
                writer.write_audio(audio)
                writer.write_frame(frame)
            if minute % 10 == 0:
                readings.append({"content_minute": minute, "rss_mb": round(rss_mb(), 1)})
    first, last = readings[0], readings[-1]
    hours = (last["content_minute"] - first["content_minute"]) / 60.0
    return {"fragmented": fragmented, "readings": readings,
            "growth_mb_per_content_hour": round((last["rss_mb"] - first["rss_mb"]) / hours, 1) if hours else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=int, default=60, help="minutes of content per layout, a multiple of 10 (60)")
    p.add_argument("-o", "--output", help="also write the JSON here")
    args = p.parse_args()
    if args.minutes < 20 or args.minutes % 10:
        p.error("--minutes must be a multiple of 10, at least 20")
    spawn = multiprocessing.get_context("spawn")  # a fresh process per layout: one's freed memory skews no other
    results = {}
    for name in MP4_LAYOUTS:
        with spawn.Pool(1) as pool:
            results[name] = pool.apply(record, (name == "fragmented", args.minutes))
    print_and_save({"what": f"VideoWriter RSS over {args.minutes} min of {SIZE}x{SIZE} h264 at {FPS} fps "
                            f"+ stereo AAC at {RATE} Hz", "layouts": results}, args.output)


if __name__ == "__main__":
    main()
