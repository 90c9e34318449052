"""Which backend runs the UNet and the decoder, as a plain spec (the names: ``tpos_live.names.BACKENDS``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tpos_live.names import BACKENDS


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
