"""ONNX export of every network on tiny models, checked, and ONNX Runtime parity with torch."""

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="the [onnx] extra is not installed")
pytest.importorskip("onnxruntime", reason="the [onnx] extra is not installed")

import onnx  # noqa: E402

from tpos_live.backends import onnx_backend  # noqa: E402
from tpos_live.backends.engines import EngineStore  # noqa: E402
from tpos_live.backends.network_specs import (  # noqa: E402
    ShapeProfile,
    audio_profiles,
    audio_segment_network,
    audio_window_network,
    render_profiles,
    taesd_decoder_network,
    unet_network,
)
from tpos_live.backends.onnx_backend import (  # noqa: E402
    OnnxSession,
    ensure_onnx,
    export_onnx,
    onnx_parity,
)
from tpos_live.backends.registry import create_backend  # noqa: E402
from tpos_live.conditioning.checkpoint import random_tpos  # noqa: E402
from tpos_live.conditioning.tpos_encoder import TPoSConfig  # noqa: E402
from tpos_live.config import RenderSettings  # noqa: E402
from tpos_live.diffusion.renderer import TPoSRenderer  # noqa: E402

TOLERANCE = 1e-4  # float32 ONNX Runtime vs torch: reordered sums only


def profile_of(stack, name):
    return render_profiles(stack, 64, 64, batch_frames=2)[name]


@pytest.mark.parametrize("make", [unet_network, taesd_decoder_network])
def test_diffusion_networks_export_and_match_torch_at_other_shapes(tiny_stack, tmp_path, make):
    network = make(tiny_stack)
    profile = profile_of(tiny_stack, network.spec.name)
    path = export_onnx(network, tmp_path / f"{network.spec.name}.onnx", profile)
    model = onnx.load(str(path))
    assert model.opset_import[0].version >= 17
    assert [i.name for i in model.graph.input] == [t.name for t in network.spec.inputs]
    # batch and resolution stay dynamic: other shapes than the export's run and match
    for values in ({"batch": 1, "height": 16, "width": 16}, {"batch": 3, "height": 8, "width": 12}):
        errors = onnx_parity(network, path, values, seed=values["batch"])
        assert max(errors.values()) < TOLERANCE, errors


def test_audio_encoder_networks_export_and_match_torch(tmp_path):
    config = TPoSConfig(embed_dim=32)
    provider = random_tpos(config, seed=0)
    profiles = audio_profiles()
    segment = audio_segment_network(provider.encoder, config)
    window = audio_window_network(provider.encoder, provider.map_model, config)
    for network, values in ((segment, {"segments": 3}), (window, {"windows": 2})):
        path = export_onnx(network, tmp_path / f"{network.spec.name}.onnx", profiles[network.spec.name])
        errors = onnx_parity(network, path, values)
        assert set(errors) == {t.name for t in network.spec.outputs}
        assert max(errors.values()) < TOLERANCE, errors


def test_window_network_is_what_the_provider_computes():
    config = TPoSConfig(embed_dim=32)
    provider = random_tpos(config, seed=1)
    window = audio_window_network(provider.encoder, provider.map_model, config)
    features = torch.randn(2, config.segments, 32, generator=torch.Generator().manual_seed(0))
    tokens, weight = provider.window_tokens(features)
    with torch.inference_mode():
        outputs = window({"features": features})
    assert torch.equal(outputs["tokens"], tokens) and torch.equal(outputs["weight"], weight)


def test_static_export_fixes_the_shapes(tiny_stack, tmp_path):
    network = taesd_decoder_network(tiny_stack)
    static = ShapeProfile.static({"batch": 2, "height": 16, "width": 16})
    path = export_onnx(network, tmp_path / "static.onnx", static, static=True)
    dims = [d.dim_value for d in onnx.load(str(path)).graph.output[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 64, 64]
    session = OnnxSession(path, network.spec, "float32")
    assert session.batch_range == (2, 2)


def test_large_models_keep_their_weights_in_one_external_file(tiny_stack, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_backend, "EXTERNAL_DATA_ABOVE", 1024)  # as if the tiny UNet were > 2 GB
    network = unet_network(tiny_stack)
    path = export_onnx(network, tmp_path / "unet.onnx", profile_of(tiny_stack, "unet"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unet.onnx", "unet.onnx.data"]
    assert path.stat().st_size < 1_000_000 < (tmp_path / "unet.onnx.data").stat().st_size
    errors = onnx_parity(network, path, {"batch": 2, "height": 16, "width": 16})
    assert errors["noise_pred"] < TOLERANCE


def test_exports_are_stored_once_per_weights(tiny_stack, tmp_path):
    store = EngineStore(tmp_path)
    network = taesd_decoder_network(tiny_stack)
    profile = profile_of(tiny_stack, "taesd_decoder")
    said = []
    first = ensure_onnx(network, profile, store, said.append)
    assert ensure_onnx(network, profile, store, said.append) == first and len(said) == 1
    with torch.no_grad():
        tiny_stack.taesd.decoder.layers[0].weight.mul_(2)
    try:
        second = ensure_onnx(network, profile, store, said.append)
    finally:
        with torch.no_grad():
            tiny_stack.taesd.decoder.layers[0].weight.div_(2)
    assert second != first and len(said) == 2


def test_onnxruntime_backend_renders_the_same_frames(tiny_stack, tmp_path):
    settings = RenderSettings.for_mode("fast", width=64, height=64, delta_step=0, batch_frames=2)
    conditions = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(1))
    frames = []
    for backend in (None, create_backend("onnxruntime", tiny_stack, settings, engines=tmp_path, say=print)):
        renderer = TPoSRenderer(tiny_stack, settings, backend=backend)
        frames.append(renderer.render(renderer.prepare_scene("a photo", seed=3), conditions, torch.ones(2)))
    assert np.abs(frames[0].astype(int) - frames[1].astype(int)).max() <= 1
