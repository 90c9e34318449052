"""What the live pipeline costs per frame outside the models: the real live engine, stand-in models.

Runs :class:`~tpos_live.live.engine.LiveEngine` as the live command does (its encoder, scene and render
threads, latest-wins mailboxes, the per-frame slerp, the loudness envelope, the guidance arithmetic,
the sampler step, the scene cache, the uint8 conversion, the presenter for batches) with a consumer
that reads every frame as the output window does (copies it into its own buffer). Only the networks
are stand-ins, injected through the backend and provider interfaces:

- the UNet and the decoder (:class:`StandInBackend`) cost a fixed time per batch item and return
  preallocated tensors of the real shapes;
- the audio encoder (:class:`StandInEncoder`) costs ``--encode-ms`` per window and returns a new
  random condition each hop.

Where that time goes is ``--standin``:

- ``async`` (the default; :class:`VirtualDevice`): how CUDA behaves. Every stand-in op (the render's
  UNet calls and decode, the scene stage's UNet calls, the encoder) returns at once and queues its
  cost on one virtual GPU's timeline, one op after another whichever thread queued it. The backend
  gives a completion fence after the decode (``fence()``, see ``completion_fence`` in
  ``tpos_live/backends/base.py``); the render stage's finisher waits on it in
  ``PendingFrames.result()`` before converting the frames, as it waits on the download's CUDA
  event on a GPU, so the render thread prepares the next batch while the "GPU" computes this one.
  The encoder waits for its own op at once (the engine reads each condition on the host, a sync).
  The render thread cannot run far ahead: one batch being finished, one waiting for the finisher,
  one rendering, and the fps clock; the JSON's ``device.max_lag_ms`` (queue -> done) shows it.
- ``sync`` (:class:`StandInDevice`): each op sleeps its cost on the calling thread, serial with that
  thread's own work: a backend that blocks until its result is ready, the worst case (and what
  this benchmark did before ``--standin`` existed). Sleeps release the GIL, so other threads run.

The stand-in costs: ``--unet-ms`` per UNet item and ``--decode-ms`` per decoded image; or ``--model-ms``,
the model time of a per-frame render (one guided UNet item and one decoded image), split by
``--decode-share``. ``--frame-path`` picks how frames are made (the engine's choice, as ``live``'s
``--frame-path``): ``auto`` is keyframes in fast mode (one guided step): the UNet runs once per condition
(``--hop``) and a frame costs one decode; ``per-frame`` runs the UNet for every frame. The stack has SD
1.5's geometry (4 latent channels, factor 8, 77 x 768 conditions) with toy networks that never run on
the frame path.

Reported: ``standin``, ``frames_path`` (the engine's line), ``delivered_fps`` (frames the consumer saw per
second), ``keyframes_per_second`` and ``conditions_per_second`` (``keyframes_keep_up``: a keyframe for
every condition, none replaced before the keyframe stage took it), ``unet_items`` (stand-in UNet items in the run),
``host_conversion_ms_per_frame`` (the CPU conversion of one frame to uint8, timed alone after the run: on
CUDA it runs on the device), ``overhead_ms_per_frame`` (the measured frame period minus the stand-in
model time queued per delivered frame), ``stand_in_wait_ms_per_frame`` (sync: the stand-ins' measured sleeps; async: the
device time queued, per frame delivered), ``device`` (async only: busy fraction, max and mean lag
from queuing an op to its completion, the host's fence waits), and audio-to-frame latency
percentiles (the engine's own figure: see Frame in live/frames.py).
Examples, with their targets on the 2-core development CPU (>= 200 fps and <= 2 ms overhead per frame on
the per-frame path; >= 400 fps with a 20 ms UNet on the keyframe path, where it read 315-350: see
docs/benchmarks.md, "Keyframes"):

    flock /tmp/tpos-heavy.lock .venv/bin/python scripts/bench_orchestration.py --size 512 \\
        --model-ms 4 --fps 240 --seconds 8 --frame-path per-frame -o o.json
    flock /tmp/tpos-heavy.lock .venv/bin/python scripts/bench_orchestration.py --size 512 \\
        --unet-ms 20 --decode-ms 1 --fps 960 --seconds 8 -o keyframes.json
"""

from __future__ import annotations

import argparse
import os
import platform
import threading
import time
from dataclasses import replace

import numpy as np
import torch
from bench_timing import print_and_save
from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from tpos_live.audio.signals import SyntheticSource, demo_pattern
from tpos_live.conditioning.base import ConditionTrack, TextSpace
from tpos_live.conditioning.streaming import SegmentGrid
from tpos_live.config import RenderSettings
from tpos_live.diffusion.architectures import ARCHITECTURES, tiny_text_config
from tpos_live.diffusion.frames import FrameDownload
from tpos_live.diffusion.random_stacks import tiny_tokenizer
from tpos_live.diffusion.stack import ModelStack
from tpos_live.live.engine import LiveEngine
from tpos_live.live.settings import LiveSettings
from tpos_live.names import FRAME_PATHS

RATE = 16000
TEXT_DIM = 768  # SD 1.5's condition width: what the per-frame slerp and the UNet input carry


class StandInDevice:
    """Where the stand-ins' model time goes (``--standin``), totalled per kind of op (thread-safe).

    ``sync``: :meth:`run` sleeps the op's cost on the calling thread, serial with that thread's own
    work, like a backend that blocks until its result is ready (the worst case). :meth:`fence` is None.
    """

    name = "sync"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = {}
        self.items: dict[str, int] = {}

    def run(self, kind: str, seconds: float, items: int) -> None:
        started = time.perf_counter()
        time.sleep(seconds)  # releases the GIL, as waiting on a CUDA event does
        self._count(kind, time.perf_counter() - started, items)

    def fence(self, label: str) -> TimeFence | None:
        return None

    def reset(self) -> None:
        with self._lock:
            self.seconds.clear()
            self.items.clear()

    def report(self, elapsed: float, frames: int) -> dict | None:
        return None

    def _count(self, kind: str, seconds: float, items: int) -> None:
        with self._lock:
            self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds
            self.items[kind] = self.items.get(kind, 0) + items


class VirtualDevice(StandInDevice):
    """``async``: one virtual GPU. An op returns at once and queues its cost on the device's timeline
    (``busy_until = max(now, busy_until) + cost``: one GPU runs its ops one after another, whichever
    thread queued them); a fence carries the completion time of everything queued before it, and
    waiting on it sleeps until then (GIL released, as ``torch.cuda.Event.synchronize`` does).

    This is how a CUDA backend behaves: kernel launches return at once, the GPU computes while the
    host prepares the next frame, and the host waits only where it synchronises (the frame download's
    event, the encoder's condition download). Also counts how far ahead of the device the host runs
    (the lag from queuing an op to its completion) and the host's waits on fences, per label.
    """

    name = "async"

    def __init__(self) -> None:
        super().__init__()
        self.busy_until = 0.0  # perf_counter time at which everything queued so far is done
        self.reset()

    def run(self, kind: str, seconds: float, items: int) -> None:
        now = time.perf_counter()
        with self._lock:
            done = self.busy_until = max(now, self.busy_until) + seconds
            self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds
            self.items[kind] = self.items.get(kind, 0) + items
            lag = done - now
            self.ops += 1
            self.lag_total += lag
            self.lag_max = max(self.lag_max, lag)

    def fence(self, label: str) -> TimeFence:
        with self._lock:
            return TimeFence(self.busy_until, self, label)

    def waited(self, label: str, seconds: float) -> None:
        with self._lock:
            self.waits[label] = self.waits.get(label, 0.0) + seconds
            self.wait_max[label] = max(self.wait_max.get(label, 0.0), seconds)

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.ops, self.lag_total, self.lag_max = 0, 0.0, 0.0
            self.waits: dict[str, float] = {}
            self.wait_max: dict[str, float] = {}

    def report(self, elapsed: float, frames: int) -> dict:
        """The device's load and the host's lead over it, over the measured run."""
        with self._lock:
            return {
                "busy_fraction": sum(self.seconds.values()) / elapsed,
                "ops": self.ops,
                "max_lag_ms": 1000 * self.lag_max,  # queued -> done: how far the host ran ahead
                "mean_lag_ms": 1000 * self.lag_total / max(self.ops, 1),
                "fence_wait_ms_per_frame": {k: 1000 * v / max(frames, 1) for k, v in self.waits.items()},
                "fence_wait_max_ms": {k: 1000 * v for k, v in self.wait_max.items()},
            }


class TimeFence:
    """A :class:`~tpos_live.backends.base.Fence` on the virtual device: done at ``done`` (perf_counter)."""

    __slots__ = ("done", "device", "label")

    def __init__(self, done: float, device: VirtualDevice, label: str) -> None:
        self.done, self.device, self.label = done, device, label

    def synchronize(self) -> None:
        started = time.perf_counter()
        if (left := self.done - started) > 0:
            time.sleep(left)  # without the GIL, as a CUDA event's synchronize
        self.device.waited(self.label, time.perf_counter() - started)


class StandInBackend:
    """A :class:`~tpos_live.backends.base.Backend` of fixed cost per batch item on a stand-in device
    (see the module doc). With the virtual device it gives a completion fence (``fence()``).

    Outputs are drawn once per shape and returned as they are: the renderer never writes into a
    backend's output, and a GPU backend's fresh output costs the host nothing either.
    """

    name = "stand-in"
    decoder = "taesd"

    def __init__(self, unet_ms: float, decode_ms: float, device: StandInDevice) -> None:
        self.unet_seconds, self.decode_seconds = unet_ms / 1000, decode_ms / 1000
        self.device = device
        self._outputs: dict[tuple, torch.Tensor] = {}

    def unet(self, sample: torch.Tensor, timestep: torch.Tensor,
             encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        self.device.run("unet", self.unet_seconds * sample.shape[0], sample.shape[0])
        return self._output(tuple(sample.shape), 1.0)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        batch, _, h, w = latents.shape
        self.device.run("decode", self.decode_seconds * batch, batch)
        return self._output((batch, 3, 8 * h, 8 * w), 0.5)

    def fence(self) -> TimeFence | None:
        """The completion of everything queued so far (None for the sleeping stand-ins: they are done)."""
        return self.device.fence("frames")

    def describe(self) -> str:
        how = "queued on one virtual GPU" if self.device.name == "async" else "sleeping"
        return (f"stand-in ({1000 * self.unet_seconds:g} ms per UNet item, {1000 * self.decode_seconds:g} ms "
                f"per decoded image, {how})")

    def _output(self, shape: tuple, spread: float) -> torch.Tensor:
        out = self._outputs.get(shape)
        if out is None:
            out = spread * torch.randn(shape, generator=torch.Generator().manual_seed(0))
            out = self._outputs[shape] = out.clamp(-1, 1)  # a UNet's eps / a decoder's image in [-1, 1]
        return out


class StandInEncoder:
    """A streamable audio provider of fixed cost per window, on a TPoS-like grid (5 segments of one hop)."""

    name = "stand-in encoder"
    random_weights = True
    sample_rate = RATE
    embed_dim = TEXT_DIM

    def __init__(self, encode_ms: float, hop_seconds: float, device: StandInDevice) -> None:
        hop = round(hop_seconds * RATE)
        self.grid = SegmentGrid(hop, hop, 5, RATE)
        self.encode_seconds = encode_ms / 1000
        self.device = device
        self._random = torch.Generator().manual_seed(1)

    def check_compatible(self, text_space: TextSpace) -> None:
        if text_space.dim != TEXT_DIM:
            raise ValueError(f"the stand-in encoder makes {TEXT_DIM}-d conditions, not {text_space.dim}")

    def segment_features(self, segments: np.ndarray) -> torch.Tensor:
        return torch.zeros(len(segments), 8)

    def window_conditions(self, features: torch.Tensor, text_space: TextSpace) -> tuple[torch.Tensor, torch.Tensor]:
        batch = features.shape[0]
        self.device.run("encode", self.encode_seconds * batch, batch)
        if (fence := self.device.fence("encode")) is not None:
            fence.synchronize()  # the engine reads the condition on the host: a sync, as .cpu() is
        tokens = torch.randn(batch, 76, TEXT_DIM, generator=self._random)
        return text_space.with_start_token(tokens), torch.full((batch,), 0.5)

    def encode(self, mono: np.ndarray, text_space: TextSpace) -> ConditionTrack:
        raise NotImplementedError("the stand-in encoder only streams (the live engine's path)")


def geometry_stack() -> ModelStack:
    """SD 1.5's geometry (4 latent channels, factor 8, 768-d text) with toy networks: the UNet and the
    decoder never run (the stand-in backend answers), the text encoder runs once per scene."""
    tiny = ARCHITECTURES["tiny"]
    tokenizer = tiny_tokenizer()
    text = {**tiny_text_config(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id),
            "hidden_size": TEXT_DIM, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 1}
    vae = {**tiny.vae, "block_out_channels": [16, 16, 16, 16], "down_block_types": ["DownEncoderBlock2D"] * 4,
           "up_block_types": ["UpDecoderBlock2D"] * 4, "scaling_factor": 0.18215}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        stack = ModelStack(
            unet=UNet2DConditionModel(**{**tiny.unet, "cross_attention_dim": TEXT_DIM}),
            text_encoder=CLIPTextModel(CLIPTextConfig(**text)), tokenizer=tokenizer,
            vae=AutoencoderKL(**vae), taesd=AutoencoderTiny(**{**tiny.taesd, "scaling_factor": 1.0}),
            scheduler_config=dict(tiny.scheduler), name="SD 1.5 geometry (stand-in networks)",
            random_weights=True, text_family="tiny", default_steps=4, default_guidance=1.0)
    for module in stack.modules().values():
        module.eval()
    return stack


def consume(engine: LiveEngine, seconds: float, image_shape: tuple) -> list:
    """Every frame delivered for ``seconds``, each copied into one buffer as a window's upload would."""
    shown = np.empty(image_shape, np.uint8)
    frames, number = [], engine.frames.peek()[0]
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        newer, frame = engine.wait_frame(number, timeout=left)
        if newer != number and frame is not None:
            np.copyto(shown, frame.image)
            frames.append(frame)
            number = newer
    return frames


def latency_ms(frames: list) -> dict:
    """Audio-to-frame latency: the age on screen of the condition mix each frame shows (the slerp's
    weighted capture time of its conditions, capture latency included), over every frame."""
    ages = np.array([f.ready - f.mix_audio_time for f in frames if f.mix_audio_time is not None]) * 1000
    if not len(ages):
        return {}
    return {"mean": float(ages.mean()), "p50": float(np.percentile(ages, 50)),
            "p90": float(np.percentile(ages, 90)), "p99": float(np.percentile(ages, 99)),
            "max": float(ages.max()), "frames": len(ages)}


def stand_in_costs(args: argparse.Namespace) -> tuple[float, float]:
    """(ms per UNet item, ms per decoded image): --unet-ms/--decode-ms, else --model-ms split by --decode-share."""
    if args.unet_ms is not None:
        return args.unet_ms, args.decode_ms
    return args.model_ms * (1 - args.decode_share), args.model_ms * args.decode_share


def conversion_ms(size: int, batch: int, repeats: int = 50) -> float:
    """Median host time of one frame's conversion to uint8 (``FrameDownload`` on the CPU: clamp, scale,
    round, NaN check), measured alone after the run. On CUDA it runs on the device, so it is the part of
    the CPU's overhead per frame that a GPU host does not pay."""
    download = FrameDownload("cpu")
    images = torch.rand(batch, 3, size, size) * 2 - 1
    latents = torch.zeros(batch, 4, size // 8, size // 8)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        download.start(images, latents).result()
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times)) / batch


def run(args: argparse.Namespace) -> dict:
    device = VirtualDevice() if args.standin == "async" else StandInDevice()
    unet_ms, decode_ms = stand_in_costs(args)
    backend = StandInBackend(unet_ms, decode_ms, device)
    stack = geometry_stack()
    settings = replace(RenderSettings.for_mode("fast", width=args.size, height=args.size),
                       fps=args.fps, batch_frames=args.batch, frames=args.frame_path)
    provider = StandInEncoder(args.encode_ms, args.hop, device)
    source = SyntheticSource(demo_pattern(RATE), RATE)
    engine = LiveEngine(stack, settings, provider, source, "a photo of a beach", backend=backend,
                        live=LiveSettings(hop_seconds=args.hop))
    with engine:
        engine.wait_frame(0, timeout=120)
        consume(engine, args.warmup, (args.size, args.size, 3))
        before = engine.stats().counters
        device.reset()
        started = time.perf_counter()
        frames = consume(engine, args.seconds, (args.size, args.size, 3))
        elapsed = time.perf_counter() - started
        after = engine.stats().counters
        model_wait = {kind: 1000 * device.seconds[kind] / max(len(frames), 1) for kind in device.seconds}
        unet_items = device.items.get("unet", 0)
        device_report = device.report(elapsed, len(frames))
        frames_path = engine.describe_frames()
    period_ms = 1000 * elapsed / max(len(frames), 1)
    stand_in_ms = model_wait.get("unet", 0.0) + model_wait.get("decode", 0.0)
    made = {name: after[name] - before[name] for name in ("keyframes", "conditions", "dropped_conditions")}
    return {
        "standin": args.standin, "size": args.size, "batch": args.batch, "fps_cap": args.fps,
        "seconds": args.seconds, "frames_path": frames_path, "frame_path_flag": args.frame_path,
        "model_ms": unet_ms + decode_ms, "unet_ms": unet_ms, "decode_ms": decode_ms,
        "encode_ms": args.encode_ms, "hop_seconds": args.hop,
        "delivered_fps": len(frames) / elapsed,
        "frames": len(frames),
        "keyframes_per_second": made["keyframes"] / elapsed,
        "conditions_per_second": made["conditions"] / elapsed,
        "keyframes_keep_up": None if not engine.uses_keyframes else (  # None: the per-frame path
            made["dropped_conditions"] == 0 and made["keyframes"] >= made["conditions"] - 1),
        "unet_items": unet_items,
        "frame_period_ms": period_ms,
        "overhead_ms_per_frame": period_ms - stand_in_ms,
        "stand_in_wait_ms_per_frame": model_wait,
        "overhead_beyond_measured_waits_ms": period_ms - stand_in_ms,
        "host_conversion_ms_per_frame": conversion_ms(args.size, args.batch),
        "device": device_report,
        "latency_ms": latency_ms(frames),
        "dropped_frames": after["dropped_frames"] - before["dropped_frames"],
        "dropped_conditions": after["dropped_conditions"] - before["dropped_conditions"],
        "render_errors": after["render_errors"], "bad_frames": after["bad_frames"],
        "backend": backend.describe(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(), "load_average": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="frame width and height")
    parser.add_argument("--fps", type=float, default=240.0, help="frame-rate cap")
    parser.add_argument("--batch", type=int, default=1, help="frames rendered per batch")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured run, after the warm-up")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds run before measuring")
    parser.add_argument("--model-ms", type=float, default=4.0,
                        help="stand-in model time of a per-frame render (one UNet item + one decode)")
    parser.add_argument("--decode-share", type=float, default=0.25, help="the decoder's part of --model-ms")
    parser.add_argument("--unet-ms", type=float, help="stand-in time per UNet item (with --decode-ms: "
                                                      "replaces --model-ms and --decode-share)")
    parser.add_argument("--decode-ms", type=float, help="stand-in time per decoded image (with --unet-ms)")
    parser.add_argument("--frame-path", choices=FRAME_PATHS, default="auto",
                        help="how frames are made: auto (keyframes with one guided step, the fast mode "
                             "here), keyframes, per-frame")
    parser.add_argument("--encode-ms", type=float, default=5.0, help="stand-in audio encoder time per window")
    parser.add_argument("--hop", type=float, default=0.25, help="encoder hop, seconds")
    parser.add_argument("--standin", choices=("async", "sync"), default="async",
                        help="async: the stand-ins queue on one virtual GPU and the host waits at the "
                             "download (as CUDA does); sync: they sleep on the calling thread (a blocking backend)")
    parser.add_argument("-o", "--output", help="write the JSON here too")
    args = parser.parse_args()
    if not 0.0 <= args.decode_share <= 1.0:
        parser.error("--decode-share must be in 0..1")
    if (args.unet_ms is None) != (args.decode_ms is None):
        parser.error("give --unet-ms and --decode-ms together (or --model-ms and --decode-share)")
    if args.unet_ms is not None and min(args.unet_ms, args.decode_ms) < 0:
        parser.error("--unet-ms and --decode-ms must be >= 0")
    report = run(args)
    print_and_save(report, args.output)


if __name__ == "__main__":
    main()
