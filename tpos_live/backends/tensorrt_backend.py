"""TensorRT engines: build from the ONNX exports, and run with buffers bound once per shape.

Written against the TensorRT 10 API and nothing older: named I/O tensors (``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``), no binding indices. Networks are built strongly typed
(``NetworkDefinitionCreationFlag.STRONGLY_TYPED``): the precision is the ONNX model's own (exported in
float16 or bfloat16), not a builder flag, which is how TensorRT 11 requires it too.

An engine has one optimisation profile, made from a :class:`~tpos_live.backends.network_specs.ShapeProfile`.
When the profile is static, the engine runs as a CUDA graph captured on first use (one launch per
call instead of one per kernel). Builds share a timing cache per TensorRT version and GPU in
``engines/``, so a rebuild for another resolution reuses the kernel timings.

Not verified on a GPU in this repository's CI (it has none): the tests in ``tests/test_tensorrt.py``
run where CUDA and TensorRT are present and skip elsewhere.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from tpos_live.backends.base import RunnerBackend
from tpos_live.backends.engines import ArtefactKey, EngineStore, weights_hash
from tpos_live.backends.network_specs import (
    PRECISIONS,
    Network,
    NetworkSpec,
    ShapeProfile,
    render_profiles,
    taesd_decoder_network,
    unet_network,
)
from tpos_live.backends.onnx_backend import OPSET, ensure_onnx
from tpos_live.diffusion.stack import ModelStack
from tpos_live.errors import UserError

MIN_TENSORRT = 10
ENGINE_PRECISIONS = ("float16", "bfloat16", "float32")


def tensorrt_unavailable_reason() -> str | None:
    """Why TensorRT cannot run here, or None when it can."""
    try:
        import tensorrt as trt
    except ImportError:
        return "the tensorrt package is not installed (pip install 'tpos-live[tensorrt]')"
    if int(trt.__version__.split(".")[0]) < MIN_TENSORRT:
        return f"TensorRT {trt.__version__} is older than {MIN_TENSORRT}: install TensorRT 10 or newer"
    if not torch.cuda.is_available():
        return "this torch build sees no CUDA GPU"
    return None


def gpu_name(device: torch.device | None = None) -> str:
    """The GPU's name and compute capability: engines only run on the GPU model they were built for."""
    major, minor = torch.cuda.get_device_capability(device)
    return f"{torch.cuda.get_device_name(device)} sm_{major}{minor}"


def _trt():
    import tensorrt as trt

    return trt


def _logger():
    trt = _trt()
    global _LOGGER
    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


_LOGGER = None


# --- building --------------------------------------------------------------------------------------


def build_engine(onnx_path: str | Path, engine_path: str | Path, spec: NetworkSpec, profile: ShapeProfile,
                 timing_cache: str | Path | None = None, workspace_bytes: int | None = None,
                 optimization_level: int = 3) -> None:
    """Build a serialized engine of the ONNX model at ``onnx_path`` with one optimisation profile.

    The timing cache file (if given) is read before and written back after the build.
    """
    trt = _trt()
    spec.check_profile(profile)
    builder = trt.Builder(_logger())
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, _logger())
    if not parser.parse_from_file(str(onnx_path)):  # reads external data beside the file
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.builder_optimization_level = optimization_level
    if workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    optimization_profile = builder.create_optimization_profile()
    for tensor in spec.inputs:
        shapes = (tensor.shape(profile.min), tensor.shape(profile.opt), tensor.shape(profile.max))
        optimization_profile.set_shape(tensor.name, *shapes)
    config.add_optimization_profile(optimization_profile)
    cache_path = Path(timing_cache) if timing_cache is not None else None
    cache_bytes = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(cache_bytes), False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine of {spec.name} (its log above says why)")
    with open(engine_path, "wb") as out:
        out.write(serialized)
    if cache_path is not None:
        _write_atomically(cache_path, bytes(config.get_timing_cache().serialize()))


def _write_atomically(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=".tmp-", delete=False) as out:
        out.write(data)
    os.replace(out.name, path)


def engine_key(network: Network, profile: ShapeProfile, device: torch.device | None = None) -> ArtefactKey:
    """The manifest key of an engine: weights, precision, profile, TensorRT version and GPU."""
    return ArtefactKey(
        network=network.spec.name, kind="tensorrt", weights=weights_hash(network.weights),
        precision=network.precision, profile=profile.key(), opset=OPSET,
        tensorrt=_trt().__version__, gpu=gpu_name(device),
    )


def ensure_engine(network: Network, profile: ShapeProfile, store: EngineStore,
                  say: Callable[[str], None] | None = None, workspace_bytes: int | None = None) -> Path:
    """The stored engine of ``network`` for ``profile``; exported and built when missing or stale."""
    onnx_path = ensure_onnx(network, profile, store, say)
    key = engine_key(network, profile)
    cache = store.folder / f"timing-{key.tensorrt}-{_slug(key.gpu)}.cache"
    return store.ensure(
        key, lambda path: build_engine(onnx_path, path, network.spec, profile, cache, workspace_bytes), say
    )


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower()


# --- running ---------------------------------------------------------------------------------------


@dataclass
class _Bound:
    """Device buffers of one input shape, and the CUDA graph that runs the engine on them."""

    inputs: dict[str, torch.Tensor]
    outputs: dict[str, torch.Tensor]
    graph: torch.cuda.CUDAGraph | None = None


class TensorRTEngine:
    """A deserialised engine, run by tensor name.

    Buffers are allocated and bound (``set_input_shape``, ``set_tensor_address``) once per input shape
    and reused; a call copies the inputs in, runs, and returns copies of the outputs (callers keep
    results across calls). Static engines replay a CUDA graph captured on the first call.
    """

    def __init__(self, path: str | Path, spec: NetworkSpec, precision: str,
                 device: torch.device | str = "cuda", cuda_graphs: bool = True) -> None:
        trt = _trt()
        self.spec = spec
        self.precision = precision
        self.device = torch.device(device)
        self.runtime = trt.Runtime(_logger())
        self.engine = self.runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise UserError(f"TensorRT could not load the engine '{path}': delete it and it will be rebuilt")
        self.context = self.engine.create_execution_context()
        self._check_tensors()
        ranges = [self._profile_range(t.name) for t in spec.inputs]
        self.static = all(low == high for low, high in ranges)
        self.cuda_graphs = cuda_graphs and self.static
        self.batch_range = (ranges[0][0][0], ranges[0][1][0])  # dimension 0 of the first input
        self.stream = torch.cuda.Stream(self.device)
        self._bound: dict[tuple, _Bound] = {}
        self._active: tuple | None = None
        self._lock = threading.Lock()  # one context, one set of bound buffers: one call at a time

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named inputs (the spec's dtypes, on the engine's device) -> new output tensors. Thread-safe:
        the live engine's scene and render stages share one engine."""
        with self._lock:
            return self._run(inputs)

    def _run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        values = self.spec.dims_of(inputs)
        bound = self._bind(values)
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            for name, buffer in bound.inputs.items():
                buffer.copy_(inputs[name], non_blocking=True)
            if bound.graph is not None:
                bound.graph.replay()
            else:
                self._execute()
            outputs = {name: buffer.clone() for name, buffer in bound.outputs.items()}
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return outputs

    def _bind(self, values: dict[str, int]) -> _Bound:
        key = tuple(sorted(values.items()))
        bound = self._bound.get(key)
        if bound is None:
            bound = self._allocate(values)
            self._bound[key] = bound
        if self._active != key:  # the context holds one set of shapes and addresses at a time
            for name, buffer in bound.inputs.items():
                if not self.context.set_input_shape(name, tuple(buffer.shape)):
                    raise ValueError(f"{self.spec.name}: shape {tuple(buffer.shape)} of {name} is outside "
                                     f"the engine's profile {self._profile_range(name)}")
            for name, buffer in (*bound.inputs.items(), *bound.outputs.items()):
                self.context.set_tensor_address(name, buffer.data_ptr())
            self._active = key
        if self.cuda_graphs and bound.graph is None:
            bound.graph = self._capture()
        return bound

    def _allocate(self, values: dict[str, int]) -> _Bound:
        def empty(tensor_specs, shapes):
            return {t.name: torch.empty(shapes[t.name], dtype=t.torch_dtype(self.precision),
                                        device=self.device) for t in tensor_specs}

        return _Bound(empty(self.spec.inputs, self.spec.input_shapes(values)),
                      empty(self.spec.outputs, self.spec.output_shapes(values)))

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"TensorRT failed to run {self.spec.name}")

    def _capture(self) -> torch.cuda.CUDAGraph:
        # One plain run first: TensorRT finishes shape-dependent setup outside the capture.
        with torch.cuda.stream(self.stream):
            self._execute()
        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream):
            self._execute()
        return graph

    def _profile_range(self, name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        low, _, high = self.engine.get_tensor_profile_shape(name, 0)
        return tuple(low), tuple(high)

    def _check_tensors(self) -> None:
        trt = _trt()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        want_inputs, want_outputs = [t.name for t in self.spec.inputs], [t.name for t in self.spec.outputs]
        if sorted(inputs) != sorted(want_inputs) or sorted(outputs) != sorted(want_outputs):
            raise UserError(f"the engine of {self.spec.name} has tensors {names}, expected "
                            f"{want_inputs + want_outputs}: delete it and it will be rebuilt")
        dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
                  trt.DataType.BF16: torch.bfloat16}
        for tensor in (*self.spec.inputs, *self.spec.outputs):
            have = dtypes.get(self.engine.get_tensor_dtype(tensor.name))
            if have != tensor.torch_dtype(self.precision):
                raise UserError(f"the engine of {self.spec.name} has {tensor.name} in {have}, expected "
                                f"{tensor.torch_dtype(self.precision)}: delete it and it will be rebuilt")


def tensorrt_backend(stack: ModelStack, width: int, height: int, batch_frames: int = 1,
                     precision: str = "float16", static: bool = False, store: EngineStore | None = None,
                     say: Callable[[str], None] | None = None) -> RunnerBackend:
    """The UNet and TAESD decoder of ``stack`` as TensorRT engines (exported and built when needed).

    The UNet and TAESD are cast to ``precision`` in place first (the engines' precision is the ONNX
    models'); ``static`` builds one-shape engines that run as CUDA graphs, for renderers whose every
    UNet call has ``batch_frames`` items (fast mode, one guided step, text guidance 0 or 1).
    """
    if precision not in ENGINE_PRECISIONS:
        raise ValueError(f"precision must be one of {ENGINE_PRECISIONS}, got {precision!r}")
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        raise UserError(f"the tensorrt backend cannot run here: {reason}")
    store = store or EngineStore()
    for module in (stack.unet, stack.taesd):
        module.to(PRECISIONS[precision])
    profiles = render_profiles(stack, width, height, batch_frames, static=static)
    runners = {}
    for network in (unet_network(stack), taesd_decoder_network(stack)):
        path = ensure_engine(network, profiles[network.spec.name], store, say)
        runners[network.spec.name] = TensorRTEngine(path, network.spec, network.precision)
    details = "static shapes, CUDA graphs" if static else "ranged profile"
    return RunnerBackend("tensorrt", runners["unet"], runners["taesd_decoder"], details=details)
