"""Timing shared by the benchmark scripts and the GPU check (one home: no script keeps its own).

Imports only the standard library and torch, so StreamDiffusion's worker (its own virtual
environment, no ``tpos_live``) can use it too: the scripts in this folder import it by name (a
script's folder is first on ``sys.path``).

On the CPU every figure is wall-clock ``time.perf_counter`` (what the benchmarks always did). On a
CUDA device kernels run asynchronously, so a host clock read after a launch measures the launch, not
the work: regions are timed with CUDA events recorded on the current stream and read after the end
event has completed (one synchronisation per region, at its end), and the matmul peak is the
device's own, timed the same way.
"""

from __future__ import annotations

import ctypes
import json
import re
import statistics
import time

import torch

DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")


def rss_mb() -> float:
    """This process's resident memory in MB (Linux: /proc/self/statm, 4 KiB pages)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def memory_parts_mb() -> dict[str, float]:
    """Where the resident memory is (MB): anonymous vs file-backed pages (/proc/self/status), and glibc's
    heap in use vs held free (mallinfo2, where glibc has it). File pages grow as code paths are first
    touched and then stop; a leak shows in anonymous memory and in the heap in use."""
    parts = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile", "RssShmem"):
                parts[key[3:].lower()] = round(int(value.split()[0]) / 1024, 2)
    try:
        info = ctypes.CDLL(None).mallinfo2
    except AttributeError:
        return parts
    info.restype = _MallInfo2
    heap = info()
    mb = 2.0**20
    parts.update(heap_in_use=round((heap.uordblks + heap.hblkhd) / mb, 2), heap_free=round(heap.fordblks / mb, 2))
    return parts


def print_and_save(report: dict, path) -> None:
    """Print ``report`` as JSON and, when ``path`` is given, write it there (atomically: a run that dies
    leaves no half-written file)."""
    from tpos_live.fileio import write_text_atomically

    text = json.dumps(report, indent=2)
    print(text)
    if path:
        write_text_atomically(path, text + "\n")


def parse_device(text: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` as a torch device; ValueError (one line) for anything else or
    for a CUDA device this machine does not have."""
    if not DEVICE_PATTERN.fullmatch(text):
        raise ValueError(f"compute device must be cpu, cuda or cuda:N, got {text!r}")
    device = torch.device(text)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"compute device {text} asked for, but torch sees no CUDA device here "
                             f"(torch {torch.__version__})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"compute device {text} asked for, but there are only "
                             f"{torch.cuda.device_count()} CUDA devices")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for every kernel queued on ``device`` (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Seconds of one region on ``device``: CUDA events on a GPU, ``perf_counter`` on the CPU.

    ``start()`` then ``stop()`` (which returns the seconds); on CUDA ``stop`` waits for the end event,
    the region's one synchronisation.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._start: float | torch.cuda.Event = 0.0

    def start(self) -> None:
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._start = time.perf_counter()

    def stop(self) -> float:
        if not self.cuda:
            return time.perf_counter() - self._start
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        end.synchronize()
        return self._start.elapsed_time(end) / 1000


def time_call(function, device: torch.device, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``function()`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        function()
    synchronize(device)
    watch, times = Stopwatch(device), []
    for _ in range(repeats):
        watch.start()
        function()
        times.append(watch.stop())
    return times


class StageClock:
    """Seconds per named stage, fed by module hooks, wrapped functions or directly.

    On CUDA a stage's start and end are events recorded on the stream (no synchronisation inside a
    frame); :attr:`seconds` waits for them and adds them up. On the CPU the clock is ``perf_counter``.
    """

    def __init__(self, device: torch.device | None = None) -> None:
        self.cuda = device is not None and device.type == "cuda"
        self._seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._started: dict[str, object] = {}
        self._pending: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @property
    def seconds(self) -> dict[str, float]:
        for stage, start, end in self._pending:
            end.synchronize()
            self._seconds[stage] = self._seconds.get(stage, 0.0) + start.elapsed_time(end) / 1000
        self._pending = []
        return self._seconds

    def add(self, stage: str, seconds: float) -> None:
        self._seconds[stage] = self._seconds.get(stage, 0.0) + seconds
        self.calls[stage] = self.calls.get(stage, 0) + 1

    def begin(self, stage: str) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._started[stage] = event
        else:
            self._started[stage] = time.perf_counter()

    def end(self, stage: str) -> None:
        started = self._started.pop(stage)
        if not self.cuda:
            self.add(stage, time.perf_counter() - started)
            return
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        self._pending.append((stage, started, event))
        self.calls[stage] = self.calls.get(stage, 0) + 1

    def hook(self, module, stage: str) -> list:
        """Time every forward call of ``module`` as ``stage``; returns the hooks' removable handles."""
        return [module.register_forward_pre_hook(lambda *_: self.begin(stage)),
                module.register_forward_hook(lambda *_: self.end(stage))]

    def wrap(self, function, stage: str):
        """``function``, timed as ``stage``."""
        def timed(*args, **kwargs):
            self.begin(stage)
            try:
                return function(*args, **kwargs)
            finally:
                self.end(stage)

        return timed

    def reset(self) -> None:
        self._seconds, self.calls, self._pending = {}, {}, []


def frame_stats(batch_seconds: list[float], clocks: list[dict[str, float]], frames_per_batch: int = 1) -> dict:
    """Per-frame and per-batch figures of the fastest batch measured.

    ``batch_seconds[i]`` is the time of batch i (``frames_per_batch`` frames made by one call), and
    ``clocks[i]`` its seconds per stage for the whole batch. A frame's share is the batch's time over
    its frames; both are reported, named for what they are. The fastest, not the median: on a shared
    machine other processes only ever add time, so the best batch is the closest to what the code
    costs (the median and every batch are kept too).
    """
    best = min(range(len(batch_seconds)), key=batch_seconds.__getitem__)
    per_frame = [seconds / frames_per_batch for seconds in batch_seconds]
    stages = {stage: 1000 * seconds / frames_per_batch for stage, seconds in sorted(clocks[best].items())}
    stages["other"] = max(0.0, 1000 * per_frame[best] - sum(stages.values()))
    return {
        "frames_per_batch": frames_per_batch,
        "batches_measured": len(batch_seconds),
        "seconds_per_batch": batch_seconds[best],
        "seconds_per_batch_median": statistics.median(batch_seconds),
        "seconds_per_batch_all": batch_seconds,
        "seconds_per_frame": per_frame[best],
        "seconds_per_frame_median": statistics.median(per_frame),
        "fps": 1.0 / per_frame[best],
        "stage_ms": stages,  # per frame (the batch's stage time over its frames)
    }


def to_uint8_frames(image):
    """What our renderer does after decoding: [-1, 1] -> uint8 (B, H, W, 3) in host memory."""
    image = ((image.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return image.permute(0, 2, 3, 1).cpu().numpy()


def matmul_peak(dtype_name: str, device: torch.device | None = None, size: int | None = None,
                repeats: int | None = None) -> dict:
    """Best achieved TFLOP/s of a square matmul in ``dtype`` on ``device`` (the practical peak).

    CPU: 4096^3, best of 8 (as always). CUDA: 8192^3, best of 10 after 3 warm-ups, CUDA events.
    """
    device = device or torch.device("cpu")
    cuda = device.type == "cuda"
    size = size or (8192 if cuda else 4096)
    repeats = repeats or (10 if cuda else 8)
    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size).to(device, dtype)
    b = torch.randn(size, size).to(device, dtype)
    best = min(time_call(lambda: a @ b, device, repeats, warmup=3 if cuda else 1))
    return {"dtype": dtype_name, "device": str(device), "n": size, "seconds": best,
            "tflops": 2 * size**3 / best / 1e12}


def memory_bandwidth(device: torch.device | None = None, gigabytes: float | None = None,
                     repeats: int = 5) -> float:
    """GB/s of a streaming read (a sum over a large bfloat16 tensor): the rate weights can arrive at."""
    device = device or torch.device("cpu")
    gigabytes = gigabytes or (4.0 if device.type == "cuda" else 0.5)
    data = torch.ones(int(gigabytes * 1e9) // 2, dtype=torch.bfloat16, device=device)
    best = min(time_call(data.sum, device, repeats, warmup=1 if device.type == "cuda" else 0))
    return data.numel() * 2 / best / 1e9
