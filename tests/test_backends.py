"""Network descriptions, the engine manifest, backend selection, and torch backends in the renderer."""

import json

import numpy as np
import pytest
import torch

from tpos_live.backends.base import Backend, run_in_batches
from tpos_live.backends.engines import ArtefactKey, EngineStore, weights_hash
from tpos_live.backends.network_specs import (
    NetworkSpec,
    ShapeProfile,
    TensorSpec,
    render_profiles,
    taesd_decoder_network,
    unet_network,
    unet_spec,
)
from tpos_live.backends.registry import BACKENDS, create_backend, unavailable_reason
from tpos_live.backends.torch_backend import TorchBackend, cpu_has_fast_bf16
from tpos_live.config import RenderSettings
from tpos_live.diffusion.random_stacks import build_tiny_stack
from tpos_live.diffusion.renderer import TPoSRenderer
from tpos_live.errors import UserError


def settings(**overrides):
    return RenderSettings.for_mode("fast", width=64, height=64, delta_step=0, **overrides)


def conditions(count, seed=1):
    return torch.randn(count, 77, 32, generator=torch.Generator().manual_seed(seed))


# --- specs -----------------------------------------------------------------------------------------


def test_tensor_spec_resolves_named_and_scaled_dimensions():
    image = TensorSpec("image", ("batch", 3, "8*height", "8*width"))
    assert image.shape({"batch": 2, "height": 32, "width": 24}) == (2, 3, 256, 192)
    assert image.dynamic_axes() == {0: "batch", 2: "8*height", 3: "8*width"}
    assert image.torch_dtype("bfloat16") == torch.bfloat16
    assert TensorSpec("timestep", ("batch",), dtype="float32").torch_dtype("float16") == torch.float32
    for bad in (0, "2*", "x*height", "a b"):
        with pytest.raises(ValueError):
            TensorSpec("t", (bad,))


def test_shape_profile_validates_and_has_a_canonical_key():
    profile = ShapeProfile({"batch": 1, "height": 32}, {"batch": 2, "height": 32}, {"batch": 6, "height": 32})
    assert profile.key() == "batch=1:2:6,height=32"
    assert profile.contains({"batch": 6, "height": 32}) and not profile.contains({"batch": 7, "height": 32})
    assert ShapeProfile.static({"batch": 2}).key() == "batch=2"
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ShapeProfile({"batch": 3}, {"batch": 2}, {"batch": 4})
    with pytest.raises(ValueError, match="same dimensions"):
        ShapeProfile({"batch": 1}, {"batch": 1}, {"height": 1})


def test_network_spec_reads_dimensions_off_inputs_and_checks_fixed_ones(tiny_stack):
    spec = unet_spec(tiny_stack)
    assert spec.dim_names == ("batch", "height", "width")
    inputs = spec.example_inputs({"batch": 3, "height": 8, "width": 12}, "float32")
    assert spec.dims_of(inputs) == {"batch": 3, "height": 8, "width": 12}
    inputs["encoder_hidden_states"] = torch.zeros(3, 77, 33)
    with pytest.raises(ValueError, match="does not fit"):
        spec.dims_of(inputs)
    with pytest.raises(ValueError, match="no input has"):
        NetworkSpec("bad", (TensorSpec("x", ("batch",)),), (TensorSpec("y", ("height",)),))


@pytest.mark.parametrize("network", [unet_network, taesd_decoder_network])
def test_specs_describe_what_the_torch_modules_return(tiny_stack, network):
    net = network(tiny_stack)
    values = {"batch": 2, "height": 8, "width": 12}
    with torch.inference_mode():
        outputs = net(net.spec.example_inputs(values, net.precision))
    assert {name: tuple(out.shape) for name, out in outputs.items()} == net.spec.output_shapes(values)
    assert all(out.dtype == torch.float32 for out in outputs.values())


def test_render_profiles_cover_the_guidance_branches(tiny_stack):
    profiles = render_profiles(tiny_stack, 64, 96, batch_frames=2)
    assert profiles["unet"].key() == "batch=1:2:6,height=24,width=16"
    assert profiles["taesd_decoder"].key() == "batch=1:2:2,height=24,width=16"
    assert render_profiles(tiny_stack, 64, 64, batch_frames=2, static=True)["unet"].key() == \
        "batch=2,height=16,width=16"


# --- engine manifest -------------------------------------------------------------------------------


def key(**changes):
    fields = dict(network="unet", kind="onnx", weights="w1", precision="float32", profile="dynamic", opset=18)
    return ArtefactKey(**{**fields, **changes})


def test_store_builds_once_and_reuses_fresh_artefacts(tmp_path):
    store, builds = EngineStore(tmp_path), []

    def build(path):
        builds.append(path.name)
        path.write_text(f"artefact {len(builds)}")
        (path.parent / f"{path.name}.data").write_text("weights")

    first = store.ensure(key(), build)
    assert store.ensure(key(), build) == first and len(builds) == 1
    assert (tmp_path / f"{first.name}.data").read_text() == "weights"  # side files move along
    entry = json.loads((tmp_path / "manifest.json").read_text())["entries"][first.name]
    assert entry["key"]["weights"] == "w1" and set(entry["files"]) == {first.name, f"{first.name}.data"}


@pytest.mark.parametrize("change", [dict(weights="w2"), dict(precision="float16"), dict(profile="batch=2"),
                                    dict(kind="tensorrt", tensorrt="10.3.0", gpu="NVIDIA L4 sm_89")])
def test_store_never_hands_out_a_mismatched_artefact(tmp_path, change):
    store = EngineStore(tmp_path)
    old = store.ensure(key(), lambda path: path.write_text("old"))
    new = store.ensure(key(**change), lambda path: path.write_text("new"))
    assert new != old and new.read_text() == "new"


def test_store_rebuilds_an_artefact_changed_on_disk(tmp_path):
    store = EngineStore(tmp_path)
    path = store.ensure(key(), lambda p: p.write_text("first"))
    path.write_text("tampered with")
    assert store.find(key()) is None
    assert store.ensure(key(), lambda p: p.write_text("rebuilt")).read_text() == "rebuilt"
    path.unlink()
    assert store.find(key()) is None


def test_tensorrt_keys_need_version_and_gpu():
    with pytest.raises(ValueError, match="TensorRT version"):
        key(kind="tensorrt")


def test_weights_hash_follows_the_weights(tiny_stack):
    a = torch.nn.Linear(3, 2)
    before = weights_hash([a])
    assert weights_hash([a]) == before
    with torch.no_grad():
        a.weight[0, 0] += 1e-3
    assert weights_hash([a]) != before
    assert weights_hash([a.to(torch.bfloat16)]) != weights_hash([a.float()])


# --- backends and the renderer ---------------------------------------------------------------------


def render(stack, render_settings, backend=None, frames=2):
    renderer = TPoSRenderer(stack, render_settings, backend=backend)
    scene = renderer.prepare_scene("a photo", seed=3)
    latents = renderer.render_latents(scene, conditions(frames), torch.ones(frames))
    return latents, renderer.decode(latents)


def test_torch_backend_gives_the_renderer_exactly_the_same_frames(tiny_stack):
    latents, frames = render(tiny_stack, settings())
    backend = create_backend("torch", tiny_stack, settings())
    assert isinstance(backend, Backend) and backend.describe() == "torch (float32 on cpu)"
    latents_b, frames_b = render(tiny_stack, settings(), backend)
    assert torch.equal(latents, latents_b) and np.array_equal(frames, frames_b)


def test_torch_backend_runs_the_full_vae_too(tiny_stack):
    vae_settings = settings(decoder="vae")
    _, frames = render(tiny_stack, vae_settings)
    _, frames_b = render(tiny_stack, vae_settings, TorchBackend(tiny_stack, "vae"))
    assert np.array_equal(frames, frames_b)


def test_renderer_refuses_a_backend_for_another_decoder(tiny_stack):
    with pytest.raises(UserError, match="runs the taesd decoder"):
        TPoSRenderer(tiny_stack, settings(decoder="vae"), backend=TorchBackend(tiny_stack, "taesd"))


@pytest.mark.skipif(not cpu_has_fast_bf16(), reason="this CPU has neither AMX nor AVX512-BF16")
def test_bf16_backend_converts_in_place_and_stays_close():
    stack = build_tiny_stack(0)  # converted in place: not the shared fixture
    reference = unet_network(stack)
    inputs = reference.spec.example_inputs({"batch": 2, "height": 16, "width": 16}, "float32")
    with torch.inference_mode():
        expected = reference(inputs)["noise_pred"]
        backend = create_backend("torch-bf16", stack, settings())
        got = backend.unet(*inputs.values())
    assert stack.unet.dtype == torch.bfloat16 and got.dtype == torch.bfloat16
    assert float((got.float() - expected).norm() / expected.norm()) < 0.05
    assert "channels_last" in backend.describe()


def test_unknown_backend_is_a_user_error(tiny_stack):
    with pytest.raises(UserError, match="unknown backend 'cuda-magic'.*torch, torch-compiled"):
        create_backend("cuda-magic", tiny_stack, settings())
    assert list(BACKENDS)[:3] == ["torch", "torch-compiled", "torch-bf16"]


def test_unavailable_backend_is_an_error_with_the_reason(tiny_stack):
    with pytest.raises(UserError, match="'onnxruntime' cannot run here: it runs the TAESD decoder only"):
        create_backend("onnxruntime", tiny_stack, settings(decoder="vae"))


def test_fallback_warns_and_names_the_backend_used(tiny_stack):
    said = []
    backend = create_backend("onnxruntime", tiny_stack, settings(decoder="vae"), allow_fallback=True,
                             say=said.append)
    assert backend.name == "torch" and backend.decoder == "vae"
    assert len(said) == 1 and said[0].startswith("warning: backend 'onnxruntime' cannot run here (")
    assert said[0].endswith("using 'torch' instead")


def test_tensorrt_without_a_gpu_says_so(tiny_stack):
    reason = unavailable_reason("tensorrt", tiny_stack)
    if reason is None:
        pytest.skip("TensorRT and a CUDA GPU are present here (tests/test_tensorrt.py covers it)")
    assert "tensorrt" in reason or "CUDA" in reason


class StaticBatchRunner:
    """A named-tensor runner that takes batches of exactly 2 (like a static-shape engine)."""

    def __init__(self, spec):
        self.spec, self.precision, self.device = spec, "float32", torch.device("cpu")
        self.batch_range = (2, 2)
        self.batches = []

    def run(self, inputs):
        self.batches.append(inputs["x"].shape[0])
        assert inputs["x"].shape[0] == 2
        return {"y": inputs["x"] * 10}


def test_run_in_batches_chunks_and_pads_for_static_runners():
    spec = NetworkSpec("double", (TensorSpec("x", ("batch", 3)),), (TensorSpec("y", ("batch", 3)),))
    runner = StaticBatchRunner(spec)
    x = torch.arange(15.0).reshape(5, 3)
    assert torch.equal(run_in_batches(runner, {"x": x})["y"], x * 10)
    assert runner.batches == [2, 2, 2]


# --- CUDA graphs -----------------------------------------------------------------------------------


def test_cuda_graphs_without_a_gpu_say_why_or_fall_back_visibly(tiny_stack):
    if tiny_stack.device.type == "cuda":
        pytest.skip("the stack is on a GPU")
    with pytest.raises(UserError, match="'torch-cuda-graphs' cannot run here: CUDA graphs need a CUDA GPU"):
        create_backend("torch-cuda-graphs", tiny_stack, settings())
    said = []
    backend = create_backend("torch-cuda-graphs", tiny_stack, settings(), allow_fallback=True, say=said.append)
    assert backend.name == "torch" and said[0].startswith("warning: backend 'torch-cuda-graphs' cannot run here")


def test_graphed_network_keeps_static_buffers_per_shape_and_copies_outputs_out():
    from tpos_live.backends.cuda_graphs import EagerReplayRuntime, GraphedNetwork

    runtime = EagerReplayRuntime()
    graphed = GraphedNetwork(lambda x, t: x * 2 + t[:, None], runtime)
    first = graphed(torch.ones(2, 3), torch.tensor([1.0, 2.0]))
    kept = first.clone()
    second = graphed(torch.zeros(2, 3), torch.tensor([5.0, 6.0]))  # replays into the same static output
    assert torch.equal(first, kept), "a result kept across calls (PLMS history) was overwritten by a replay"
    assert torch.equal(second, torch.tensor([[5.0] * 3, [6.0] * 3]))
    graphed(torch.ones(4, 3), torch.ones(4))  # another batch size: a graph of its own
    graphed(torch.ones(2, 3), torch.ones(2))
    assert runtime.captures == 2 and graphed.shapes == [((2, 3), (2,)), ((4, 3), (4,))]
    assert runtime.replays == 4


def test_graphed_torch_backend_renders_like_eager_plms_included():
    """The renderer on a graphed backend (eager replays on the CPU) gives the eager frames, PLMS
    history across replays included."""
    from tpos_live.backends.cuda_graphs import EagerReplayRuntime

    stack = build_tiny_stack(0)
    plms = RenderSettings.for_mode("fast", width=64, height=64, sampler="plms", steps=4, delta_step=1)
    eager = TPoSRenderer(stack, plms, TorchBackend(stack))
    runtime = EagerReplayRuntime()
    graphed = TPoSRenderer(stack, plms, TorchBackend(stack, name="torch-cuda-graphs", graphs=runtime))
    scene = eager.prepare_scene("a forest")
    audio = conditions(2)
    expected = eager.render_latents(scene, audio, torch.ones(2))
    got = graphed.render_latents(graphed.prepare_scene("a forest"), audio, torch.ones(2))
    assert runtime.captures >= 2 and runtime.replays > runtime.captures
    assert torch.allclose(got, expected, atol=1e-5)
    assert np.array_equal(graphed.decode(got), eager.decode(expected))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_graphs_match_eager_on_a_gpu(dtype):
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    stack = build_tiny_stack(0)
    for module in stack.modules().values():
        module.to("cuda", dtype)
    eager = TorchBackend(stack, dtype=dtype, channels_last=True)
    backend = create_backend("torch-cuda-graphs", stack, settings())
    for batch in (1, 2):
        x = torch.randn(batch, 4, 16, 16, device="cuda")
        t = torch.full((batch,), 500, device="cuda")
        c = torch.randn(batch, 77, 32, device="cuda")
        expected = eager.unet(x, t, c).float()
        kept = backend.unet(x, t, c)
        backend.unet(x + 1, t, c)  # a replay must not change the result kept
        assert torch.allclose(kept.float(), expected, atol=2e-2, rtol=2e-2)
        assert torch.allclose(backend.decode(x).float(), eager.decode(x).float(), atol=2e-2)


def test_weights_hash_follows_layers_without_weights():
    from tpos_live.conditioning.tpos_encoder import MappingModule

    official, linear = MappingModule(8, 76, "gelu"), MappingModule(8, 76, "linear")
    linear.load_state_dict(official.state_dict())
    assert weights_hash([official]) != weights_hash([linear])  # same weights, another output activation
