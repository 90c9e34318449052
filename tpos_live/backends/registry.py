"""Backends by name: what each is, whether it can run here, and making one.

Asking for a backend that cannot run is a :class:`UserError` saying why; with ``allow_fallback`` it
is a warning instead, naming the backend actually used (``torch``, which always runs). Nothing
falls back silently.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from tpos_live.backends.base import Backend
from tpos_live.backends.cuda_graphs import CudaGraphRuntime
from tpos_live.backends.engines import EngineStore
from tpos_live.backends.onnx_backend import ORT_DTYPES, onnxruntime_backend, onnxruntime_unavailable_reason
from tpos_live.backends.spec import FALLBACK_BACKEND
from tpos_live.backends.tensorrt_backend import tensorrt_backend, tensorrt_unavailable_reason
from tpos_live.backends.torch_backend import TorchBackend, cpu_has_fast_bf16
from tpos_live.config import RenderSettings
from tpos_live.diffusion.stack import ModelStack
from tpos_live.errors import UserError
from tpos_live.names import BACKENDS


def unavailable_reason(name: str, stack: ModelStack, decoder: str = "taesd") -> str | None:
    """Why backend ``name`` cannot run ``stack`` with ``decoder`` here, or None when it can."""
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)}")
    on_cuda = stack.device.type == "cuda"
    if name == "torch-compiled" and not on_cuda and not _cxx_compiler():
        return "torch.compile needs a C++ compiler on the CPU (apt-get install g++)"
    if name == "torch-cuda-graphs":
        if not on_cuda:
            return f"CUDA graphs need a CUDA GPU and the model is on {stack.device.type} " \
                   "(--compute-device cuda, on a machine with one)"
        if graph_dtype(stack) == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            return "this GPU has no bfloat16 support (--dtype float16)"
    if name == "torch-bf16":
        if on_cuda and not torch.cuda.is_bf16_supported():
            return "this GPU has no bfloat16 support"
        if not on_cuda and not cpu_has_fast_bf16():
            return "this CPU has neither AMX nor AVX512-BF16, so bfloat16 would be slower than float32"
    if name in ("onnxruntime", "tensorrt"):
        if decoder != "taesd":
            return f"it runs the TAESD decoder only, and the {decoder} decoder was asked for " \
                   "(--decoder taesd)"
        if stack.taesd is None:
            return "the model has no TAESD decoder (give one with --taesd)"
    if name == "onnxruntime":
        reason = onnxruntime_unavailable_reason(stack.device)
        dtype = str(stack.dtype).removeprefix("torch.")
        if reason is None and dtype not in ORT_DTYPES:
            reason = f"ONNX Runtime runs float32 or float16 networks, and the model is {dtype} " \
                     "(--dtype float32)"
        return reason
    if name == "tensorrt":
        return tensorrt_unavailable_reason()
    return None


def create_backend(name: str, stack: ModelStack, settings: RenderSettings, *, allow_fallback: bool = False,
                   say: Callable[[str], None] | None = None, engines: str | os.PathLike | None = None,
                   tensorrt_precision: str = "float16", static_shapes: bool = False) -> Backend:
    """The backend ``name`` for rendering ``stack`` with ``settings`` (its size, batch and decoder).

    ``engines``: the folder of ONNX exports and TensorRT engines (default: the checkout's ``engines/``).
    ``static_shapes``: TensorRT engines of one batch size (``settings.batch_frames``) run as CUDA graphs.
    Some backends convert the stack's UNet and decoder in place (``torch-bf16`` to bfloat16,
    ``tensorrt`` to its precision); see their classes.
    """
    say = say or print
    reason = unavailable_reason(name, stack, settings.decoder)
    if reason is not None:
        if not allow_fallback:
            raise UserError(f"backend '{name}' cannot run here: {reason}")
        say(f"warning: backend '{name}' cannot run here ({reason}); using '{FALLBACK_BACKEND}' instead")
        name = FALLBACK_BACKEND
    store = EngineStore(Path(engines)) if engines is not None else EngineStore()
    if name == "torch":
        return TorchBackend(stack, settings.decoder)
    on_cpu = stack.device.type == "cpu"
    if name == "torch-compiled":
        return TorchBackend(stack, settings.decoder, name=name, compile=True, channels_last=on_cpu,
                            keep_memory=True)
    if name == "torch-bf16":
        return TorchBackend(stack, settings.decoder, name=name, dtype=torch.bfloat16, channels_last=True,
                            keep_memory=True)
    if name == "torch-cuda-graphs":
        return TorchBackend(stack, settings.decoder, name=name, dtype=graph_dtype(stack), channels_last=True,
                            graphs=CudaGraphRuntime(stack.device))
    if name == "onnxruntime":
        return onnxruntime_backend(stack, settings.width, settings.height, settings.batch_frames, store,
                                   say=say)
    return tensorrt_backend(stack, settings.width, settings.height, settings.batch_frames,
                            precision=tensorrt_precision, static=static_shapes, store=store, say=say)


def graph_dtype(stack: ModelStack) -> torch.dtype:
    """The dtype ``torch-cuda-graphs`` runs: the stack's when it is bfloat16, else float16."""
    return torch.bfloat16 if stack.dtype == torch.bfloat16 else torch.float16


def _cxx_compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("clang++")
