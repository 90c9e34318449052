"""Where a frame touches the host: the render path run on a stand-in GPU, with every host contact listed.

No GPU has run this project's code. Torch's ``meta`` device stands in for it: the model stack is moved
there, so every tensor the renderer makes "on the device" is a meta tensor (shapes and dtypes, no data),
and every tensor made on the host stays a CPU tensor. :class:`HostContacts` watches every torch op (a
dispatch mode, plus a function mode for ``.numpy()``/``.tolist()``/``torch.tensor``, which the dispatcher
does not see) and records, with the place in our code that caused it (file:line from the stack):

- a read: a device-to-host copy (``.cpu()``, ``.to("cpu")``, ``.numpy()``, ``.tolist()``) or a device
  scalar read on the host (``.item()``, ``float(t)``, ``bool(t)``, a Python ``if`` on a tensor). On CUDA
  each waits until the GPU has finished all work queued before it;
- a mixed op: a host tensor other than a 0-dim scalar meeting a device tensor (an error on CUDA);
- a blocking upload: a host-to-device copy without ``non_blocking`` (``.to(device)``,
  ``torch.tensor(..., device=...)``). Torch makes such a CUDA copy wait for the stream's queued work, so
  it stalls the host as a read does.

A read of a meta tensor would fail (no data): the watch hands back zeros instead and goes on, so that one
run lists every contact. What runs after such a read has made-up values: fine here, since no frame's
control flow depends on tensor values (a read that did would itself be listed).

The tests run the keyframe path (scene, A, B, compose, decode) and the per-frame path (render_latents,
decode), a morph between two scenes as the live render stage makes it, and the CUDA-graph backend's
bookkeeping, and allow per frame only the reads of the frame download (``diffusion/frames.py``). Preparing
a scene may upload what :data:`PER_SCENE` lists, with the reason.

What this cannot show: kernels (meta runs none: no numerics, no CUDA-only failures), streams and events
(``FrameDownload`` takes its CPU branch on meta, so its pinned copies and events are not exercised), the
pinning of uploads (``diffusion/uploads.py`` pins only for CUDA), CUDA graphs' capture, and syncs the
CUDA runtime or caching allocator make by themselves (allocations that hit cudaMalloc, for instance).
"""

from __future__ import annotations

import copy
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

import tpos_live
from tpos_live.backends.cuda_graphs import EagerReplayRuntime
from tpos_live.backends.torch_backend import TorchBackend
from tpos_live.conditioning.interpolate import SlerpPair
from tpos_live.config import RenderSettings
from tpos_live.diffusion.frames import FrameDownload
from tpos_live.diffusion.renderer import TPoSRenderer
from tpos_live.diffusion.transitions import blend_scenes

DEVICE = torch.device("meta")
PACKAGE = Path(tpos_live.__file__).parent
LIBRARIES_SKIPPED = (str(Path(torch.__file__).parent), __file__)
ALLOWED_PER_FRAME = "diffusion/frames.py"  # the frame download: the one read a frame must make

aten = torch.ops.aten
SCALAR_READS = {aten.item, aten._local_scalar_dense, aten.is_nonzero, aten.equal, aten.allclose}
COPIES = {aten.to, aten._to_copy}


# Host contacts that are not per frame, and why they may stay, by the function of ours that makes them.
PER_SCENE = {
    "encode_prompt": "the prompts' token ids, tokenised on the host: once per prompt",
    "_draw_noise": "z^T and the step noise, drawn by a seeded CPU generator so that every device gets the same "
                   "frames: once per scene",
}


@dataclass(frozen=True)
class Contact:
    kind: str  # "read", "mixed" or "blocking upload"
    op: str
    place: str  # "diffusion/renderer.py:227 in compose_latents", plus the library frame below it if any
    function: str  # the function of ours that made it ("compose_latents"; "" outside the package)

    def __str__(self) -> str:
        return f"{self.kind:<15} {self.op:<28} {self.place}"


def _place() -> tuple[str, str]:
    stack = traceback.extract_stack()
    depth = next((i for i in reversed(range(len(stack))) if stack[i].filename.startswith(str(PACKAGE))), None)
    if depth is None:
        return "outside the package", ""
    ours = stack[depth]
    where = f"{Path(ours.filename).relative_to(PACKAGE)}:{ours.lineno} in {ours.name}"
    below = [f for f in stack[depth + 1:] if not f.filename.startswith(LIBRARIES_SKIPPED)]
    if below:  # a library our code called (diffusers, transformers) made the contact
        where += f" (via {below[-1].filename.split('site-packages/')[-1]}:{below[-1].lineno})"
    return where, ours.name


def _arguments(func, args, kwargs) -> dict:
    names = [argument.name for argument in func._schema.arguments]
    return {**dict(zip(names, args, strict=False)), **kwargs}


def _copy_target(packet, named: dict) -> torch.device | None:
    """Where a ``.to``/``_to_copy``/``copy_`` puts its result (None: not a copy)."""
    if packet is aten.copy_:
        return named["self"].device
    if packet not in COPIES:
        return None
    if "other" in named:
        return named["other"].device
    return torch.device(named.get("device") or named["self"].device)


def _on(tensor: object, kind: str) -> bool:
    return isinstance(tensor, torch.Tensor) and tensor.device.type == kind


class HostContacts(TorchDispatchMode):
    """Records each op that touches the host (see the module docstring) in :attr:`contacts`."""

    def __init__(self) -> None:
        super().__init__()
        self.contacts: list[Contact] = []

    def record(self, kind: str, op: object) -> None:
        self.contacts.append(Contact(kind, str(op), *_place()))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        packet = func.overloadpacket
        named = _arguments(func, args, kwargs)
        target = _copy_target(packet, named)
        if target is not None:
            source = named["src"] if packet is aten.copy_ else named["self"]
            if _on(source, "meta") and target.type == "cpu":
                self.record("read", func)
                if packet is aten.copy_:
                    return named["self"].zero_()
                return torch.zeros(source.shape, dtype=named.get("dtype") or source.dtype)
            if _on(source, "cpu") and target == DEVICE and not named.get("non_blocking"):
                self.record("blocking upload", func)
            return func(*args, **kwargs)
        if not any(_on(t, "meta") for t in tensors):
            return func(*args, **kwargs)
        if packet in SCALAR_READS:
            self.record("read", func)
            return torch.ones((), dtype=args[0].dtype).item()  # made up: a meta tensor has no value
        if any(_on(t, "cpu") and t.dim() > 0 for t in tensors):
            self.record("mixed", func)  # CUDA raises here: go on as if the host tensor had been on the device
            args, kwargs = tree_map(lambda t: t.to(DEVICE) if _on(t, "cpu") else t, (args, kwargs))
        return func(*args, **kwargs)


class _HostConversions(TorchFunctionMode):
    """What the dispatcher does not see: ``.numpy()``/``.tolist()`` and tensors made from host data."""

    def __init__(self, watch: HostContacts) -> None:
        super().__init__()
        self.watch = watch

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in ("numpy", "tolist") and _on(args[0], "meta"):
            self.watch.record("read", f"Tensor.{name}")
            zeros = torch.zeros(args[0].shape, dtype=args[0].dtype)
            return zeros.numpy() if name == "numpy" else zeros.tolist()
        made_on = torch.device(kwargs.get("device") or "cpu")
        if func in (torch.tensor, torch.as_tensor, torch.asarray) and made_on == DEVICE:
            self.watch.record("blocking upload", f"torch.{name}")
        return func(*args, **kwargs)


@contextmanager
def watching() -> Iterator[HostContacts]:
    watch = HostContacts()
    with _HostConversions(watch), watch:
        yield watch


def taken(watch: HostContacts) -> list[Contact]:
    """The contacts recorded so far, forgotten by the watch."""
    contacts, watch.contacts = watch.contacts, []
    return contacts


def assert_only_the_download(contacts: list[Contact], what: str) -> None:
    listing = "\n".join(map(str, contacts))
    others = [c for c in contacts if not c.place.startswith(ALLOWED_PER_FRAME)]
    assert not others, f"{what} touches the host outside the frame download:\n{listing}"


def assert_downloads_a_frame(contacts: list[Contact]) -> None:
    # The download must be seen: else the watch sees nothing and the checks above prove nothing.
    reads = [c for c in contacts if c.kind == "read" and c.place.startswith(ALLOWED_PER_FRAME)]
    assert reads, "the frame download made no read: the watch does not see device-to-host copies"


@pytest.fixture(scope="module")
def device_stack(tiny_stack):
    """The tiny stack, copied onto the stand-in device (the session's stack stays on the CPU)."""
    moved = {name: copy.deepcopy(module).to(DEVICE) for name, module in tiny_stack.modules().items()}
    return replace(tiny_stack, **moved)


def host_conditions(stack, count: int) -> torch.Tensor:
    # Conditions come from the audio encoder on the host, as in live and render.
    return torch.randn(count, 77, stack.cross_attention_dim, generator=torch.Generator().manual_seed(count))


# 80x80: a 20x20 latent, whose 0.8-quantile falls between two ranks (the interpolated branch of the mask).
# Two steps: the fewest that run a text-only step before the guided one (meta kernels take ~0.5 s a UNet call).
SMALL = dict(width=80, height=80, steps=2)

KEYFRAME_CASES = [
    pytest.param(dict(sampler="lcm", threshold=0.8), None, id="lcm-q0.8"),
    pytest.param(dict(sampler="ddim", threshold=0.0, text_guidance=1.5), "a red sun", id="ddim-q0-edit"),
    pytest.param(dict(sampler="lcm", steps=3, delta_step=1, frames="keyframes"), None, id="linearised-2-guided-steps"),
]


@pytest.mark.parametrize("overrides, edit_prompt", KEYFRAME_CASES)
def test_a_composed_frame_reads_the_device_only_to_download_it(device_stack, overrides, edit_prompt):
    settings = RenderSettings.for_mode("fast", **{**SMALL, **overrides})
    renderer = TPoSRenderer(device_stack, settings)
    assert renderer.uses_keyframes and renderer.device == DEVICE
    with watching() as watch:
        scene = renderer.prepare_scene("neon city", seed=3, edit_prompt=edit_prompt)
        per_scene = taken(watch)
        base = renderer.scene_base(scene)
        assert_only_the_download(taken(watch), "the scene's base A")
        keys = renderer.keyframe_latents(scene, base, host_conditions(device_stack, 2))
        assert_only_the_download(taken(watch), "a keyframe")
        for tau in (0.0, 0.4):
            latents = renderer.compose_latents(base, keys[:1], keys[1:], torch.tensor([tau]), torch.tensor([0.9]))
            assert_only_the_download(taken(watch), "composing a frame")
            renderer.decode(latents)
            per_frame = taken(watch)
            assert_only_the_download(per_frame, "decoding a frame")
            assert_downloads_a_frame(per_frame)
    unexplained = [c for c in per_scene if c.kind != "blocking upload" or c.function not in PER_SCENE]
    assert per_scene and not unexplained, "\n".join(map(str, per_scene))


PER_FRAME_CASES = [
    pytest.param("fast", dict(sampler="lcm", steps=3, delta_step=1), None, id="fast-2-guided-steps"),
    pytest.param("fast", dict(sampler="ddim", frames="per-frame", decoder="vae"), "a red sun", id="fast-edit-vae"),
    pytest.param("paper", dict(steps=3, delta_step=1), None, id="paper-plms"),
]


@pytest.mark.parametrize("mode, overrides, edit_prompt", PER_FRAME_CASES)
def test_a_frame_rendered_per_frame_reads_the_device_only_to_download_it(device_stack, mode, overrides, edit_prompt):
    settings = RenderSettings.for_mode(mode, **{**SMALL, **overrides})
    renderer = TPoSRenderer(device_stack, settings)
    assert not renderer.uses_keyframes
    with watching() as watch:
        scene = renderer.prepare_scene("neon city", seed=3, edit_prompt=edit_prompt)
        taken(watch)
        latents = renderer.render_latents(scene, host_conditions(device_stack, 2), torch.tensor([0.5, 1.0]))
        assert_only_the_download(taken(watch), "rendering a batch of frames' latents")
        renderer.decode(latents)
        per_frame = taken(watch)
    assert_only_the_download(per_frame, "decoding a batch of frames")
    assert_downloads_a_frame(per_frame)


def test_the_graphed_backend_reads_the_device_only_to_download(device_stack):
    # The CUDA-graph backend's buffer bookkeeping (static inputs, copy-out) with the eager replay.
    stack = replace(device_stack, **{name: copy.deepcopy(m) for name, m in device_stack.modules().items()})
    backend = TorchBackend(stack, "taesd", dtype=torch.float16, channels_last=True, graphs=EagerReplayRuntime())
    renderer = TPoSRenderer(stack, RenderSettings.for_mode("fast", **SMALL), backend)
    with watching() as watch:
        scene = renderer.prepare_scene("neon city", seed=3)
        base = renderer.scene_base(scene)
        taken(watch)
        keys = renderer.keyframe_latents(scene, base, host_conditions(stack, 2))
        latents = renderer.compose_latents(base, keys[:1], keys[1:], torch.tensor([0.5]), torch.tensor([1.0]))
        renderer.decode(latents)
        contacts = taken(watch)
    assert_only_the_download(contacts, "a keyframe and a frame through the graphed backend")
    assert_downloads_a_frame(contacts)


def test_the_live_render_stages_frame_work_reads_the_device_only_to_download(device_stack):
    # RenderStage's work for a batch, without its threads: the slerp of the two newest conditions (each
    # uploaded once, when it arrives), a morph between two scenes, the guided steps, decode and download.
    renderer = TPoSRenderer(device_stack, RenderSettings.for_mode("fast", **SMALL))
    with watching() as watch:
        first, second = (renderer.prepare_scene(prompt, seed=3) for prompt in ("neon city", "deep sea"))
        host = host_conditions(device_stack, 2)
        mix = SlerpPair(host[0].to(DEVICE), host[1].to(DEVICE), host[0], host[1])
        taken(watch)
        fractions = np.array([0.25, 0.75])
        scene = blend_scenes(first, second, torch.from_numpy(fractions))
        latents = renderer.render_latents(scene, mix(fractions), torch.from_numpy(np.array([0.8, 1.0])))
        assert_only_the_download(taken(watch), "a morph frame's conditions and latents")
        pending = FrameDownload(DEVICE).start(renderer.decode_images(latents), latents)
        assert not taken(watch), "starting the download read the device: it must only queue the copy"
        pending.result()
        downloaded = taken(watch)
    assert_only_the_download(downloaded, "waiting for the download")
    assert_downloads_a_frame(downloaded)


def test_the_watch_sees_each_kind_of_host_contact():
    device = torch.ones(4, device=DEVICE)
    with watching() as watch:
        device.sum().item()
        float(device.sum())
        if device.sum():
            pass
        device.cpu()
        device.numpy()
        device.tolist()
        torch.empty(4).copy_(device)
        device + torch.ones(4)  # noqa: B018 - the op itself is what is watched
        device * torch.tensor(2.0)  # a 0-dim host scalar: CUDA takes it as an argument, no contact
        torch.ones(4).to(DEVICE)
        torch.ones(4).to(DEVICE, non_blocking=True)  # not recorded: does not wait for the stream
        torch.tensor([1.0, 2.0], device=DEVICE)
        contacts = taken(watch)
    kinds = [c.kind for c in contacts]
    assert kinds == ["read"] * 7 + ["mixed", "blocking upload", "blocking upload"], "\n".join(map(str, contacts))
    assert all(c.place == "outside the package" for c in contacts)
