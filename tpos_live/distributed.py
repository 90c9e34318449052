"""Renders spread over Ray workers: ``tpos-live render --workers N [--ray-address ADDR]``.

Frames are independent once the scene is fixed by the seed, so the frames to render are cut into
contiguous chunks (on the grid of ``batch_frames``) and handed to Ray actors, each holding one model
stack loaded once and the scene prepared from the seed (the same in every process). A worker builds
them with the factory the composition root hands down (``tpos_live.offline.FrameRendererFactory``): the
driver's own model assembly. The driver keeps every worker busy with a chunk or two, takes the results
as they come, and the render's output (``tpos_live.offline.RenderOutput``) saves their PNGs at once and
encodes the MP4 in frame order.

A worker whose process dies is restarted by Ray (``max_restarts``) and its chunk is run again
(``max_task_retries``); the driver says so. On a cluster with GPUs each worker takes one GPU.

Identical frames: on the CPU the kernels' results depend (in the last bits) on the number of threads,
so each worker runs as many torch threads as this process would for a render of its own; a render on
Ray then gives the PNG bytes of a single-process render (with the same ``OMP_NUM_THREADS``).

Ray is optional (``pip install 'tpos-live[distributed]'``); without it ``--workers`` is a one-line error.
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tpos_live.errors import UserError, first_line

if TYPE_CHECKING:
    from tpos_live.offline import FramePlan, FrameRendererFactory, Range

Say = Callable[[str], None]
INSTALL_HINT = "pip install 'tpos-live[distributed]' (or pip install ray)"
MAX_RESTARTS = 3  # a worker process that dies is started again this often
MAX_TASK_RETRIES = 3  # and the chunk it was rendering runs again
IN_FLIGHT = 2  # chunks queued per worker, so that none waits for the driver between chunks
CHUNKS_PER_WORKER = 4  # at least this many chunks per worker: the work evens out, a lost chunk costs little
MAX_CHUNK_FRAMES = 32  # and no more frames per chunk: results held in memory, frames lost with a worker


def require_ray():
    """The ``ray`` module, or a UserError saying what to install."""
    try:
        import ray
    except ImportError:
        raise UserError(f"--workers renders on Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def chunk_ranges(batches: list[Range], chunk_frames: int) -> list[Range]:
    """Consecutive batches joined into contiguous chunks of at most ``chunk_frames`` frames (a batch is
    never split: whoever renders it renders the same frames)."""
    chunks: list[list[int]] = []
    for a, b in batches:
        if chunks and chunks[-1][1] == a and b - chunks[-1][0] <= chunk_frames:
            chunks[-1][1] = b
        else:
            chunks.append([a, b])
    return [(a, b) for a, b in chunks]


def chunk_frames_for(frames: int, workers: int, batch_frames: int) -> int:
    """Frames per chunk: a multiple of the batch, small enough for ``CHUNKS_PER_WORKER`` each."""
    batches = max(1, min(math.ceil(frames / (workers * CHUNKS_PER_WORKER)), MAX_CHUNK_FRAMES) // batch_frames)
    return batches * batch_frames


class RenderWorker:
    """One Ray actor: the frame renderer of one render, built once (again after a restart).

    Args:
        make_frame_renderer: builds it (the driver's factory, pickled to the worker).
        plan: ``[ObjectRef]`` of the frame plan (the condition track and envelope) the driver put.
        device: the worker's compute device (``"cuda"`` with a GPU of its own, else ``"cpu"``).
        threads: torch threads (the driver's own count, for the same numerics).
    """

    def __init__(self, make_frame_renderer: FrameRendererFactory, plan: list, device: str, threads: int) -> None:
        import ray

        torch.set_num_threads(threads)
        # The plan comes as [ObjectRef] and is fetched here: a restarted worker fetches it again from the
        # driver's copy (a top-level ref argument would be resolved by Ray once, with a warning).
        self.frame_renderer = make_frame_renderer(ray.get(plan[0]), device)

    def pid(self) -> int:
        return os.getpid()

    def render(self, start: int, stop: int) -> tuple[int, int, np.ndarray]:
        """(this process's id, UNet calls made, frames ``[start, stop)``)."""
        calls = self.frame_renderer.unet_calls
        frames = self.frame_renderer.render(start, stop)
        return os.getpid(), self.frame_renderer.unet_calls - calls, frames


class RayFarm:
    """Renders ranges of frames on Ray workers (a :class:`tpos_live.offline.Farm`).

    Joins the cluster at ``ray_address``, or uses the one this process is already connected to, or
    starts a local one of ``workers`` CPUs (shut down again by :meth:`close`). UserError when Ray is
    missing or the cluster cannot be reached.

    Args:
        make_frame_renderer: builds each worker's frame renderer (picklable).
        workers: how many workers to start (one GPU each, at most, on a cluster with GPUs).
        ray_address: the cluster to join (None: this process's, or a local one).
        device: the render's compute device (a CUDA one needs a cluster with GPUs).
    """

    def __init__(self, make_frame_renderer: FrameRendererFactory, workers: int, ray_address: str | None = None,
                 device: str = "cpu", say: Say = print) -> None:
        self.ray = require_ray()
        self.make_frame_renderer, self.workers_asked, self.device, self.say = make_frame_renderer, workers, device, say
        self.unet_calls = 0
        self.threads = torch.get_num_threads()
        self._started_here = not self.ray.is_initialized()
        if not self._started_here:
            self.where = "the Ray cluster this process is connected to"
        elif ray_address is not None:
            self._init(address=ray_address)
            self.where = f"the Ray cluster at {ray_address}"
        else:
            self._init(num_cpus=workers)
            self.where = f"a local Ray cluster of {workers} CPUs"
        try:
            self.workers, self.gpus = self._worker_count()
        except BaseException:
            self.close()
            raise
        cores = os.cpu_count() or 1
        if self._started_here and ray_address is None and not self.gpus and self.workers * self.threads > cores:
            say(f"warning: {self.workers} workers x {self.threads} torch threads oversubscribe this machine's "
                f"{cores} cores (slow): set OMP_NUM_THREADS={max(1, cores // self.workers)} (a render with the "
                "same OMP_NUM_THREADS in one process gives the same frames)")

    def _init(self, **where: Any) -> None:
        try:
            self.ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING, **where)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise UserError(f"cannot start or join Ray ({first_line(error)}): check --ray-address (`ray start "
                            "--head` prints it) or leave it out for a local cluster") from None

    def _worker_count(self) -> tuple[int, bool]:
        wanted, device = self.workers_asked, self.device
        gpus = int(self.ray.cluster_resources().get("GPU", 0))
        if device.startswith("cuda") and gpus == 0:
            raise UserError(f"--compute-device {device} was asked for but the Ray cluster has no GPU: "
                            "use --compute-device cpu, or join a cluster with GPUs")
        if device == "cpu" or gpus == 0:
            return wanted, False
        if wanted > gpus:
            self.say(f"warning: {wanted} workers asked for but the Ray cluster has {gpus} GPUs: "
                     f"running {gpus} workers, one per GPU")
        return min(wanted, gpus), True

    def describe(self) -> str:
        threads = f"{self.threads} torch thread" + ("s" if self.threads > 1 else "")
        each = "one GPU each" if self.gpus else f"{threads} each"
        return f"on Ray: {self.workers} workers on {self.where}, {each}"

    def render(self, plan: FramePlan, ranges: list[Range], put: Callable[[int, np.ndarray], None]) -> None:
        """Render ``ranges`` (batches on the plan's grid) on the workers; ``put`` each chunk as it comes."""
        if not ranges:
            return
        ray = self.ray
        frames = sum(b - a for a, b in ranges)
        chunks = deque(chunk_ranges(ranges, chunk_frames_for(frames, self.workers, plan.batch_frames)))
        actors = self._start_workers(plan)
        inflight: dict[Any, tuple[int, Range]] = {}
        pids: dict[int, int] = {}

        def submit(worker: int) -> None:
            if chunks:
                chunk = chunks.popleft()
                inflight[actors[worker].render.remote(*chunk)] = (worker, chunk)

        try:
            for worker, actor in enumerate(actors):  # each has loaded its models when it answers
                pids[worker] = self._result(actor.pid.remote(), worker)
            for worker in range(len(actors)):
                for _ in range(IN_FLIGHT):
                    submit(worker)
            while inflight:
                [ref], _ = ray.wait(list(inflight), num_returns=1)
                worker, chunk = inflight.pop(ref)
                pid, calls, rendered = self._result(ref, worker)
                if pids[worker] != pid:
                    self.say(f"warning: Ray worker {worker} was restarted (its process {pids[worker]} died); "
                             "its chunk was rendered again")
                    pids[worker] = pid
                self.unet_calls += calls
                put(chunk[0], rendered)
                submit(worker)
        finally:
            for actor in actors:
                ray.kill(actor, no_restart=True)

    def _start_workers(self, plan: FramePlan) -> list:
        ray = self.ray
        device = "cuda" if self.gpus else "cpu"
        worker = ray.remote(RenderWorker).options(
            num_cpus=1, num_gpus=1 if self.gpus else 0, max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES)
        self._plan_ref = ray.put(plan)  # one copy, read by every worker (and a restarted one): kept while we run
        return [worker.remote(self.make_frame_renderer, [self._plan_ref], device, self.threads)
                for _ in range(self.workers)]

    def _result(self, ref, worker: int):
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, UserError):
                raise cause from None
            raise UserError(f"Ray worker {worker} failed: {first_line(cause or error)}") from None
        except ray.exceptions.RayActorError as error:
            raise UserError(f"Ray worker {worker} died more than {MAX_RESTARTS} times, or could not start "
                            f"({first_line(error)})") from None

    def close(self) -> None:
        """Leave the cluster (and shut a local one down) if this farm started the connection."""
        if self._started_here and self.ray.is_initialized():
            self.ray.shutdown()

    def __enter__(self) -> RayFarm:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
