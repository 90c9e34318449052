"""Frames per second of the live renderer against the baselines, on the same weights and resolution.

In one run, on one full-size architecture with random weights (cost does not depend on their values;
the JSON says so), at one resolution and dtype:

1. ``fast``: our renderer's fast mode (cached z^delta, one guided step, TAESD), through a backend, one UNet
   call per frame;
   ``keyframes``: the same renderer as an offline render runs it by default: one UNet call per audio
   condition (a keyframe every ``--hop``, 0.25 s: the audio's meaning updated 4 times a second) and every
   frame at ``--fps`` composed from the two keyframes around it and decoded. Its fps are delivered frames
   per second with that update rate, against one UNet call per frame in the other rows;
2. ``paper``: the paper procedure through diffusers' ``SemanticStableDiffusionPipeline``: 50 PLMS
   steps, text guidance 7.5, the audio condition as ``editing_prompt_embeddings``, full VAE, one frame
   per call;
3. ``streamdiffusion``: StreamDiffusion's one-step txt2img with TAESD, run by the Python of a virtual
   environment that has ``streamdiffusion`` (it pins diffusers 0.24), on the same saved weights;
   skipped with a message when none is given.

Per mode: frames per second and milliseconds per frame by stage (encoder, UNet, decode, host copy,
other); the ratios between the modes; the UNet stage's achieved FLOP rate against this machine's
matmul peak in that dtype, measured here; and an op-level profile of one UNet call. The audio encoder
runs once per condition (every 1.79 s of audio, on its own thread live), so it is timed per update
and not counted in the frame rate.

Run heavy measurements alone (other people measure on this machine too)::

    flock /tmp/tpos-heavy.lock .venv/bin/python scripts/bench.py --arch sd15 --size 256 \\
        --streamdiffusion-python ~/.cache/tpos-live/streamdiffusion-venv/bin/python -o bench.json

``--compute-device cuda`` runs every mode (StreamDiffusion too) on the GPU, timed with CUDA events;
``--dtype float16`` is there for it. Fast-mode figures are per frame and per batch (a batch's time
over its frames), named apart.

This file also serves as StreamDiffusion's worker (``--streamdiffusion-worker``): it then imports
only torch, diffusers and streamdiffusion, never ``tpos_live``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from bench_timing import (
    StageClock,
    Stopwatch,
    frame_stats,
    matmul_peak,
    memory_bandwidth,
    parse_device,
    print_and_save,
    synchronize,
    time_call,
    to_uint8_frames,
)

PROMPT = "a photo of a beautiful beach with a blue sky"
SEED = 42


def unet_flops(unet, sample, timestep, conditions) -> tuple[int, dict[str, int]]:
    """FLOPs of one UNet call in all and per top-level block, attention included (counted with
    diffusers' plain attention processor, whose bmm/baddbmm the counter sees; the fused CPU
    attention kernel it does not)."""
    import torch
    from diffusers.models.attention_processor import AttnProcessor
    from torch.utils.flop_counter import FlopCounterMode

    processors = unet.attn_processors
    unet.set_attn_processor(AttnProcessor())
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            unet(sample, timestep, encoder_hidden_states=conditions)
    finally:
        unet.set_attn_processor(processors)
    counts = counter.get_flop_counts()
    per_block = {name: sum(counts.get(f"{type(unet).__name__}.{name}", {}).values())
                 for name, _ in unet_blocks(unet)}
    return counter.get_total_flops(), per_block


def unet_blocks(unet) -> list[tuple[str, object]]:
    """The UNet's resolution levels: down blocks, the middle block, up blocks."""
    blocks = [(f"down_blocks.{i}", block) for i, block in enumerate(unet.down_blocks)]
    blocks.append(("mid_block", unet.mid_block))
    return blocks + [(f"up_blocks.{i}", block) for i, block in enumerate(unet.up_blocks)]


def profile_unet(call, device) -> dict:
    """Self milliseconds of one UNet call by kind of op (convolution, matmul, attention, ...): the
    CPU's time on the CPU, the kernels' time on a CUDA device."""
    import torch

    kinds = {
        "convolution": ("convolution", "conv"),
        "matmul": ("addmm", "::mm", "bmm", "linear", "matmul"),
        "attention": ("scaled_dot_product", "flash_attention", "softmax"),
        "normalization": ("group_norm", "layer_norm", "native_group_norm", "native_layer_norm"),
        "layout and copies": ("copy_", "contiguous", "clone", "to_dense", "reorder", "cat"),
    }
    cuda = device.type == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        call()
        synchronize(device)
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        name = event.key
        kind = next((k for k, words in kinds.items() if any(w in name for w in words)),
                    "elementwise and other")
        microseconds = event.self_device_time_total if cuda else event.self_cpu_time_total
        totals[kind] = totals.get(kind, 0.0) + microseconds / 1000
    return {kind: round(ms, 1) for kind, ms in sorted(totals.items(), key=lambda kv: -kv[1])}


# --- our side ----------------------------------------------------------------------------------------


def build_stack(arch: str, dtype_name: str, weights_dir: Path | None, device=None):
    """The random full-size stack in ``dtype`` on ``device``; saved to ``weights_dir`` for
    StreamDiffusion (once, from the CPU copy: the same weights whatever the device)."""
    import torch

    from tpos_live.diffusion.folders import save_stack
    from tpos_live.diffusion.random_stacks import build_random_stack, build_tiny_stack

    stack = build_tiny_stack(0) if arch == "tiny" else build_random_stack(arch, seed=0)
    for module in stack.modules().values():
        module.to(getattr(torch, dtype_name))
    if weights_dir is not None and not (weights_dir / "model_index.json").is_file():
        save_stack(stack, weights_dir)
    if device is not None and device.type != "cpu":
        for module in stack.modules().values():
            module.to(device)
    return stack


def bench_encoder(repeats: int, device) -> dict:
    """One condition update of the full-size TPoS encoder on ``device`` (the stack's, as live): one
    new segment's CNN, then LSTM, attention and MAP over the window (float32, as the provider runs it)."""
    import numpy as np
    import torch

    from tpos_live.conditioning.checkpoint import random_tpos
    from tpos_live.conditioning.tpos_encoder import TPoSConfig

    config = TPoSConfig()
    provider = random_tpos(config, seed=0, device=device)
    segment = np.random.default_rng(0).standard_normal((1, config.segment_samples)) * 0.1
    window = torch.randn(1, config.segments, config.embed_dim, device=device)
    watch, times = Stopwatch(device), []
    for _ in range(repeats + 1):
        watch.start()
        features = provider.segment_features(segment)
        provider.window_tokens(torch.cat([window[:, 1:], features[None].to(device)], dim=1))
        times.append(watch.stop())
    del provider
    return {"ms_per_update": 1000 * statistics.median(times[1:]), "update_every_seconds":
            config.hop_samples / config.spectrogram.sample_rate, "dtype": "float32", "device": str(device)}


class TimedBackend:
    """A backend whose UNet and decode calls are timed as stages (the renderer cannot tell)."""

    def __init__(self, backend, clock: StageClock) -> None:
        self.inner, self.name, self.decoder = backend, backend.name, backend.decoder
        self.unet = clock.wrap(backend.unet, "unet")
        self.decode = clock.wrap(backend.decode, "decode")
        self.describe = backend.describe


def bench_fast(stack, args, backend_name: str, batch: int, encoder: dict) -> dict:
    """Our renderer's fast mode, ``batch`` frames per call (slerp-filled frames of one interval).

    Each timed call renders and decodes one batch; the figures per batch and per frame (a batch's
    time over its ``batch`` frames) are reported apart, with every stage per frame.
    """
    import torch

    from tpos_live.backends.registry import create_backend
    from tpos_live.config import RenderSettings
    from tpos_live.diffusion.models import fast_defaults
    from tpos_live.diffusion.renderer import TPoSRenderer

    device = stack.device
    defaults = fast_defaults({"sd15": "sd15-lcm"}.get(args.arch, args.arch))
    settings = RenderSettings.for_mode("fast", width=args.size, height=args.size, batch_frames=batch,
                                       **defaults)
    clock = StageClock(device)
    backend = TimedBackend(create_backend(backend_name, stack, settings), clock)
    renderer = TPoSRenderer(stack, settings, backend=backend)
    watch = Stopwatch(device)
    watch.start()
    scene = renderer.prepare_scene(PROMPT, seed=SEED)
    prepare_seconds = watch.stop()
    conditions = torch.randn(args.fast_frames + 1, batch, 77, stack.cross_attention_dim,
                             generator=torch.Generator().manual_seed(0))
    batch_seconds, clocks = [], []
    calls, items = renderer.unet_calls, renderer.unet_batch_items
    decode_watch = Stopwatch(device)
    for index in range(args.fast_frames + 1):  # the first is a warm-up
        synchronize(device)
        clock.reset()
        watch.start()
        latents = renderer.render_latents(scene, conditions[index], torch.ones(batch))
        decode_watch.start()
        renderer.decode(latents)  # ends in the host copy, which waits for the device
        decode_region = decode_watch.stop()
        seconds = watch.stop()
        stages = dict(clock.seconds)
        stages["host copy"] = max(0.0, decode_region - stages["decode"])  # uint8 + to host memory
        if index:
            batch_seconds.append(seconds)
            clocks.append(stages)
    calls, items = renderer.unet_calls - calls, renderer.unet_batch_items - items
    result = frame_stats(batch_seconds, clocks, frames_per_batch=batch)
    result.update(
        backend=backend.describe(), sampler=settings.sampler, steps=settings.steps,
        guided_from_step=renderer.first_guided, text_guidance=settings.text_guidance, decoder="taesd",
        batch_frames=batch, unet_calls_per_batch=calls / (args.fast_frames + 1), unet_batch=items // calls,
        scene_prepare_seconds=prepare_seconds, encoder=encoder,
    )
    return result


def bench_keyframes(stack, args, backend_name: str, encoder: dict) -> dict:
    """Frames composed from keyframes (``tpos_live.offline.FrameRenderer``, as a render runs them): a keyframe
    every ``args.hop`` seconds, frames at ``args.fps``, decoded one by one.

    One timed unit is one hop: its new keyframe's UNet call and the hop's frames (composed and decoded);
    the first hop (which also makes the keyframe it starts from) is a warm-up.
    """
    from bench_render import hop_plan

    from tpos_live.backends.registry import create_backend
    from tpos_live.config import RenderSettings
    from tpos_live.diffusion.models import fast_defaults
    from tpos_live.diffusion.renderer import TPoSRenderer
    from tpos_live.offline import FrameRenderer

    frames_per_hop = round(args.fps * args.hop)
    if abs(frames_per_hop - args.fps * args.hop) > 1e-9:
        return {"skipped": f"--fps {args.fps:g} x --hop {args.hop:g} is not a whole number of frames per keyframe"}
    defaults = fast_defaults({"sd15": "sd15-lcm"}.get(args.arch, args.arch))
    settings = RenderSettings.for_mode("fast", width=args.size, height=args.size, fps=args.fps, **defaults)
    clock = StageClock(stack.device)
    backend = TimedBackend(create_backend(backend_name, stack, settings), clock)
    renderer = TPoSRenderer(stack, settings, backend=backend)
    if not renderer.uses_keyframes:
        return {"skipped": renderer.describe_frames()}
    hops = args.fast_frames + 1
    plan = hop_plan(stack.cross_attention_dim, hops * args.hop, args.fps, args.hop)
    watch = Stopwatch(stack.device)
    watch.start()
    frames = FrameRenderer(renderer, renderer.prepare_scene(PROMPT, seed=SEED), plan)
    prepare_seconds = watch.stop()
    hop_seconds, clocks = [], []
    calls = renderer.unet_calls
    for hop in range(hops):
        synchronize(stack.device)
        clock.reset()
        watch.start()
        frames.render(hop * frames_per_hop, (hop + 1) * frames_per_hop)  # ends in the last frame's host copy
        seconds = watch.stop()
        if hop:
            hop_seconds.append(seconds)
            clocks.append(dict(clock.seconds))
    keyframes = renderer.unet_calls - calls
    result = frame_stats(hop_seconds, clocks, frames_per_batch=frames_per_hop)
    result.update(
        backend=backend.describe(), frames=renderer.describe_frames(1 / args.hop), sampler=settings.sampler,
        steps=settings.steps, guided_from_step=renderer.first_guided, decoder="taesd", fps_clock=args.fps,
        keyframes_per_second=1 / args.hop, keyframes_made=keyframes, unet_calls_per_frame=1 / frames_per_hop,
        unet_batch=1, scene_prepare_seconds=prepare_seconds, encoder=encoder,
    )
    return result


def unet_efficiency(stack, args, fast: dict, peak: dict) -> dict:
    """The fast mode's UNet call: FLOPs, achieved rate against the peak, where its time goes, and
    how batch size and layout change it."""
    import torch

    unet = stack.unet
    dtype, device = unet.dtype, unet.device
    latent = args.size // stack.vae_scale_factor

    def inputs(batch):
        generator = torch.Generator().manual_seed(1)
        sample = torch.randn(batch, stack.latent_channels, latent, latent, generator=generator)
        conditions = torch.randn(batch, 77, stack.cross_attention_dim, generator=generator)
        return sample.to(device, dtype), torch.full((batch,), 500, device=device), conditions.to(device, dtype)

    flops, block_flops = unet_flops(unet, *inputs(1))
    seconds = fast["stage_ms"]["unet"] / 1000 * fast["batch_frames"] / fast["unet_batch"]
    achieved = fast["unet_batch"] * flops / seconds / 1e12
    weight_bytes = sum(p.numel() * p.element_size() for p in unet.parameters())
    bandwidth = memory_bandwidth(device)
    result = {
        "gflop_per_call_batch1": flops / 1e9, "fast_mode_unet_batch": fast["unet_batch"],
        "ms_per_call": seconds * 1000, "achieved_tflops": achieved,
        "peak_tflops": peak["tflops"], "fraction_of_peak": achieved / peak["tflops"],
        "weights_gb": weight_bytes / 1e9, "read_bandwidth_gb_s": bandwidth,
        "ms_to_read_weights_once": 1000 * weight_bytes / bandwidth / 1e9,
    }
    channels_last = unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    layout = torch.channels_last if channels_last else torch.contiguous_format

    def timed(batch, repeats=2):
        sample, t, c = inputs(batch)
        sample = sample.contiguous(memory_format=layout)
        with torch.inference_mode():
            return min(time_call(lambda: unet(sample, t, encoder_hidden_states=c), device, repeats))

    by_batch = {}
    for batch in args.efficiency_batches:
        best = timed(batch)
        by_batch[str(batch)] = {"ms_per_item": 1000 * best / batch, "tflops": batch * flops / best / 1e12}
    result["by_batch"] = by_batch
    result["layout"] = "channels_last" if channels_last else "contiguous"
    result["blocks_batch1"] = time_blocks(unet, inputs(1), layout, block_flops)
    sample, t, c = inputs(1)
    with torch.inference_mode():
        result["profile_ms_by_kind_batch1"] = profile_unet(
            lambda: unet(sample.contiguous(memory_format=layout), t, encoder_hidden_states=c), device)
    # the other layout, for comparison (the module is switched back after)
    other = torch.contiguous_format if channels_last else torch.channels_last
    unet.to(memory_format=other)
    layout = other
    best = timed(1)
    result["other_layout_batch1"] = {"layout": "contiguous" if channels_last else "channels_last",
                                     "ms_per_item": 1000 * best, "tflops": flops / best / 1e12}
    unet.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return result


def time_blocks(unet, inputs, layout, block_flops: dict[str, int]) -> dict:
    """Per resolution level: best ms of two calls, GFLOP, achieved TFLOP/s, weight MB, and FLOPs per
    weight byte (low values: the level waits on memory, not on the matrix units)."""
    import torch

    sample, t, c = inputs
    clock = StageClock(unet.device)
    handles = _hooks(clock, [(block, name) for name, block in unet_blocks(unet)])
    best: dict[str, float] = {}
    try:
        with torch.inference_mode():
            for _ in range(3):
                clock.reset()
                unet(sample.contiguous(memory_format=layout), t, encoder_hidden_states=c)
                for name, seconds in clock.seconds.items():
                    best[name] = min(best.get(name, float("inf")), seconds)
    finally:
        for handle in handles:
            handle.remove()
    blocks = {}
    for name, block in unet_blocks(unet):
        weight_bytes = sum(p.numel() * p.element_size() for p in block.parameters())
        flops = block_flops.get(name, 0)
        blocks[name] = {"ms": 1000 * best[name], "gflop": flops / 1e9, "tflops": flops / best[name] / 1e12,
                        "weights_mb": weight_bytes / 1e6,
                        "flop_per_weight_byte": flops / max(weight_bytes, 1)}
    return blocks


def bench_paper(stack, args, encoder: dict) -> dict:
    """The paper procedure, one frame per call of diffusers' SEGA pipeline."""
    import diffusers
    import torch
    from diffusers import SemanticStableDiffusionPipeline

    from tpos_live.config import RenderSettings
    from tpos_live.diffusion.renderer import TPoSRenderer

    for module in stack.modules().values():  # the pipeline as diffusers runs it: default layout
        module.to(memory_format=torch.contiguous_format)
    settings = RenderSettings.for_mode("paper", width=args.size, height=args.size)
    warmup = TPoSRenderer(stack, settings).first_guided  # steps before t < delta (the official param_t)
    scheduler_class = getattr(diffusers, stack.scheduler_config["_class_name"])
    pipe = SemanticStableDiffusionPipeline(
        vae=stack.vae, text_encoder=stack.text_encoder, tokenizer=stack.tokenizer, unet=stack.unet,
        scheduler=scheduler_class.from_config(stack.scheduler_config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    clock = StageClock(stack.device)
    stages = [(stack.unet, "unet"), (stack.vae.decoder, "decode"), (stack.text_encoder, "text")]
    handles = _hooks(clock, stages)
    pipe.image_processor.postprocess = clock.wrap(pipe.image_processor.postprocess, "host copy")
    frame_seconds, clocks = [], []
    watch = Stopwatch(stack.device)
    try:
        for index in range(args.paper_frames):
            condition = torch.randn(1, 77, stack.cross_attention_dim,
                                    generator=torch.Generator().manual_seed(index)).to(stack.device, stack.dtype)
            synchronize(stack.device)
            clock.reset()
            watch.start()
            with torch.inference_mode():
                pipe(PROMPT, height=args.size, width=args.size, num_inference_steps=settings.steps,
                     guidance_scale=settings.text_guidance, generator=torch.Generator().manual_seed(SEED),
                     output_type="np", editing_prompt_embeddings=condition,
                     edit_guidance_scale=settings.audio_guidance, edit_warmup_steps=warmup,
                     edit_threshold=settings.threshold, edit_momentum_scale=settings.momentum_scale,
                     edit_mom_beta=settings.momentum_beta)
            frame_seconds.append(watch.stop())
            clocks.append(dict(clock.seconds))
    finally:
        for handle in handles:
            handle.remove()
    result = frame_stats(frame_seconds, clocks)
    result.update(pipeline="diffusers SemanticStableDiffusionPipeline", scheduler=stack.scheduler_config[
        "_class_name"], steps=settings.steps, text_guidance=settings.text_guidance, edit_warmup_steps=warmup,
        unet_calls_per_frame=clock.calls.get("unet", 0), unet_batch=3, decoder="vae", encoder=encoder)
    return result


def _hooks(clock: StageClock, modules) -> list:
    return [handle for module, stage in modules for handle in clock.hook(module, stage)]


# --- StreamDiffusion (runs in its own virtual environment) ------------------------------------------


def bench_streamdiffusion(args, weights_dir: Path) -> dict:
    command = [args.streamdiffusion_python, __file__, "--streamdiffusion-worker",
               "--weights", str(weights_dir),
               "--size", str(args.size), "--dtype", args.dtype, "--frames", str(args.fast_frames),
               "--compute-device", args.compute_device]
    environment = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, capture_output=True, text=True, env=environment)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        return {"skipped": f"StreamDiffusion's run failed: {' | '.join(tail)}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def streamdiffusion_worker(args) -> None:
    """StreamDiffusion 0.1.1 one-step txt2img with TAESD, on ``--compute-device``, in this process's
    environment (the same timing as our side: CUDA events on a GPU)."""
    import streamdiffusion
    import torch
    from diffusers import (
        AutoencoderKL,
        AutoencoderTiny,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from streamdiffusion import StreamDiffusion
    from transformers import CLIPTokenizerFast
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    dtype = getattr(torch, args.dtype)
    device = parse_device(args.compute_device)
    weights = Path(args.weights)
    # Component by component: our saved tokenizer is tokenizer.json only (transformers 5), which the
    # fast class reads and diffusers 0.24's from_pretrained refuses for a pipeline that names the slow one.
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(weights / "vae", torch_dtype=dtype),
        text_encoder=_text_encoder(weights / "text_encoder", dtype),
        tokenizer=CLIPTokenizerFast.from_pretrained(weights / "tokenizer"),
        unet=UNet2DConditionModel.from_pretrained(weights / "unet", torch_dtype=dtype),
        scheduler=PNDMScheduler.from_pretrained(weights / "scheduler"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False).to(device)
    stream = StreamDiffusion(pipe, t_index_list=[0], torch_dtype=dtype, width=args.size, height=args.size,
                             cfg_type="none")
    stream.device = device
    stream.vae = AutoencoderTiny.from_pretrained(Path(args.weights) / "taesd", torch_dtype=dtype).to(device)
    stream.prepare(PROMPT, num_inference_steps=50, guidance_scale=0.0, seed=SEED)
    clock = StageClock(device)
    clock.hook(stream.unet, "unet")
    clock.hook(stream.vae.decoder, "decode")
    frame_seconds, clocks = [], []
    watch, copy_watch = Stopwatch(device), Stopwatch(device)
    for index in range(args.frames + 1):
        synchronize(device)
        clock.reset()
        watch.start()
        with torch.inference_mode():
            image = stream.txt2img()
            copy_watch.start()
            to_uint8_frames(image)
        copied = copy_watch.stop()
        seconds = watch.stop()
        if index:
            frame_seconds.append(seconds)
            clocks.append({**clock.seconds, "host copy": copied})
    import diffusers

    result = frame_stats(frame_seconds, clocks)
    result.update(package=f"streamdiffusion {getattr(streamdiffusion, '__version__', '0.1.1')}",
                  diffusers=diffusers.__version__, steps=1, t_index_list=[0], cfg_type="none",
                  decoder="taesd",
                  unet_calls_per_frame=clock.calls.get("unet", 0))
    print(json.dumps(result))


def _text_encoder(folder: Path, dtype):
    """CLIPTextModel saved by transformers 5 (keys without the ``text_model.`` prefix older ones want)."""
    from safetensors.torch import load_file
    from transformers import CLIPTextConfig, CLIPTextModel

    model = CLIPTextModel(CLIPTextConfig.from_pretrained(folder))
    state = load_file(folder / "model.safetensors")
    state = {key if key.startswith("text_model.") else f"text_model.{key}": value
             for key, value in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [key for key in missing if "position_ids" not in key]:
        raise RuntimeError(f"text encoder weights do not fit: missing {missing}, unexpected {unexpected}")
    return model.to(dtype).eval()


# --- report --------------------------------------------------------------------------------------------


def table(report: dict) -> str:
    """The report as a Markdown table (stage times are per frame: a batch's over its frames)."""
    rows = ["| mode | fps | ms/frame | frames/batch | ms/batch | encoder ms/update | UNet ms | decode ms "
            "| host copy ms | other ms | UNet TFLOP/s (% of peak) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for mode, result in report["modes"].items():
        if "skipped" in result:
            rows.append(f"| {mode} | skipped: {result['skipped']} | | | | | | | | | |")
            continue
        stages = result["stage_ms"]
        encoder = result.get("encoder", {}).get("ms_per_update")
        cells = [f"{result['fps']:.3g}", f"{1000 * result['seconds_per_frame']:.0f}",
                 str(result["frames_per_batch"]), f"{1000 * result['seconds_per_batch']:.0f}",
                 f"{encoder:.0f}" if encoder is not None else "-"]
        cells += [f"{stages.get(s, 0.0):.0f}" for s in ("unet", "decode", "host copy")]
        cells.append(f"{stages['other'] + stages.get('text', 0.0):.0f}")
        rate = result.get("unet_tflops")
        cells.append(f"{rate:.2f} ({100 * result['unet_fraction_of_peak']:.0f}%)" if rate else "-")
        rows.append(f"| {mode} | " + " | ".join(cells) + " |")
    lines = ["\n".join(rows), ""]
    if any(mode.startswith("keyframes") for mode in report["modes"]):
        lines.append(f"- keyframes: delivered frames per second at {report['fps']:g} fps with the audio's meaning "
                     f"updated {1 / report['hop']:g} times a second (one UNet call per keyframe; frames/batch: "
                     "frames per keyframe); fast and StreamDiffusion: one UNet call per frame")
    for name, ratio in report["ratios"].items():
        lines.append(f"- {name}: {ratio:.1f}x")
    efficiency = report.get("unet_efficiency")
    if efficiency:
        lines.append(f"- UNet stage (fast, batch 1): {efficiency['gflop_per_call_batch1']:.0f} GFLOP/frame, "
                     f"{efficiency['achieved_tflops']:.2f} TFLOP/s achieved = "
                     f"{100 * efficiency['fraction_of_peak']:.0f}% of the measured {report['dtype']} "
                     "matmul peak "
                     f"({efficiency['peak_tflops']:.2f} TFLOP/s)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="sd15", choices=("sd15", "sd-turbo", "tiny"),
                        help="full-size architecture, random weights (tiny: a smoke test of this script)")
    parser.add_argument("--size", type=int, default=256, help="frame width and height (default 256)")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--compute-device", default="cpu", metavar="DEVICE",
                        help="torch device for every mode, StreamDiffusion's too: cpu, cuda or cuda:N "
                             "(default cpu; CUDA regions are timed with CUDA events)")
    parser.add_argument("--backends", nargs="+", default=["torch-bf16", "torch-compiled"],
                        help="our renderer's backends to time (default torch-bf16 torch-compiled)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4],
                        help="fast-mode frames per batch to time (slerp-filled frames; default 1 4)")
    parser.add_argument("--fast-frames", type=int, default=5, help="frames (batches) timed in fast mode")
    parser.add_argument("--paper-frames", type=int, default=1, help="frames timed in the paper procedure")
    parser.add_argument("--skip-paper", action="store_true")
    parser.add_argument("--skip-keyframes", action="store_true", help="no keyframes row")
    parser.add_argument("--fps", type=float, default=24.0, help="keyframes row: frames per second (24)")
    parser.add_argument("--hop", type=float, default=0.25,
                        help="keyframes row: seconds between audio conditions, one keyframe each (0.25)")
    parser.add_argument("--efficiency-batches", type=int, nargs="*", default=[1, 4],
                        help="UNet batch sizes to time for the efficiency section")
    parser.add_argument("--streamdiffusion-python", help="Python of a virtual env with streamdiffusion")
    parser.add_argument("--weights", type=Path, help="where the random weights are saved for StreamDiffusion "
                                                     "(default ~/.cache/tpos-live/bench-ARCH-DTYPE)")
    parser.add_argument("-o", "--output", type=Path, help="write the JSON here too")
    parser.add_argument("--streamdiffusion-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, default=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        parse_device(args.compute_device)
    except ValueError as error:
        parser.error(str(error))
    if args.streamdiffusion_worker:
        streamdiffusion_worker(args)
        return
    run(args)


def run(args) -> None:
    import torch

    say = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    device = parse_device(args.compute_device)
    weights_dir = None
    if args.streamdiffusion_python:
        weights_dir = args.weights or Path(f"~/.cache/tpos-live/bench-{args.arch}-{args.dtype}").expanduser()
    load_before = os.getloadavg()
    say("measuring the matmul peak")
    peak = matmul_peak(args.dtype, device)
    say(f"  {peak['tflops']:.2f} TFLOP/s ({args.dtype} on {device})")
    say(f"building the {args.arch} stack (random weights)")
    stack = build_stack(args.arch, args.dtype, weights_dir, device)
    say("timing the audio encoder")
    encoder = bench_encoder(repeats=3, device=device)
    modes = {}
    for backend in args.backends:
        for batch in args.batch:
            mode = f"fast ({backend})" + (f", batch {batch}" if batch > 1 else "")
            say(f"timing {mode}")
            modes[mode] = bench_fast(stack, args, backend, batch, encoder)
            prepared = modes[mode]["scene_prepare_seconds"]
            say(f"  {modes[mode]['fps']:.3g} fps ({1000 * modes[mode]['seconds_per_batch']:.0f} ms per batch of "
                f"{batch}), scene prepared in {prepared:.1f} s")
    if not args.skip_keyframes:
        for backend in args.backends:
            mode = f"keyframes ({backend})"
            say(f"timing {mode}")
            modes[mode] = bench_keyframes(stack, args, backend, encoder)
            if "fps" in modes[mode]:
                say(f"  {modes[mode]['fps']:.3g} fps delivered, {1 / args.hop:g} keyframes/s")
    say("UNet efficiency")
    first_fast = next(mode for mode in modes if mode.startswith("fast"))
    efficiency = unet_efficiency(stack, args, modes[first_fast], peak)
    if args.skip_paper:
        modes["paper"] = {"skipped": "--skip-paper"}
    else:
        say(f"timing the paper procedure ({args.paper_frames} frame(s))")
        modes["paper"] = bench_paper(stack, args, encoder)
        say(f"  {modes['paper']['seconds_per_frame']:.1f} s/frame")
    del stack
    if device.type == "cuda":
        torch.cuda.empty_cache()  # StreamDiffusion's process loads the same weights on the same GPU
    if args.streamdiffusion_python:
        say("timing StreamDiffusion")
        modes["streamdiffusion"] = bench_streamdiffusion(args, weights_dir)
    else:
        modes["streamdiffusion"] = {"skipped": "no --streamdiffusion-python given (it needs its own virtual "
                                               "environment: diffusers 0.24)"}
    peak_after = matmul_peak(args.dtype, device)
    # The peak is the best of the two measurements: interference only ever lowers it.
    best_peak = max(peak["tflops"], peak_after["tflops"])
    efficiency["peak_tflops"] = best_peak
    efficiency["fraction_of_peak"] = efficiency["achieved_tflops"] / best_peak
    flops = efficiency["gflop_per_call_batch1"] * 1e9
    for mode, result in modes.items():
        if "stage_ms" not in result:
            continue
        # UNet items per frame: fast mode's one guided step has one; the others say how many calls
        # of which batch they made
        items = 1 if mode.startswith("fast") else result["unet_calls_per_frame"] * result.get("unet_batch", 1)
        if not result["stage_ms"].get("unet"):
            continue
        result["unet_tflops"] = items * flops / (result["stage_ms"]["unet"] / 1000) / 1e12
        result["unet_fraction_of_peak"] = result["unet_tflops"] / best_peak
    report = {
        "arch": args.arch, "random_weights": True, "size": f"{args.size}x{args.size}", "dtype": args.dtype,
        "compute_device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": _cpu_name(),
        "machine": platform.machine(), "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "matmul_peak": peak, "matmul_peak_after": peak_after, "modes": modes,
        "ratios": _ratios(modes), "unet_efficiency": efficiency, "fps": args.fps, "hop": args.hop,
    }
    print_and_save(report, args.output)
    print(table(report))


def _ratios(modes: dict) -> dict[str, float]:
    fps = {mode: result["fps"] for mode, result in modes.items() if "fps" in result}
    ratios = {}
    fast_modes = [mode for mode in fps if mode.startswith(("fast", "keyframes"))]
    pairs = [(fast, other) for fast in fast_modes for other in ("paper", "streamdiffusion")]
    pairs += [(mode, mode.replace("keyframes", "fast")) for mode in fast_modes if mode.startswith("keyframes")]
    for a, b in [*pairs, ("streamdiffusion", "paper")]:
        if a in fps and b in fps:
            ratios[f"{a} / {b} fps"] = fps[a] / fps[b]
    return ratios


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
