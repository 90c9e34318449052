"""An hour on stage: the live engine under a show's load, with memory and latency recorded per minute.

The engine (the tiny stack, random weights, a random TPoS encoder, 256x256, built through the session
like ``tpos-live live``) captures from a PulseAudio null sink of its own (tests/pulse.py) into which
the test signal (silence, noise, 440 Hz, 1760 Hz, 2 s each) or ``--file`` is played, over and over.
Meanwhile: OSC traffic (an audio-guidance knob at 10 Hz and a state query each second), a preset
switch by OSC every ``--preset-every`` seconds, a recording of the whole run, and the sink unplugged
(unloaded) for ``--unplug-seconds`` and plugged back every ``--unplug-every`` minutes.

The JSON (rewritten each minute, atomically, so a crash leaves what was measured) has per minute:
RSS (median, least and most of its 1 s readings) and where it is at the minute's end (anonymous vs file
pages, glibc's heap in use vs free), the audio-to-frame latency p50/p95 (each frame that is the first
to use a new condition; the seconds around an unplug are left out), fps and fault counts; the slopes
of RSS, of its floor, of its parts and of p95; every
unplug with how long the engine took to render from the sound again; and the targets' verdicts:

- RSS growth <= 1 %/h after the first ``--warmup-minutes`` (a least-squares slope over the minutes'
  medians; the slope of their least readings, the floor a leak would raise, is reported beside it);
- latency p95 after the first ``--baseline-minutes`` within +-10 % of theirs;
- zero crashes (stage failures, render/encoder/scene errors, the run ending early);
- every unplug recovered (frames from new sound within ``--recover-seconds`` of the replug).

    flock /tmp/tpos-heavy.lock .venv/bin/python scripts/soak.py --minutes 60 -o soak.json
    .venv/bin/python scripts/soak.py --minutes 3 --warmup-minutes 1 --baseline-minutes 1 \\
        --unplug-every 1 -o soak_short.json          # a short run that still unplugs twice
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.pulse: the PulseAudio null sink the device tests use

from bench_timing import memory_parts_mb, rss_mb  # noqa: E402

from tests.media import write_wav  # noqa: E402
from tests.pulse import DEVICE, PulseServer, PulseUnavailable  # noqa: E402
from tpos_live.audio.signals import demo_pattern  # noqa: E402
from tpos_live.backends.spec import BackendSpec  # noqa: E402
from tpos_live.control.spec import ControlSpec, OutputSpec  # noqa: E402
from tpos_live.diffusion.models import ModelSpec  # noqa: E402
from tpos_live.fileio import write_text_atomically  # noqa: E402
from tpos_live.live.presets import Preset, save_preset  # noqa: E402
from tpos_live.session import LiveSession, LiveSpec, SourceSpec, load_models  # noqa: E402
from tpos_live.specs import ConditioningSpec, SceneSpec  # noqa: E402

PLAY_RATE = 44100
PRESETS = (("dawn", "a misty forest at dawn"), ("city", "neon city at night"), ("sea", "a stormy sea"))
RSS_TARGET_PCT_PER_HOUR = 1.0
LATENCY_TOLERANCE = 0.10
SETTLE_AFTER_UNPLUG = 10.0  # seconds after a recovery whose latencies are left out (the pipeline refills)
FAULTS = ("render_errors", "bad_frames", "encoder_errors", "scene_errors")



def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(minute, value)`` points, per hour (None with fewer than 2)."""
    if len(points) < 2:
        return None
    minutes, values = np.asarray(points, np.float64).T
    return float(np.polyfit(minutes, values, 1)[0] * 60.0)


class FrameLatencies(threading.Thread):
    """Follows the engine's frames; each first frame of a new condition gives one latency. Holds only
    the current minute (the soak's own bookkeeping must not be what grows)."""

    def __init__(self, engine) -> None:
        super().__init__(name="soak-latency", daemon=True)
        self.engine, self.stop = engine, threading.Event()
        self._lock = threading.Lock()
        self._samples: list[tuple[float, float]] = []
        self._frames = 0

    def run(self) -> None:
        number, last_audio = 0, None
        while not self.stop.is_set():
            newer, frame = self.engine.wait_frame(number, timeout=0.2)
            if newer == number or frame is None:
                continue
            number = newer
            with self._lock:
                self._frames += 1
                if frame.audio_time is not None and frame.audio_time != last_audio:
                    last_audio = frame.audio_time
                    self._samples.append((frame.ready, frame.ready - frame.audio_time))

    def roll(self, excluded: list[tuple[float, float]]) -> tuple[np.ndarray, int]:
        """This minute's latencies (seconds, outside the ``excluded`` spans) and frame count; starts anew."""
        with self._lock:
            samples, frames, self._samples, self._frames = self._samples, self._frames, [], 0
        kept = [v for t, v in samples if not any(a <= t < b for a, b in excluded)]
        return np.asarray(kept, np.float32), frames


class OscTraffic(threading.Thread):
    """A controller's chatter: an audio-guidance knob at 10 Hz, a state query each second."""

    def __init__(self, port: int) -> None:
        from pythonosc.udp_client import SimpleUDPClient

        super().__init__(name="soak-osc", daemon=True)
        self.client, self.stop, self.sent = SimpleUDPClient("127.0.0.1", port), threading.Event(), 0
        self.rng = random.Random(0)

    def run(self) -> None:
        tick = 0
        while not self.stop.wait(0.1):
            self.client.send_message("/tpos/guidance/audio", 4.0 + 8.0 * self.rng.random())
            if tick % 10 == 0:
                self.client.send_message("/tpos/query", [])
            tick += 1
            self.sent += 1

    def preset(self, name: str) -> None:
        self.client.send_message("/tpos/preset", name)
        self.sent += 1


class Player:
    """Plays the sound into the sink over and over (a player ends with its file, or with an unplug)."""

    def __init__(self, pulse: PulseServer, path: Path) -> None:
        self.pulse, self.path, self.process, self.starts = pulse, path, None, 0

    def keep_playing(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.process = self.pulse.play(self.path)
            self.starts += 1


def minute_row(minute: int, rss: list[float], latencies: np.ndarray, frames: int, stats) -> dict:
    ms = 1000.0 * latencies
    return {"minute": minute, "rss_mb": round(float(np.median(rss)), 2), "rss_min_mb": round(min(rss), 2),
            "rss_max_mb": round(max(rss), 2), "fps": round(frames / 60.0, 2),
            "latency_samples": int(len(ms)),
            "latency_p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "latency_p95_ms": round(float(np.percentile(ms, 95)), 1) if len(ms) else None, **stats}


def verdicts(minutes: list[dict], per_minute: list[np.ndarray], args, unplugs: list[dict], faults: int,
             errors: list[str], finished: bool) -> dict:
    settled = [m for m in minutes if m["minute"] > args.warmup_minutes]

    def rss_slope_of(value) -> float | None:
        return slope_per_hour([(m["minute"], value(m)) for m in settled])

    rss_points = [(m["minute"], m["rss_mb"]) for m in settled]
    rss_slope = slope_per_hour(rss_points)
    rss_pct = None if rss_slope is None else 100.0 * rss_slope / rss_points[0][1]

    def p95(arrays: list[np.ndarray]) -> float | None:
        values = np.concatenate(arrays) if arrays else np.zeros(0)
        return round(1000.0 * float(np.percentile(values, 95)), 1) if len(values) else None

    base = p95([a for m, a in zip(minutes, per_minute, strict=True) if m["minute"] <= args.baseline_minutes])
    later = p95([a for m, a in zip(minutes, per_minute, strict=True) if m["minute"] > args.baseline_minutes])
    change = None if base is None or later is None else round((later - base) / base, 4)
    p95_points = [(m["minute"], m["latency_p95_ms"]) for m in minutes if m["latency_p95_ms"] is not None]
    parts = {part: rss_slope_of(lambda m, part=part: m["memory_mb"][part])
             for part in (minutes[-1]["memory_mb"] if minutes else {})}
    return {
        "rss": {"slope_mb_per_hour": rss_slope, "growth_pct_per_hour": rss_pct, "after_minute": args.warmup_minutes,
                "parts_slope_mb_per_hour": parts, "floor_slope_mb_per_hour": rss_slope_of(lambda m: m["rss_min_mb"]),
                "target_pct_per_hour": RSS_TARGET_PCT_PER_HOUR,
                "pass": rss_pct is not None and rss_pct <= RSS_TARGET_PCT_PER_HOUR},
        "latency_p95": {"baseline_ms": base, "later_ms": later, "change": change,
                        "slope_ms_per_hour": slope_per_hour(p95_points), "tolerance": LATENCY_TOLERANCE,
                        "baseline_minutes": args.baseline_minutes,
                        "pass": change is not None and abs(change) <= LATENCY_TOLERANCE},
        "crashes": {"faults": faults, "errors": errors[:20], "finished": finished,
                    "pass": finished and faults == 0 and not errors},
        "unplugs": {"count": len(unplugs), "recovered": sum(1 for u in unplugs if u["recovered"]),
                    "pass": all(u["recovered"] for u in unplugs)},
    }


def run(args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="tpos-soak-"))
    pulse = PulseServer(work / "pulse")
    pulse.start()
    reports: list[tuple[float, str, str]] = []
    try:
        return soak(args, work, pulse, lambda level, message: reports.append((time.monotonic(), level, message)),
                    reports)
    finally:
        pulse.stop()


def soak(args, work: Path, pulse: PulseServer, report, reports) -> dict:
    signal = demo_pattern(PLAY_RATE)(0, 16 * PLAY_RATE)[:, 0]
    sound = args.file or write_wav(work / "signal.wav", signal, rate=PLAY_RATE)
    for name, prompt in PRESETS:
        save_preset(Preset(name, prompt), work / "presets")
    recording = args.record or work / "soak.mp4"
    scene = SceneSpec(PRESETS[0][1], overrides={"width": args.size, "height": args.size})
    model = ModelSpec(model="tiny", device="cpu", dtype="float32")
    conditioning = ConditioningSpec(encoder="random")
    models = load_models(model, BackendSpec(), conditioning, scene, say=lambda m: report("info", m), progress=False)
    spec = LiveSpec(scene=scene, model=model, conditioning=conditioning,
                    source=SourceSpec(kind="device", device=DEVICE),
                    control=ControlSpec(osc_port=0, presets=work / "presets"), outputs=OutputSpec(record=recording))
    player = Player(pulse, Path(sound))
    player.keep_playing()
    state = {"minutes": [], "per_minute": [], "unplugs": [], "finished": False}
    excluded: list[tuple[float, float]] = []
    session = LiveSession(spec, models, report=report)
    session.start()
    latencies = FrameLatencies(session.engine)
    latencies.start()
    osc = OscTraffic(session.controls.osc.port)
    osc.start()
    started = time.monotonic()
    next_preset, preset_index, next_unplug = args.preset_every, 0, 60.0 * args.unplug_every
    last_counters, rss, stages = dict(session.engine.stats().counters), [], {}
    try:
        while time.monotonic() - started < 60.0 * args.minutes:
            time.sleep(1.0)
            elapsed = time.monotonic() - started
            rss.append(rss_mb())
            for name, ms in session.engine.stats().stage_ms.items():  # each second's mean stage times
                stages.setdefault(name, []).append(ms)
            player.keep_playing()
            if elapsed >= next_preset:
                preset_index += 1
                osc.preset(PRESETS[preset_index % len(PRESETS)][0])
                next_preset += args.preset_every
            if elapsed >= next_unplug and elapsed + args.recover_seconds < 60.0 * args.minutes:
                state["unplugs"].append(unplug(session.engine, pulse, player, args, started, excluded))
                next_unplug += 60.0 * args.unplug_every
            if elapsed >= 60.0 * (len(state["minutes"]) + 1):
                stats = session.engine.stats()
                counters = stats.counters
                values, frames = latencies.roll(excluded)
                state["per_minute"].append(values)
                state["minutes"].append(minute_row(len(state["minutes"]) + 1, rss, values, frames, {
                    "faults": sum(counters[k] - last_counters[k] for k in FAULTS),
                    "dropped_frames": counters["dropped_frames"] - last_counters["dropped_frames"],
                    "overflows": stats.overflows, "device_losses": stats.device_losses,
                    "input_latency_ms": stats.input_latency_ms, "memory_mb": memory_parts_mb(),
                    "stage_ms": {name: round(float(np.mean(v)), 1) for name, v in stages.items()}}))
                last_counters, rss, stages = dict(counters), [], {}
                write_text_atomically(args.output, json.dumps(summary(args, state, session, reports, osc, player),
                                                              indent=2) + "\n")
                row = state["minutes"][-1]
                print(f"minute {row['minute']}: RSS {row['rss_mb']:.0f} MB, latency p95 {row['latency_p95_ms']} ms, "
                      f"{row['fps']} fps, {len(state['unplugs'])} unplugs", flush=True)
        state["finished"] = True
    finally:
        osc.stop.set()
        latencies.stop.set()
        written = session.stop()
        result = summary(args, state, session, reports, osc, player)
        result["recording"] = describe_recording(written)
        write_text_atomically(args.output, json.dumps(result, indent=2) + "\n")
    return result


def unplug(engine, pulse: PulseServer, player: Player, args, started: float, excluded: list) -> dict:
    """Unload the sink for a while, load it again, and wait for frames from new sound."""
    at = time.monotonic()
    pulse.unload_sink()
    time.sleep(args.unplug_seconds)
    noticed = engine.source.state == "lost"
    pulse.load_sink()
    replugged = time.monotonic()
    player.keep_playing()
    number = engine.frames.peek()[0]
    recovered_at = None
    deadline = replugged + args.recover_seconds
    while time.monotonic() < deadline:
        player.keep_playing()
        newer, frame = engine.wait_frame(number, timeout=0.5)
        if engine.source.state == "running" and frame is not None and frame.audio_time is not None \
                and frame.audio_time > replugged:
            recovered_at = time.monotonic()
            break
        number = newer
    end = (recovered_at or deadline) + SETTLE_AFTER_UNPLUG
    excluded.append((at, end))
    return {"at_minute": round((at - started) / 60.0, 2), "lost_noticed": noticed,
            "recovered": recovered_at is not None,
            "recovery_seconds": None if recovered_at is None else round(recovered_at - replugged, 2)}


def summary(args, state: dict, session, reports, osc, player) -> dict:
    stats = session.engine.stats()
    faults = sum(stats.counters[k] for k in FAULTS)
    errors = [message for _, level, message in reports if level == "error"]
    return {
        "what": "live soak: tiny stack (random weights), random TPoS encoder, "
                f"{args.size}x{args.size}, PulseAudio null-sink capture of "
                + (str(args.file) if args.file else "the test signal"),
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "torch_threads": torch.get_num_threads(), "cores": os.cpu_count()},
        "settings": {"minutes": args.minutes, "preset_every_s": args.preset_every,
                     "unplug_every_min": args.unplug_every, "unplug_seconds": args.unplug_seconds,
                     "warmup_minutes": args.warmup_minutes, "baseline_minutes": args.baseline_minutes,
                     "latency_left_out": f"each unplug until {SETTLE_AFTER_UNPLUG:.0f} s after its recovery"},
        "complete": state["finished"],
        "minutes": state["minutes"],
        "unplugs": state["unplugs"],
        "totals": {"frames": stats.frames, "dropped_frames": stats.dropped_frames, "overflows": stats.overflows,
                   "device_losses": stats.device_losses, "osc_messages": osc.sent, "player_starts": player.starts,
                   "warnings": sum(1 for _, level, _ in reports if level == "warning")},
        "verdicts": verdicts(state["minutes"], state["per_minute"], args, state["unplugs"], faults, errors,
                             state["finished"]),
    }


def describe_recording(path: Path | None) -> dict:
    if path is None or not Path(path).exists():
        return {"written": False}
    from tpos_live.video.probe import probe_media

    info = probe_media(path)
    return {"written": True, "path": str(path), "bytes": Path(path).stat().st_size,
            "video_frames": info.frames, "video_seconds": round(info.video_duration, 2),
            "audio_seconds": round(info.audio_duration, 2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=60.0, help="how long (60)")
    p.add_argument("--file", type=Path, help="play this file into the sink instead of the test signal")
    p.add_argument("--size", type=int, default=256, help="frame width and height (256)")
    p.add_argument("--preset-every", type=float, default=30.0, metavar="SECONDS", help="preset switch period (30)")
    p.add_argument("--unplug-every", type=float, default=10.0, metavar="MINUTES", help="unplug period (10)")
    p.add_argument("--unplug-seconds", type=float, default=3.0, help="how long the sink stays unplugged (3)")
    p.add_argument("--recover-seconds", type=float, default=30.0, help="how long a recovery may take (30)")
    p.add_argument("--warmup-minutes", type=float, default=5.0, help="RSS slope from this minute on (5)")
    p.add_argument("--baseline-minutes", type=float, default=10.0, help="latency p95 baseline span (10)")
    p.add_argument("--record", type=Path, help="where the recording goes (default: a temporary folder)")
    p.add_argument("-o", "--output", type=Path, default=Path("soak.json"), help="the JSON (soak.json)")
    args = p.parse_args()
    if not 0 < args.minutes <= 24 * 60 or args.unplug_every <= 0 or args.preset_every <= 0:
        p.error("--minutes must be in (0, 1440], --unplug-every and --preset-every positive")
    try:
        result = run(args)
    except PulseUnavailable as error:
        print(f"error: the soak captures from a PulseAudio null sink, which cannot run here: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result["verdicts"], indent=2))
    return 0 if all(v["pass"] for v in result["verdicts"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
