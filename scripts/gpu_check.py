"""The prepared GPU check: one run that measures what the project's goals need, on a GPU or (smoke) the CPU.

Run through ``scripts/gpu_check.sh`` (which installs the carried wheels first); it writes
``gpu_check.json`` (and the shell script a log) into ``--out``. Every section is guarded: one that
fails is recorded with its error and the rest still run; the JSON is rewritten after each section,
so a run stopped by its time limit keeps what it measured.

Sections (GPU: full-size random-weight SD 1.5 architecture at 512x512; ``--cpu-smoke``: the tiny
stack at 64x64 on the CPU, the same code):

- ``environment``: versions, the device, which of this package's needs import, the matmul peaks;
- ``parity``: tiny stack, frames of the device in float16 and bfloat16 against the CPU in float32;
- ``networks``: UNet and TAESD decoder, eager against CUDA-graphed (captured here; and the
  ``torch-cuda-graphs`` backend where this checkout has it), batch 1 and 8, with parity;
- ``renderer``: fast mode per backend and batch: fps, per-batch latency, time outside the model
  kernels per frame (overhead), and the batch that is fastest per frame;
- ``sync_points``: CUDA synchronisations per frame (``torch.cuda.set_sync_debug_mode``);
- ``live``: the live engine at 60 fps, batch 1, with a scene switch halfway;
- ``live_keyframes``: the live engine's keyframe path (one guided step: the UNet once per condition,
  every frame composed and decoded) with the fps cap at its top, and a scene switch halfway;
- ``offline``: an audio file to an MP4 (PyAV encoding included);
- ``tensorrt``: only where ``tensorrt`` imports;
- ``verdicts``: one per goal (>=200 fps throughput at 512, >=60 fps at batch 1 with <=50 ms
  audio-to-frame, little overhead per frame, >=240 fps displayed on the keyframe path).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import torch
from bench_timing import StageClock, Stopwatch, matmul_peak, parse_device, synchronize, time_call

PROMPT = "a photo of a beautiful beach with a blue sky"
SECOND_PROMPT = "a forest at night, lanterns"
GRAPHS_BACKEND = "torch-cuda-graphs"  # the CUDA-graphs torch backend, timed where this checkout has it
PACKAGES = ("diffusers", "transformers", "safetensors", "huggingface_hub", "tokenizers", "av", "numpy",
            "pillow", "tqdm", "tensorrt")
PARITY_TOLERANCE = {"float16": 0.1, "bfloat16": 0.3}
GOALS = {  # the project's speed goals on a GPU: the numbers the verdicts compare with
    "throughput_fps": 200.0,  # at 512x512, any batch
    "live_fps": 60.0,  # delivered at batch 1 (a 2% tolerance for the frame clock's rounding)
    "live_latency_ms": 50.0,  # audio-to-frame, median of fresh frames
    "overhead_ms_per_frame": 2.0,  # frame time outside the UNet and decoder kernels, batch 1
    "keyframes_fps": 240.0,  # displayed on the keyframe path at 512x512 (docs/design.md, "Keyframes")
}


@dataclass(frozen=True)
class Plan:
    """What one run measures, and at what size."""

    device: str
    smoke: bool
    arch: str  # the full-size stack of the networks, renderer, live and offline sections
    size: int
    dtype: str  # of the full-size stack
    network_batches: tuple[int, ...]
    renderer_batches: tuple[int, ...]
    renderer_repeats: int
    warmups: int  # untimed calls first (on a GPU: graph capture, cuDNN autotuning)
    network_repeats: int
    live_seconds: float
    live_hop: float
    offline_fps: float
    offline_seconds: float | None  # of examples/groove.wav (None: all of its 10 s)
    parity_dtypes: tuple[str, ...]
    peak_dtypes: tuple[str, ...]
    peak_size: int | None  # None: bench_timing's default for the device

    @classmethod
    def for_run(cls, device: str, smoke: bool) -> Plan:
        if smoke:  # small enough for CI on a loaded 2-core machine; float16 has no fast CPU kernels
            return cls(device, True, "tiny", 64, "float32", (1, 2), (1, 2), 1, 1, 1, 3.0, 0.1, 1.0, 3.0,
                       ("bfloat16",), ("bfloat16", "float32"), 512)
        return cls(device, False, "sd15", 512, "float16", (1, 8), (1, 2, 4, 8, 16), 20, 2, 20, 12.0, 0.025, 30.0, None,
                   ("float16", "bfloat16"), ("float16", "bfloat16", "float32"), None)


class Report:
    """The JSON report, rewritten (temp file + rename) after every section."""

    def __init__(self, path: Path, plan: Plan) -> None:
        self.path = path
        self.data: dict = {"plan": asdict(plan), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "sections": {}}
        self.write()

    def section(self, name: str, function, *args):
        """Run ``function(*args)`` as section ``name``; its result or its error goes into the report."""
        say(f"== {name}")
        started = time.perf_counter()
        try:
            result = {"status": "ok", **function(*args)}
        except Exception as error:  # a failed section is a result too: record it, go on
            result = {"status": "failed", "error": f"{type(error).__name__}: {error}",
                      "traceback": traceback.format_exc().splitlines()[-12:]}
            say(f"   FAILED: {result['error']}")
        result["seconds"] = round(time.perf_counter() - started, 2)
        self.data["sections"][name] = result
        self.write()
        say(f"   {result['status']} in {result['seconds']} s")
        return result

    def write(self) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        os.replace(temporary, self.path)


def say(message: str) -> None:
    print(message, flush=True)


# ---- building ----------------------------------------------------------------------------------------


def build_stack(arch: str, dtype: str, device: torch.device):
    """A random-weight stack (built on the CPU, then moved), eval mode, in ``dtype`` on ``device``."""
    from tpos_live.diffusion.random_stacks import build_random_stack, build_tiny_stack

    stack = build_tiny_stack(seed=0) if arch == "tiny" else build_random_stack(arch, seed=0)
    for module in stack.modules().values():
        module.to(device, getattr(torch, dtype))
    return stack


def fast_settings(plan: Plan, batch: int = 1, **extra):
    from tpos_live.config import RenderSettings
    from tpos_live.diffusion.models import fast_defaults

    defaults = fast_defaults({"sd15": "sd15-lcm"}.get(plan.arch, plan.arch))
    return RenderSettings.for_mode("fast", width=plan.size, height=plan.size, batch_frames=batch,
                                   **{**defaults, **extra})


_PROVIDERS: dict[int, object] = {}


def provider_for(stack, text_space):
    """The random full-size TPoS encoder on the stack's device (built once per stack: live and offline
    share it)."""
    if id(stack) in _PROVIDERS:
        return _PROVIDERS[id(stack)]
    from tpos_live.conditioning.checkpoint import random_tpos
    from tpos_live.conditioning.providers import match_token_spread
    from tpos_live.conditioning.tpos_encoder import TPoSConfig

    provider = random_tpos(TPoSConfig(embed_dim=stack.cross_attention_dim, text_family=stack.text_family),
                           device=stack.device)
    match_token_spread(provider.map_model, text_space)
    _PROVIDERS[id(stack)] = provider
    return provider


def graphs_backend_reason(stack) -> str | None:
    """Why the ``torch-cuda-graphs`` backend cannot be timed here, or None."""
    from tpos_live.backends.registry import unavailable_reason
    from tpos_live.names import BACKENDS

    if GRAPHS_BACKEND not in BACKENDS:
        return f"not present: this checkout has no '{GRAPHS_BACKEND}' backend (CUDA graphs of the UNet and decoder)"
    return unavailable_reason(GRAPHS_BACKEND, stack)


# ---- sections ----------------------------------------------------------------------------------------


def environment(plan: Plan, device: torch.device) -> dict:
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    imports = {}
    for module in ("diffusers", "transformers", "av", "tpos_live.diffusion.renderer", "tpos_live.live.engine",
                   "tpos_live.video.writer"):
        try:
            __import__(module)
            imports[module] = "ok"
        except Exception as error:  # recorded: the sections that need it fail with the same error
            imports[module] = f"{type(error).__name__}: {error}"
    info = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "device": str(device), "threads": torch.get_num_threads(), "machine": platform.machine(),
            "packages": packages, "imports": imports}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(gpu=properties.name, gpu_memory_gib=round(properties.total_memory / 2**30, 1),
                    capability=f"{properties.major}.{properties.minor}",
                    multiprocessors=properties.multi_processor_count)
    info["matmul_peak"] = {dtype: matmul_peak(dtype, device, size=plan.peak_size) for dtype in plan.peak_dtypes}
    return info


def parity(plan: Plan, device: torch.device) -> dict:
    """Tiny stack: the same scene and conditions in float32 on the CPU and in each dtype on ``device``."""
    generator = torch.Generator().manual_seed(3)

    def frames(dtype: str, on: torch.device):
        from tpos_live.diffusion.renderer import TPoSRenderer

        stack = build_stack("tiny", dtype, on)
        renderer = TPoSRenderer(stack, fast_settings(Plan.for_run(str(on), True)))
        scene = renderer.prepare_scene(PROMPT, seed=7)
        latents = renderer.render_latents(scene, conditions, torch.ones(2)).float().cpu()
        return latents, renderer.decode(latents.to(on))

    from tpos_live.diffusion.architectures import ARCHITECTURES

    width = ARCHITECTURES["tiny"].unet["cross_attention_dim"]
    conditions = torch.randn(2, 77, width, generator=generator)
    reference_latents, reference = frames("float32", torch.device("cpu"))
    results = {}
    for dtype in plan.parity_dtypes:
        latents, image = frames(dtype, device)
        error = float((latents - reference_latents).norm() / reference_latents.norm())
        pixels = abs(image.astype(int) - reference.astype(int))
        results[dtype] = {"latent_relative_error": error, "pixel_mean_abs": float(pixels.mean()),
                          "pixel_max_abs": int(pixels.max()), "finite": bool(torch.isfinite(latents).all()),
                          "pass": bool(torch.isfinite(latents).all()) and error <= PARITY_TOLERANCE[dtype]}
    return {"reference": "tiny stack, float32 on the CPU, 64x64, 2 frames", "tolerance":
            f"latent relative error at most {PARITY_TOLERANCE} (our choice: half precision over the 4 LCM steps "
            "of a random tiny network whose cross-attention is amplified 8x; bfloat16 keeps 3 fewer mantissa "
            "bits than float16)", "dtypes": results}


def _capture(function, *inputs):
    """A CUDA graph of ``function(*inputs)`` (static inputs): warmed up on a side stream, then
    captured once with ``capture_error_mode="thread_local"``; returns the graph and its output."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            function(*inputs)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        output = function(*inputs)
    return graph, output


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def networks(plan: Plan, device: torch.device, stack) -> dict:
    """UNet and TAESD decoder, eager against graphed, per batch: ms per call and per item, parity."""
    dtype = stack.unet.dtype
    latent = plan.size // stack.vae_scale_factor
    generator = torch.Generator().manual_seed(5)
    unet = lambda x, t, c: stack.unet(x, t, encoder_hidden_states=c).sample  # noqa: E731
    decode = lambda z: stack.taesd.decode(z).sample  # noqa: E731
    graphs_reason = graphs_backend_reason(stack)
    results = {}
    for batch in plan.network_batches:
        x = torch.randn(batch, stack.latent_channels, latent, latent, generator=generator).to(device, dtype)
        t = torch.full((batch,), 500, device=device)
        c = torch.randn(batch, 77, stack.cross_attention_dim, generator=generator).to(device, dtype)
        row = {}
        for name, function, inputs in (("unet", unet, (x, t, c)), ("taesd_decode", decode, (x,))):
            eager_out = function(*inputs)
            times = time_call(lambda f=function, i=inputs: f(*i), device, plan.network_repeats, plan.warmups)
            entry = {"eager_ms": 1000 * min(times), "eager_ms_median": 1000 * sorted(times)[len(times) // 2]}
            if device.type == "cuda":
                graph, graph_out = _capture(function, *inputs)
                graph.replay()
                synchronize(device)
                entry["graph_parity_relative"] = _relative(graph_out, eager_out)
                times = time_call(graph.replay, device, plan.network_repeats, plan.warmups)
                entry["graphed_ms"] = 1000 * min(times)
                entry["graph_speedup"] = entry["eager_ms"] / entry["graphed_ms"]
                del graph
            else:
                entry["graphed"] = "skipped: CUDA graphs need a CUDA device"
            entry["eager_ms_per_item"] = entry["eager_ms"] / batch
            row[name] = entry
        row[GRAPHS_BACKEND] = graphs_reason or _backend_networks(plan, stack, batch, x, t, c, row)
        results[str(batch)] = row
    return {"dtype": str(dtype).removeprefix("torch."), "size": plan.size, "batches": results}


def _backend_networks(plan: Plan, stack, batch, x, t, c, row) -> dict:
    """The torch-cuda-graphs backend on the same inputs: ms per call and parity with eager."""
    from tpos_live.backends.registry import create_backend

    backend = create_backend(GRAPHS_BACKEND, stack, fast_settings(plan, batch))
    device = stack.device
    unet_out = backend.unet(x.float(), t, c)
    eager = stack.unet(x, t, encoder_hidden_states=c).sample
    decoded = backend.decode(x.float())
    eager_decoded = stack.taesd.decode(x).sample
    unet_times = time_call(lambda: backend.unet(x.float(), t, c), device, plan.network_repeats, warmup=2)
    decode_times = time_call(lambda: backend.decode(x.float()), device, plan.network_repeats, warmup=2)
    return {"backend": backend.describe(), "unet_ms": 1000 * min(unet_times),
            "unet_parity_relative": _relative(unet_out, eager),
            "taesd_decode_ms": 1000 * min(decode_times),
            "taesd_parity_relative": _relative(decoded, eager_decoded)}


def _renderer_backends(stack) -> list[str]:
    return ["torch"] + ([] if graphs_backend_reason(stack) else [GRAPHS_BACKEND])


def renderer(plan: Plan, device: torch.device, stack) -> dict:
    """Fast mode through each backend at each batch: fps, per-batch latency, overhead per frame."""
    from bench import PROMPT as BENCH_PROMPT
    from bench import SEED, TimedBackend

    from tpos_live.backends.registry import create_backend
    from tpos_live.diffusion.renderer import TPoSRenderer

    rows, skipped = {}, {}
    reason = graphs_backend_reason(stack)
    if reason:
        skipped[GRAPHS_BACKEND] = reason
    generator = torch.Generator().manual_seed(9)
    for name in _renderer_backends(stack):
        for batch in plan.renderer_batches:
            settings = fast_settings(plan, batch)
            clock = StageClock(device)
            backend = TimedBackend(create_backend(name, stack, settings), clock)
            render = TPoSRenderer(stack, settings, backend=backend)
            scene = render.prepare_scene(BENCH_PROMPT, seed=SEED)
            conditions = torch.randn(plan.renderer_repeats + plan.warmups, batch, 77, stack.cross_attention_dim,
                                     generator=generator)
            watch, times, kernels = Stopwatch(device), [], []
            for index in range(len(conditions)):  # the first ones warm up (graph capture, autotuning)
                synchronize(device)
                clock.reset()
                watch.start()
                render.render(scene, conditions[index], torch.ones(batch))  # ends with frames in host memory
                seconds = watch.stop()
                if index >= plan.warmups:
                    times.append(seconds)
                    kernels.append(sum(clock.seconds.values()))
            best = min(range(len(times)), key=times.__getitem__)
            rows[f"{name}, batch {batch}"] = {
                "backend": backend.describe(), "batch": batch,
                "ms_per_batch": 1000 * times[best], "ms_per_batch_median": 1000 * sorted(times)[len(times) // 2],
                "ms_per_frame": 1000 * times[best] / batch, "fps": batch / times[best],
                "latency_ms": 1000 * times[best],  # conditions in -> the batch's frames in host memory
                "model_ms_per_frame": 1000 * kernels[best] / batch,
                "overhead_ms_per_frame": 1000 * (times[best] - kernels[best]) / batch,
            }
    fastest = {}
    for name in _renderer_backends(stack):
        mine = {key: row for key, row in rows.items() if key.startswith(f"{name},")}
        choice = min(mine.values(), key=lambda row: row["ms_per_frame"])
        fastest[name] = {"batch": choice["batch"], "ms_per_frame": choice["ms_per_frame"], "fps": choice["fps"]}
    return {"size": plan.size, "dtype": plan.dtype, "rows": rows, "skipped": skipped,
            "fastest_batch_per_frame": fastest,
            "note": "model_ms is the UNet and decoder calls as timed on the device (CUDA events) or the "
                    "CPU; overhead is the rest of the frame: guidance arithmetic, casts, the uint8 "
                    "conversion and the download"}


def sync_points(plan: Plan, device: torch.device, stack) -> dict:
    """Synchronising CUDA calls in one fast-mode frame (render and decode), per backend."""
    if device.type != "cuda":
        return {"skipped": "synchronisations are a CUDA notion"}
    from tpos_live.backends.registry import create_backend
    from tpos_live.diffusion.renderer import TPoSRenderer

    results = {}
    condition = torch.randn(1, 77, stack.cross_attention_dim)
    for name in _renderer_backends(stack):
        render = TPoSRenderer(stack, fast_settings(plan), backend=create_backend(name, stack, fast_settings(plan)))
        scene = render.prepare_scene(PROMPT, seed=1)
        for _ in range(2):
            render.render(scene, condition, torch.ones(1))
        synchronize(device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                render.render(scene, condition, torch.ones(1))
            finally:
                torch.cuda.set_sync_debug_mode("default")
        messages = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]
        results[name] = {"per_frame": len(messages), "first": messages[:5]}
    return {"method": "torch.cuda.set_sync_debug_mode('warn') over one render + decode", "backends": results}


def live(plan: Plan, device: torch.device, stack) -> dict:
    """The live engine at 60 fps, batch 1, synthetic sound, a scene switch halfway."""
    return _live(plan, stack, fast_settings(plan, fps=60.0))


def live_keyframes(plan: Plan, device: torch.device, stack) -> dict:
    """The keyframe path (the last step guided, whatever the alias's default) at the top of the fps cap."""
    from dataclasses import replace

    from tpos_live.config import FPS_RANGE

    settings = fast_settings(plan, fps=FPS_RANGE[1])
    settings = replace(settings, delta_step=settings.steps - 1, delta_timestep=None, frames="keyframes")
    return _live(plan, stack, settings)


def _live(plan: Plan, stack, settings) -> dict:
    from bench_live import summarize

    from tpos_live.audio.signals import SyntheticSource, demo_pattern
    from tpos_live.backends.registry import create_backend
    from tpos_live.diffusion.renderer import TPoSRenderer
    from tpos_live.live.engine import LiveEngine
    from tpos_live.live.settings import LiveSettings

    name = _renderer_backends(stack)[-1]
    backend = create_backend(name, stack, settings)
    text_space = TPoSRenderer(stack, settings, backend).text_space()
    provider = provider_for(stack, text_space)
    source = SyntheticSource(demo_pattern(provider.sample_rate), provider.sample_rate)
    engine = LiveEngine(stack, settings, provider, source, PROMPT, live=LiveSettings(hop_seconds=plan.live_hop),
                        backend=backend)
    frames, snapshots, switched_at = [], [], None
    with engine:
        started = time.perf_counter()
        number, _ = engine.wait_frame(0, timeout=300)
        first_frame = time.perf_counter() - started
        engine.prefetch([engine.control.state().with_scene(SECOND_PROMPT)])
        begin = time.monotonic()
        next_snapshot = begin + 1.0
        measured = engine.stats().counters
        while (now := time.monotonic()) - begin < plan.live_seconds:
            if switched_at is None and now - begin >= plan.live_seconds / 2:
                engine.control.set_prompt(SECOND_PROMPT)
                switched_at = now
            newer, frame = engine.wait_frame(number, timeout=0.05)
            if newer != number and frame is not None:
                frames.append(frame)
                number = newer
            if time.monotonic() >= next_snapshot:
                snapshots.append(engine.stats())
                next_snapshot += 1.0
        described = engine.describe_frames()
    ready = [frame.ready for frame in frames]
    gaps = [b - a for a, b in zip(ready, ready[1:], strict=False)]
    after = [g for a, g in zip(ready, gaps, strict=False) if switched_at and a >= switched_at]
    result = summarize(frames, snapshots, plan.live_seconds)
    counters = snapshots[-1].counters
    result.update(backend=backend.describe(), fps_cap=settings.fps, hop_seconds=plan.live_hop,
                  frames_path=described,
                  keyframes_per_second=(counters["keyframes"] - measured["keyframes"]) / plan.live_seconds,
                  unet_calls=counters["unet_calls"] - measured["unet_calls"],
                  first_frame_seconds=first_frame, scene_switches=snapshots[-1].counters.get("scene_switches"),
                  morphs=snapshots[-1].counters.get("morphs"),
                  max_frame_gap_ms=1000 * max(gaps, default=0.0),
                  max_frame_gap_after_switch_ms=1000 * max(after, default=0.0))
    return result


def offline(plan: Plan, device: torch.device, stack) -> dict:
    """examples/groove.wav to an MP4 (conditions, scene, frames, PyAV encoding and muxing)."""
    from tpos_live.audio.decode import decode_audio
    from tpos_live.backends.registry import create_backend
    from tpos_live.diffusion.renderer import TPoSRenderer
    from tpos_live.offline import plan_frames, render_track
    from tpos_live.specs import SceneSpec

    example = Path(__file__).resolve().parent.parent / "examples" / "groove.wav"
    name = _renderer_backends(stack)[-1]
    settings = fast_settings(plan, fps=plan.offline_fps)
    backend = create_backend(name, stack, settings)
    renderer = TPoSRenderer(stack, settings, backend)
    text_space = renderer.text_space()
    provider = provider_for(stack, text_space)
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "check.mp4"
        audio = _excerpt(example, plan.offline_seconds, Path(scratch) / "excerpt.wav")
        source = decode_audio(audio, channels=2)
        frame_plan = plan_frames(settings, provider, text_space, source, say)
        report = render_track(renderer, frame_plan, source, output, SceneSpec(PROMPT), say=say, progress=False)
        size = output.stat().st_size
    return {"backend": backend.describe(), "audio": example.name, "audio_seconds": source.duration,
            "frames": report.frames, "fps_target": plan.offline_fps,
            "seconds": report.seconds, "fps": report.frames / report.seconds, "mp4_bytes": size,
            "includes": "audio encoding, scene preparation, rendering, PyAV encoding and muxing"}


def _excerpt(wav: Path, seconds: float | None, path: Path) -> Path:
    """The first ``seconds`` of ``wav`` as a WAV file at ``path`` (``wav`` itself for None)."""
    if seconds is None:
        return wav
    import wave

    with wave.open(str(wav), "rb") as reader, wave.open(str(path), "wb") as writer:
        writer.setparams(reader.getparams())
        writer.writeframes(reader.readframes(round(seconds * reader.getframerate())))
    return path


def tensorrt_section(plan: Plan, device: torch.device) -> dict:
    """The tensorrt backend on the tiny stack against torch eager, only where tensorrt imports."""
    try:
        import tensorrt
    except Exception as error:
        return {"skipped": f"tensorrt does not import here ({type(error).__name__}: {error}); its PyPI "
                           "packages download from NVIDIA at install time, which this machine cannot reach"}
    from tpos_live.backends.registry import create_backend, unavailable_reason
    from tpos_live.diffusion.renderer import TPoSRenderer

    stack = build_stack("tiny", "float32", device)
    smoke = Plan.for_run(str(device), True)
    reason = unavailable_reason("tensorrt", stack)
    if reason:
        return {"tensorrt": tensorrt.__version__, "skipped": reason}
    conditions = torch.randn(1, 77, stack.cross_attention_dim)
    eager = TPoSRenderer(stack, fast_settings(smoke))
    scene = eager.prepare_scene(PROMPT, seed=2)
    reference = eager.render_latents(scene, conditions, torch.ones(1))
    with tempfile.TemporaryDirectory() as engines:
        backend = create_backend("tensorrt", stack, fast_settings(smoke), engines=engines, say=say)
        engine = TPoSRenderer(stack, fast_settings(smoke), backend=backend)
        latents = engine.render_latents(engine.prepare_scene(PROMPT, seed=2), conditions, torch.ones(1))
    return {"tensorrt": tensorrt.__version__, "backend": backend.describe(),
            "latent_relative_error_vs_torch": _relative(latents, reference)}


def verdicts(report: Report, plan: Plan) -> dict:
    sections = report.data["sections"]
    rows = sections.get("renderer", {}).get("rows", {})
    live_result = sections.get("live", {})
    out = {}
    best = max(rows.values(), key=lambda row: row["fps"], default=None)
    out["throughput"] = {"goal": f">= {GOALS['throughput_fps']:g} fps at 512x512 (any batch)",
                         "measured": best and {k: best[k] for k in ("backend", "batch", "fps")},
                         "pass": None if best is None else best["fps"] >= GOALS["throughput_fps"]}
    latency = live_result.get("latency_ms", {}).get("median")
    fps = live_result.get("fps")
    out["live"] = {"goal": f">= {GOALS['live_fps']:g} fps at batch 1 and <= {GOALS['live_latency_ms']:g} ms "
                           "audio-to-frame (median of fresh frames)",
                   "measured": {"fps": fps, "latency_median_ms": latency,
                                "latency_p95_ms": live_result.get("latency_ms", {}).get("p95")},
                   "pass": None if fps is None or latency is None else
                   fps >= 0.98 * GOALS["live_fps"] and latency <= GOALS["live_latency_ms"]}
    batch1 = [row for row in rows.values() if row["batch"] == 1]
    overhead = min((row["overhead_ms_per_frame"] for row in batch1), default=None)
    out["overhead"] = {"goal": f"<= {GOALS['overhead_ms_per_frame']:g} ms per frame outside the model kernels "
                               "(renderer, batch 1, best backend)",
                       "measured": overhead,
                       "pass": None if overhead is None else overhead <= GOALS["overhead_ms_per_frame"]}
    keyframes = sections.get("live_keyframes", {})
    fps = keyframes.get("fps")
    out["keyframes"] = {"goal": f">= {GOALS['keyframes_fps']:g} fps displayed on the keyframe path at 512x512",
                        "measured": {"fps": fps, "frames_path": keyframes.get("frames_path"),
                                     "keyframes_per_second": keyframes.get("keyframes_per_second"),
                                     "latency_median_ms": keyframes.get("latency_ms", {}).get("median")},
                        "pass": None if fps is None else fps >= GOALS["keyframes_fps"]}
    if plan.smoke:
        for verdict in out.values():
            verdict["note"] = "CPU smoke run (tiny stack, 64x64): the goals are for a GPU at 512x512"
    failed = [name for name, section in sections.items() if section.get("status") == "failed"]
    return {"goals": out, "failed_sections": failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-smoke", action="store_true", help="the tiny stack at 64x64 on the CPU")
    parser.add_argument("--compute-device", default=None, metavar="DEVICE",
                        help="torch device (default cuda, or cpu with --cpu-smoke)")
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json")
    args = parser.parse_args()
    try:
        device = parse_device(args.compute_device or ("cpu" if args.cpu_smoke else "cuda"))
    except ValueError as error:
        parser.error(str(error))
    args.out.mkdir(parents=True, exist_ok=True)
    plan = Plan.for_run(str(device), args.cpu_smoke)
    report = Report(args.out / "gpu_check.json", plan)
    say(f"gpu check: {'CPU smoke' if plan.smoke else 'full'} run on {device}, {plan.arch} at {plan.size}x{plan.size}")
    report.section("environment", environment, plan, device)
    report.section("parity", parity, plan, device)
    holder: dict = {}

    def build() -> dict:
        started = time.perf_counter()
        holder["stack"] = build_stack(plan.arch, plan.dtype, device)
        return {"arch": plan.arch, "dtype": plan.dtype, "build_seconds": time.perf_counter() - started}

    built = report.section("build", build)
    with torch.inference_mode():
        for name, function in (("networks", networks), ("renderer", renderer), ("sync_points", sync_points)):
            if built["status"] == "ok":
                report.section(name, function, plan, device, holder["stack"])
    for name, function in (("live", live), ("live_keyframes", live_keyframes), ("offline", offline)):
        if built["status"] == "ok":
            report.section(name, function, plan, device, holder["stack"])
    report.section("tensorrt", tensorrt_section, plan, device)
    report.data["verdicts"] = verdicts(report, plan)
    report.data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    report.write()
    say(json.dumps(report.data["verdicts"], indent=2, default=str))
    failed = report.data["verdicts"]["failed_sections"]
    say(f"wrote {report.path}; " + (f"failed sections: {', '.join(failed)}" if failed else "every section ran"))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
