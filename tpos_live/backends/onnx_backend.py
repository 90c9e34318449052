"""ONNX export of the networks described in :mod:`specs`, parity checks, and the ONNX Runtime backend.

Export uses torch's TorchScript-based exporter (opset 18; diffusers' attention exports as plain
MatMul/Softmax, which every runtime takes), with the spec's tensor names and its named dimensions
left dynamic. Models over 2 GB (the full-size UNet in float32) keep their weights in one external
data file beside the ``.onnx``. Every export is checked with the ONNX checker.

ONNX Runtime runs a model through IO binding: inputs are read from the torch tensors' memory and
outputs written straight into new torch tensors, with no numpy round trip.
"""

from __future__ import annotations

import tempfile
import threading
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from tpos_live.backends.base import RunnerBackend
from tpos_live.backends.engines import ArtefactKey, EngineStore, weights_hash
from tpos_live.backends.network_specs import (
    Network,
    NetworkSpec,
    ShapeProfile,
    render_profiles,
    taesd_decoder_network,
    unet_network,
)
from tpos_live.diffusion.stack import ModelStack
from tpos_live.errors import UserError

OPSET = 18
# A protobuf message cannot exceed 2 GB; weights beyond this (leaving room for the graph) go to a
# single external data file.
EXTERNAL_DATA_ABOVE = 2**31 - 2**26
ORT_DTYPES = {"float32": "float32", "float16": "float16"}  # precisions ONNX Runtime's IO binding takes


CUDA_PROVIDER, CPU_PROVIDER = "CUDAExecutionProvider", "CPUExecutionProvider"


def onnxruntime_unavailable_reason(device: torch.device | str = "cpu") -> str | None:
    """Why the ONNX Runtime backend cannot run networks on ``device`` here, or None when it can."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError as error:
        return f"{error.name} is not installed (pip install 'tpos-live[onnx]')"
    if torch.device(device).type == "cuda" and CUDA_PROVIDER not in onnxruntime.get_available_providers():
        return ("this onnxruntime has no CUDAExecutionProvider, and the model is on the GPU "
                "(pip install onnxruntime-gpu, or --compute-device cpu)")
    return None


def providers_for(device: torch.device | str) -> list[str]:
    """The one execution provider for ``device``: the GPU's for a CUDA stack (never the CPU's instead)."""
    return [CUDA_PROVIDER] if torch.device(device).type == "cuda" else [CPU_PROVIDER]


# --- export ----------------------------------------------------------------------------------------


def export_onnx(network: Network, path: str | Path, profile: ShapeProfile, opset: int = OPSET,
                static: bool = False) -> Path:
    """Export ``network`` to ``path`` and check it. The module runs once on seeded inputs of
    ``profile.opt``'s shape, in its own dtype; the named dimensions stay dynamic unless ``static``
    (then the model has ``profile.opt``'s shapes only)."""
    import onnx

    spec = network.spec
    spec.check_profile(profile)
    if opset < 17:
        raise ValueError(f"opset must be at least 17 (LayerNormalization), got {opset}")
    path = Path(path)
    device = next(network.module.parameters()).device
    inputs = spec.example_inputs(profile.opt, network.precision, device=device)
    with tempfile.TemporaryDirectory(prefix="tpos-onnx-") as scratch:
        raw = Path(scratch) / "model.onnx"
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # Tracing warns about every Python-level shape check in diffusers; they are about
            # shapes the named dimensions cover.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                network.module, tuple(inputs.values()), str(raw), dynamo=False,
                input_names=[t.name for t in spec.inputs], output_names=[t.name for t in spec.outputs],
                dynamic_axes=None if static else spec.dynamic_axes(),
                opset_version=opset, do_constant_folding=True,
            )
        model = onnx.load(str(raw))  # pulls in any external data the exporter wrote
        model.doc_string = f"tpos-live {spec.name}: {spec.description}"
        external = _initializer_bytes(model) > EXTERNAL_DATA_ABOVE
        onnx.save_model(model, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
                        location=f"{path.name}.data", size_threshold=1024)
    onnx.checker.check_model(str(path))  # by path: works for models with external data too
    return path


def _initializer_bytes(model) -> int:
    from onnx import numpy_helper

    return sum(len(t.raw_data) or numpy_helper.to_array(t).nbytes for t in model.graph.initializer)


def onnx_key(network: Network, profile: ShapeProfile, opset: int = OPSET,
             static: bool = False) -> ArtefactKey:
    """The manifest key of ``network``'s ONNX export (a dynamic export serves every profile)."""
    shapes = ShapeProfile.static(profile.opt).key() if static else "dynamic"
    return ArtefactKey(network=network.spec.name, kind="onnx", weights=weights_hash(network.weights),
                       precision=network.precision, profile=shapes, opset=opset)


def ensure_onnx(network: Network, profile: ShapeProfile, store: EngineStore,
                say: Callable[[str], None] | None = None, static: bool = False) -> Path:
    """The stored ONNX export of ``network`` (dynamic unless ``static``), exported when missing or stale."""
    key = onnx_key(network, profile, static=static)
    return store.ensure(key, lambda path: export_onnx(network, path, profile, static=static), say)


# --- running ---------------------------------------------------------------------------------------


class OnnxSession:
    """One ONNX Runtime session of a network, run by tensor name with IO binding.

    Args:
        path: the ``.onnx`` file (external data beside it).
        spec: the network's description; the model's inputs and outputs must carry its names.
        precision: of the spec's float tensors, ``"float32"`` or ``"float16"``.
        providers: ONNX Runtime execution providers (default: CUDA when available, else CPU); the
            session refuses to start on any other than the first.
        threads: intra-op threads (None: ONNX Runtime's default, all cores).
    """

    def __init__(self, path: str | Path, spec: NetworkSpec, precision: str,
                 providers: list[str] | None = None, threads: int | None = None) -> None:
        import onnxruntime as ort

        if precision not in ORT_DTYPES:
            raise UserError(f"ONNX Runtime runs float32 or float16 networks, not {precision}: "
                            "load the model with --dtype float32")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = threads
        if providers is None:
            wanted = ("CUDAExecutionProvider", "CPUExecutionProvider")
            providers = [p for p in wanted if p in ort.get_available_providers()]
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        if self.session.get_providers()[0] != providers[0]:  # ONNX Runtime falls back without a word
            raise UserError(f"ONNX Runtime could not start {providers[0]} for {spec.name} (it offered "
                            f"{self.session.get_providers()[0]}): check the onnxruntime install")
        self.spec = spec
        self.precision = precision
        on_cuda = self.session.get_providers()[0] == "CUDAExecutionProvider"
        self.device = torch.device("cuda", torch.cuda.current_device()) if on_cuda else torch.device("cpu")
        self._check_names()
        self._binding = self.session.io_binding()
        self._lock = threading.Lock()  # one binding: one call at a time
        batch = self.session.get_inputs()[0].shape[0]  # an int in static exports, a name otherwise
        self.batch_range = (batch, batch) if isinstance(batch, int) else (1, 2**31 - 1)

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named inputs (the spec's dtypes, on ``device``, contiguous) -> new output tensors. Thread-safe:
        the live engine's scene and render stages share one session."""
        with self._lock:
            return self._run(inputs)

    def _run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        binding = self._binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        for tensor in self.spec.inputs:
            self._bind(binding.bind_input, tensor.name, inputs[tensor.name])
        shapes = self.spec.output_shapes(self.spec.dims_of(inputs))
        outputs = {}
        for tensor in self.spec.outputs:
            dtype = tensor.torch_dtype(self.precision)
            out = torch.empty(shapes[tensor.name], dtype=dtype, device=self.device)
            self._bind(binding.bind_output, tensor.name, out)
            outputs[tensor.name] = out
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()  # inputs written on torch's stream
        self.session.run_with_iobinding(binding)
        return outputs

    def _bind(self, bind: Callable, name: str, tensor: torch.Tensor) -> None:
        import numpy as np

        if not tensor.is_contiguous():
            raise ValueError(f"{self.spec.name}.{name} must be contiguous")
        element_type = np.dtype(str(tensor.dtype).removeprefix("torch."))
        device_id = tensor.device.index or 0
        bind(name, tensor.device.type, device_id, element_type, tuple(tensor.shape), tensor.data_ptr())

    def _check_names(self) -> None:
        have = ([i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()])
        want = ([t.name for t in self.spec.inputs], [t.name for t in self.spec.outputs])
        if have != want:
            raise UserError(f"the ONNX model of {self.spec.name} has inputs/outputs {have}, expected {want}: "
                            "export it again (scripts/export_onnx.py)")


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``||actual - expected|| / ||expected||`` in float64."""
    expected = expected.detach().double().cpu()
    difference = actual.detach().double().cpu() - expected
    return float(difference.norm() / expected.norm().clamp_min(1e-30))


@torch.inference_mode()
def onnx_parity(network: Network, path: str | Path, values: Mapping[str, int], seed: int = 0,
                providers: list[str] | None = None) -> dict[str, float]:
    """Relative error of ONNX Runtime against torch per output, on the same seeded inputs."""
    inputs = network.spec.example_inputs(values, network.precision, seed=seed,
                                         device=next(network.module.parameters()).device)
    expected = network(inputs)
    session = OnnxSession(path, network.spec, network.precision, providers=providers)
    got = session.run({name: x.to(session.device).contiguous() for name, x in inputs.items()})
    return {name: relative_error(got[name], expected[name]) for name in expected}


def onnxruntime_backend(stack: ModelStack, width: int, height: int, batch_frames: int = 1,
                        store: EngineStore | None = None, providers: list[str] | None = None,
                        say: Callable[[str], None] | None = None) -> RunnerBackend:
    """The UNet and TAESD decoder of ``stack`` on ONNX Runtime (exported to ``store`` when needed)."""
    store = store or EngineStore()
    providers = providers or providers_for(stack.device)
    profiles = render_profiles(stack, width, height, batch_frames)
    runners = {}
    for network in (unet_network(stack), taesd_decoder_network(stack)):
        path = ensure_onnx(network, profiles[network.spec.name], store, say)
        runners[network.spec.name] = OnnxSession(path, network.spec, network.precision, providers)
    providers_used = runners["unet"].session.get_providers()[0]
    return RunnerBackend("onnxruntime", runners["unet"], runners["taesd_decoder"], details=providers_used)
