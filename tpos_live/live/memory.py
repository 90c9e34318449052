"""Memory during a long show: freed heap memory given back to the OS, and the garbage collector kept short.

glibc's malloc keeps what a process frees for reuse. The stages allocate and free frame-sized
temporaries from several threads' arenas, so free memory is left between live blocks (about 100 MB in
the soak at 256x256) and much of it stays resident. ``malloc_trim(0)`` returns the free pages inside
every arena to the OS (they stay mapped; touching them again gets fresh zero pages). Once a minute it
kept the soak's resident size about 22 MB lower, without its one-minute peaks; the slow growth
stayed the same (docs/benchmarks.md).
Other C libraries (macOS, Windows, musl) have no such call; there nothing is trimmed.

Python's cyclic garbage collector walks every object it tracks in a full collection, holding the GIL:
every stage stops meanwhile. A process that has loaded the models and their libraries tracks hundreds
of thousands of objects (about a million after a torch.compile), and one full collection of them took
0.5-1.7 s on the project's CPU machine: the output stalled that long. While a show runs, the objects
alive when it started (the models, the libraries, the GUI) are frozen out of those walks
(``gc.freeze``), so a collection walks only what the show made since; when the last show stops they
are thawed (``gc.unfreeze``) and collected as before. Cyclic garbage frozen with them waits until then.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading
from collections.abc import Callable

from tpos_live.reporting import Reporter
from tpos_live.worker import Stage


def malloc_trim() -> Callable[[], None] | None:
    """glibc's ``malloc_trim(0)`` as a function, or None where the C library has none."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or None).malloc_trim
    except (AttributeError, OSError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


class HeapTrimmer(Stage):
    """Every ``every_seconds``, gives the heap's free pages back to the OS (see the module's docs).

    A trim locks each arena while it walks it (13 ms for 125 MB of scattered free memory on the
    project's CPU machine), so it runs rarely.
    """

    name = "heap-trimmer"

    def __init__(self, trim: Callable[[], None], every_seconds: float, report: Reporter) -> None:
        super().__init__(report)
        if every_seconds <= 0:
            raise ValueError(f"the trim period must be positive, got {every_seconds}")
        self.trim, self.every_seconds = trim, every_seconds
        self.trims = 0

    def _run(self) -> None:
        while not self._stop.wait(self.every_seconds):
            self.trim()
            self.trims += 1


_freeze_lock = threading.Lock()
_running_shows = 0


def freeze_long_lived() -> None:
    """A show starts: keep every object alive now out of the collector's walks until the last show
    stops (:func:`thaw_long_lived`). The young garbage is collected first (cheap: not a full walk)."""
    global _running_shows
    with _freeze_lock:
        _running_shows += 1
        gc.collect(1)
        gc.freeze()


def freeze_newly_loaded() -> None:
    """Models loaded while a show runs (a new audio encoder, a new backend) are frozen too."""
    with _freeze_lock:
        if _running_shows:
            gc.collect(1)
            gc.freeze()


def thaw_long_lived() -> None:
    """A show stopped: when it was the last, the collector walks every object again."""
    global _running_shows
    with _freeze_lock:
        _running_shows -= 1
        if _running_shows == 0:
            gc.unfreeze()
