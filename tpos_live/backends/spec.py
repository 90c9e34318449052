"""Which backend runs the UNet and the decoder, as a plain spec (the names: ``tpos_live.names.BACKENDS``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tpos_live.names import BACKENDS

FALLBACK_BACKEND = "torch"  # what a backend that cannot run gives way to
ENGINE_BACKENDS = ("onnxruntime", "tensorrt")  # the backends that keep exports or engines in a folder


@dataclass(frozen=True)
class BackendSpec:
    """What runs the UNet and the decoder (see :data:`BACKENDS`).

    Attributes:
        name: a key of :data:`BACKENDS`.
        allow_fallback: where it cannot run, use ``torch`` instead with a warning (else a UserError).
        engines: the folder of ONNX exports and TensorRT engines (None: the default, see ``EngineStore``).
        static_shapes: TensorRT engines of one batch size, run as CUDA graphs.
    """

    name: str = "torch"
    allow_fallback: bool = False
    engines: Path | None = None
    static_shapes: bool = False

    def __post_init__(self) -> None:
        if self.name not in BACKENDS:
            raise ValueError(f"unknown backend {self.name!r}: use one of {', '.join(BACKENDS)}")
        if self.allow_fallback and self.name == FALLBACK_BACKEND:
            raise ValueError(f"--allow-fallback falls back to {FALLBACK_BACKEND}, which runs everywhere: it goes "
                             f"with another --backend")

    def refuse_unused_engine_options(self) -> None:
        """ValueError for --engines or --static-shapes on a backend that never reads them (the app may
        switch to one that does, so only render and live call this)."""
        if self.engines is not None and self.name not in ENGINE_BACKENDS:
            raise ValueError(f"--engines holds the artefacts of {' and '.join(ENGINE_BACKENDS)}: it goes with "
                             f"--backend {' or '.join(ENGINE_BACKENDS)}")
        if self.static_shapes and self.name != "tensorrt":
            raise ValueError("--static-shapes is for TensorRT engines: it goes with --backend tensorrt")
