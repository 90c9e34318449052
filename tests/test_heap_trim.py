"""Memory during a show: glibc's malloc_trim and the trimmer stage; the garbage collector's freeze."""

from __future__ import annotations

import gc
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import bench_timing  # noqa: E402  (a script's module: scripts/ is not a package)

from tpos_live.live.memory import (  # noqa: E402
    HeapTrimmer,
    freeze_long_lived,
    freeze_newly_loaded,
    malloc_trim,
    thaw_long_lived,
)

glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")


@glibc
def test_a_trim_gives_back_the_free_memory_left_between_live_blocks():
    blocks = [bytearray(64 * 1024) for _ in range(2000)]  # below the mmap threshold: on the heap
    del blocks[::2]  # ~64 MB free, each hole between two live blocks: malloc keeps it all
    held = bench_timing.memory_parts_mb()
    malloc_trim()()
    trimmed = bench_timing.memory_parts_mb()
    assert held["heap_free"] > 56.0
    assert held["anon"] - trimmed["anon"] > 48.0
    assert abs(trimmed["heap_in_use"] - held["heap_in_use"]) < 4.0  # what is in use stays
    assert all(len(b) == 64 * 1024 for b in blocks)


def test_the_trimmer_trims_each_period_until_stopped():
    calls = threading.Semaphore(0)
    trimmer = HeapTrimmer(calls.release, every_seconds=0.02, report=lambda level, message: None).start()
    try:
        assert all(calls.acquire(timeout=5) for _ in range(3))
    finally:
        started = time.monotonic()
        trimmer.stop()
    assert time.monotonic() - started < 1.0 and not trimmer.alive
    assert trimmer.trims >= 3
    with pytest.raises(ValueError, match="positive"):
        HeapTrimmer(calls.release, every_seconds=0, report=lambda level, message: None)


def test_objects_stay_frozen_until_the_last_show_stops_and_models_loaded_meanwhile_join_them():
    freeze_newly_loaded()  # no show runs: nothing is frozen
    assert gc.get_freeze_count() == 0
    freeze_long_lived()
    freeze_long_lived()  # a second show (a swap starts the new one before the old one stops)
    try:
        loaded = [[i] for i in range(1000)]  # a model loaded while the shows run
        assert any(o is loaded for o in gc.get_objects())  # walked by a full collection
        before = gc.get_freeze_count()
        freeze_newly_loaded()
        assert gc.get_freeze_count() >= before + len(loaded)
        assert not any(o is loaded for o in gc.get_objects())
        thaw_long_lived()
        assert gc.get_freeze_count() > 0  # one show still runs
    finally:
        thaw_long_lived()
    assert gc.get_freeze_count() == 0
