"""CUDA graphs for the torch backend: each network captured once per input shape, replayed per frame.

A frame's UNet call and decode launch hundreds of small kernels; at 512x512 on a fast GPU the
launches alone take longer than the kernels. A CUDA graph records them once and replays them with
one launch. Graphs have static shapes and static memory, so :class:`GraphedNetwork` keeps, per set
of input shapes (in practice: per batch size), static input buffers, the captured graph and its
static output:

- a call copies its inputs into the static inputs, replays, and returns a *copy* of the static
  output, so a result the caller keeps (the PLMS history keeps the UNet's last predictions) is not
  overwritten by the next replay;
- the first call of a shape warms the network up on a side stream, then captures it with
  ``capture_error_mode="thread_local"`` (the live engine's other threads may use CUDA meanwhile);
- calls from several threads (the scene preparer and the renderer share the backend) take turns: a
  lock orders them on the host, and each call's stream waits on an event recorded after the previous
  call's copy-out, so two streams never use the static buffers at once.

How capture and replay happen is a :class:`GraphRuntime`: :class:`CudaGraphRuntime` on a GPU, and
:class:`EagerReplayRuntime` (the network rerun into the same static output), with which the CPU
tests check the buffer bookkeeping. Not verified on a GPU here: no GPU was available.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

import torch

WARMUP_CALLS = 3  # before capture: lazy initialisation (cuBLAS handles, autotuning) must not be captured


class Captured(Protocol):
    """One captured network call: :meth:`replay` recomputes ``output`` from the static inputs."""

    output: torch.Tensor

    def replay(self) -> None: ...


class GraphRuntime(Protocol):
    def capture(self, fn: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...]) -> Captured:
        """Capture ``fn(*inputs)``; later replays read ``inputs`` as they are then."""
        ...

    def after_call(self) -> object | None:
        """A marker of the work queued so far (a CUDA event), or None where calls run at once."""
        ...

    def wait(self, marker: object | None) -> None:
        """Make the current stream wait for ``marker``'s work."""
        ...


class CudaGraphRuntime:
    """Real CUDA graphs (``torch.cuda.CUDAGraph``), sharing one memory pool across captures."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.pool = torch.cuda.graph_pool_handle()

    def capture(self, fn: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...]) -> Captured:
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                fn(*inputs)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=side, capture_error_mode="thread_local"):
            output = fn(*inputs)
        torch.cuda.current_stream(self.device).wait_stream(side)
        return _CudaCaptured(graph, output)

    def after_call(self) -> object | None:
        event = torch.cuda.Event()
        event.record()
        return event

    def wait(self, marker: object | None) -> None:
        if marker is not None:
            torch.cuda.current_stream(self.device).wait_event(marker)


class _CudaCaptured:
    def __init__(self, graph: torch.cuda.CUDAGraph, output: torch.Tensor) -> None:
        self.graph, self.output = graph, output

    def replay(self) -> None:
        self.graph.replay()


class EagerReplayRuntime:
    """Replays by running the network again and writing into the same static output: what a graph's
    replay does to its buffers, without CUDA (for tests on the CPU)."""

    def __init__(self) -> None:
        self.captures = 0
        self.replays = 0

    def capture(self, fn: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...]) -> Captured:
        self.captures += 1
        return _EagerCaptured(fn, inputs, fn(*inputs).clone(), self)

    def after_call(self) -> object | None:
        return None

    def wait(self, marker: object | None) -> None:
        pass


class _EagerCaptured:
    def __init__(self, fn, inputs, output: torch.Tensor, runtime: EagerReplayRuntime) -> None:
        self.fn, self.inputs, self.output, self.runtime = fn, inputs, output, runtime

    def replay(self) -> None:
        self.runtime.replays += 1
        self.output.copy_(self.fn(*self.inputs))


class GraphedNetwork:
    """``fn`` (a network taking tensors) run as one captured graph per set of input shapes and dtypes.

    Args:
        fn: the network; it must be capturable (no host synchronisation, no data-dependent shapes).
        runtime: how graphs are captured and replayed (default: CUDA graphs).
    """

    def __init__(self, fn: Callable[..., torch.Tensor], runtime: GraphRuntime) -> None:
        self.fn, self.runtime = fn, runtime
        self._graphs: dict[tuple, tuple[tuple[torch.Tensor, ...], Captured]] = {}
        self._lock = threading.Lock()
        self._last: object | None = None  # the previous call's marker: its copy-out is queued before it

    @property
    def shapes(self) -> list[tuple]:
        """The input shapes captured so far."""
        return [tuple(shape for shape, _ in key) for key in self._graphs]

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        key = tuple((tuple(x.shape), x.dtype) for x in inputs)
        with self._lock:
            self.runtime.wait(self._last)  # another stream may still read the static buffers
            entry = self._graphs.get(key)
            if entry is None:
                static = tuple(x.clone() for x in inputs)  # same layout (channels_last stays)
                entry = self._graphs[key] = (static, self.runtime.capture(self.fn, static))
            static, captured = entry
            for buffer, x in zip(static, inputs, strict=True):
                buffer.copy_(x)
            captured.replay()
            result = captured.output.clone(memory_format=torch.contiguous_format)  # the next replay overwrites
            self._last = self.runtime.after_call()
        return result
