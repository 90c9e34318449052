"""The live engine on every CPU backend: the scene stage and the render stage both run the UNet and the
decoder through the backend, and the frames equal the torch backend's within a stated tolerance.

A silent source makes every condition the same and the loudness envelope constant, so the first frame
of an engine depends only on the scene and the backend: frames of two engines can be compared.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.test_live_engine import RATE, quick_provider, quick_settings
from tpos_live.audio.signals import SyntheticSource, silence
from tpos_live.backends.registry import create_backend, unavailable_reason
from tpos_live.diffusion.random_stacks import build_tiny_stack
from tpos_live.live.engine import LiveEngine

# uint8 levels: float32 backends differ from eager torch by rounding only; bfloat16 keeps 8 bits of
# mantissa, which on the tiny stack moves a few pixels by up to this many levels (mean well below 1).
TOLERANCE = {"onnxruntime": (2, 0.1), "torch-compiled": (2, 0.1), "torch-bf16": (20, 2.0)}


class CountingBackend:
    """A backend that records which threads called it (the scene and render stages are threads)."""

    def __init__(self, backend) -> None:
        self.backend, self.name, self.decoder = backend, backend.name, backend.decoder
        self.threads: dict[str, set[str]] = {"unet": set(), "decode": set()}

    def unet(self, *args):
        self.threads["unet"].add(threading.current_thread().name)
        return self.backend.unet(*args)

    def decode(self, latents):
        self.threads["decode"].add(threading.current_thread().name)
        return self.backend.decode(latents)

    def describe(self) -> str:
        return self.backend.describe()


def first_frame(name: str, engines) -> tuple[np.ndarray, CountingBackend]:
    stack = build_tiny_stack(seed=0)  # some backends convert the stack in place: one each
    settings = quick_settings()
    reason = unavailable_reason(name, stack, settings.decoder)
    if reason is not None:
        pytest.skip(f"{name} cannot run here: {reason}")
    backend = CountingBackend(create_backend(name, stack, settings, engines=engines, say=lambda message: None))
    source = SyntheticSource(silence(), RATE)
    with LiveEngine(stack, settings, quick_provider(stack), source, "a beach", backend=backend) as engine:
        _, frame = engine.wait_frame(0, timeout=600)  # torch.compile compiles on the first frame
    assert frame is not None, f"no frame from the {name} backend"
    return frame.image.astype(np.int16), backend


@pytest.fixture(scope="module")
def torch_frame(tmp_path_factory):
    return first_frame("torch", tmp_path_factory.mktemp("engines"))[0]


@pytest.mark.parametrize("name", ["onnxruntime", "torch-bf16", "torch-compiled"])
def test_a_live_engine_on_each_cpu_backend_renders_torchs_frames(name, torch_frame, tmp_path):
    frame, backend = first_frame(name, tmp_path / "engines")
    assert backend.threads["unet"] >= {"tpos-scene", "tpos-render"}  # scene preparation and rendering
    assert backend.threads["decode"] == {"tpos-render"}
    difference = np.abs(frame - torch_frame)
    most, mean = TOLERANCE[name]
    assert difference.max() <= most and difference.mean() <= mean, (name, difference.max(), difference.mean())


def test_a_live_engine_without_a_backend_runs_eager_torch_and_says_so(tiny_stack):
    settings = quick_settings()
    engine = LiveEngine(tiny_stack, settings, quick_provider(tiny_stack), SyntheticSource(silence(), RATE), "x")
    assert engine.backend.describe() == "torch (float32 on cpu)"
