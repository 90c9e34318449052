"""TensorRT engines on tiny models: build, manifest, parity with torch, CUDA graphs, the renderer.

These run only where a CUDA GPU and TensorRT 10+ are present; elsewhere they skip with the reason.
"""

import dataclasses

import numpy as np
import pytest
import torch

from tpos_live.backends.tensorrt_backend import tensorrt_unavailable_reason

REASON = tensorrt_unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"TensorRT tests need a GPU: {REASON}")

# The imports below need tensorrt; the skip above keeps them from failing elsewhere.
from tpos_live.backends.engines import EngineStore  # noqa: E402
from tpos_live.backends.network_specs import (  # noqa: E402
    ShapeProfile,
    render_profiles,
    taesd_decoder_network,
    unet_network,
)
from tpos_live.backends.onnx_backend import relative_error  # noqa: E402
from tpos_live.backends.registry import create_backend  # noqa: E402
from tpos_live.backends.tensorrt_backend import TensorRTEngine, engine_key, ensure_engine  # noqa: E402
from tpos_live.config import RenderSettings  # noqa: E402
from tpos_live.diffusion.random_stacks import build_tiny_stack  # noqa: E402
from tpos_live.diffusion.renderer import TPoSRenderer  # noqa: E402


def half_stack():
    stack = build_tiny_stack(0)
    for module in stack.modules().values():
        module.to("cuda", torch.float16)
    return stack


@pytest.mark.parametrize("static", [False, True])
def test_unet_engine_matches_torch(tmp_path, static):
    stack = half_stack()
    network = unet_network(stack)
    values = {"batch": 2, "height": 16, "width": 16}
    profile = ShapeProfile.static(values) if static else render_profiles(stack, 64, 64, 2)["unet"]
    path = ensure_engine(network, profile, EngineStore(tmp_path))
    engine = TensorRTEngine(path, network.spec, "float16")
    assert engine.cuda_graphs == static
    inputs = network.spec.example_inputs(values, "float16", device="cuda")
    with torch.inference_mode():
        expected = network(inputs)["noise_pred"]
        for _ in range(2):  # the second call replays the captured graph / reuses the bound buffers
            got = engine.run(inputs)["noise_pred"]
            assert relative_error(got, expected) < 1e-2
    other = dict(inputs, sample=torch.randn_like(inputs["sample"]))
    with torch.inference_mode():
        assert relative_error(engine.run(other)["noise_pred"], network(other)["noise_pred"]) < 1e-2


def test_engine_key_names_tensorrt_and_gpu_and_a_new_gpu_means_a_new_engine(tmp_path):
    import tensorrt as trt

    stack = half_stack()
    network = taesd_decoder_network(stack)
    profile = render_profiles(stack, 64, 64)["taesd_decoder"]
    key = engine_key(network, profile)
    assert key.tensorrt == trt.__version__ and torch.cuda.get_device_name() in key.gpu
    store = EngineStore(tmp_path)
    path = ensure_engine(network, profile, store)
    assert store.find(key) == path
    assert store.find(dataclasses.replace(key, gpu="another GPU")) is None


def test_tensorrt_backend_renders_like_torch(tmp_path):
    settings = RenderSettings.for_mode("fast", width=64, height=64, delta_step=0, batch_frames=1)
    conditions = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    frames = []
    for name in ("torch", "tensorrt"):
        stack = half_stack()
        backend = create_backend(name, stack, settings, engines=tmp_path, static_shapes=True)
        renderer = TPoSRenderer(stack, settings, backend=backend)
        frames.append(renderer.render(renderer.prepare_scene("a photo", seed=3), conditions, torch.ones(1)))
    assert np.abs(frames[0].astype(int) - frames[1].astype(int)).mean() < 2.0
