"""Evaluate videos: the spec, the networks it needs (loaded once), one streamed pass per video, the table
and the JSON.

    report = evaluate(EvaluationSpec(videos=(Path("a.mp4"),), metrics=("reactivity", "flicker")))
    print(format_table(report)); write_json(report, Path("scores.json"))
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tpos_live.errors import UserError
from tpos_live.evaluation import signals
from tpos_live.evaluation.objects import ObjectAccuracy
from tpos_live.evaluation.reader import VideoInfo, iter_frames, small_grey, video_info
from tpos_live.fileio import write_text_atomically
from tpos_live.mini.world import SCENE_NAMES, Turn, read_timeline
from tpos_live.names import CLIP_L14_FAMILY, DEFAULT_METRICS, METRICS, OBJECT_LAG_SECONDS
from tpos_live.preflight import check_conditioning

if TYPE_CHECKING:
    from tpos_live.audio.decode import Audio

Say = Callable[[str], None]
AUDIO_METRICS = ("reactivity", "clip-audio")
SIGNAL_RATE = 22050  # the signal metrics' audio rate: loudness and onsets need no more
NETWORK_METRICS = {"clip-text", "clip-audio", "is", "fvd"}  # the metrics that load networks
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v")


@dataclass(frozen=True)
class EvaluationSpec:
    """What to evaluate and with what (defaults: docs/evaluation.md).

    Attributes:
        videos: the videos, each scored on its own.
        metrics: names from :data:`tpos_live.names.METRICS`.
        audio: the sound the videos should follow (None: each video's own track).
        prompt: the text clip-text compares the frames with.
        prompts: one text per video instead (the paper's "The photo of <class>" of each clip's class).
        reference_videos: a folder of real videos, fvd's reference set.
        clip_model, is_model, fvd_model: the networks (tpos_live.evaluation.networks; "tiny": random).
        encoder: clip-audio's TPoS checkpoint (None: the default for CLIP ViT-L/14; "random": untrained).
        device: where the networks run (auto, cpu, cuda, cuda:N).
        sample_fps: frames per second of video the image networks see (clip-text, clip-audio, is).
        max_lag_seconds: reactivity's lag window, +-.
        objects: object-accuracy's timeline, the story's JSON (``examples/story.json``): the mini world's
            object each stretch of the sound should show.
        scene: the mini world's scene the prompt asked for (object-accuracy then scores it too).
        object_lag_seconds: object-accuracy counts a frame from this long after each change of object on.
    """

    videos: tuple[Path, ...]
    metrics: tuple[str, ...] = DEFAULT_METRICS
    audio: Path | None = None
    prompt: str | None = None
    prompts: tuple[str, ...] | None = None
    reference_videos: Path | None = None
    clip_model: str = "openai/clip-vit-large-patch14"
    is_model: str = "google/vit-base-patch16-224"
    fvd_model: str = "MCG-NJU/videomae-base"
    encoder: str | None = None
    device: str = "auto"
    sample_fps: float = 2.0
    max_lag_seconds: float = 0.5
    objects: Path | None = None
    scene: str | None = None
    object_lag_seconds: float = OBJECT_LAG_SECONDS

    def __post_init__(self) -> None:
        if not self.videos:
            raise ValueError("give at least one video")
        unknown = [name for name in self.metrics if name not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r}: choose from {', '.join(METRICS)}")
        if not self.metrics:
            raise ValueError(f"give at least one metric ({', '.join(METRICS)})")
        if self.prompts is not None and len(self.prompts) != len(self.videos):
            raise ValueError(f"give one prompt per video: {len(self.prompts)} prompts, {len(self.videos)} videos")
        if "clip-text" in self.metrics and not all(p and p.strip() for p in self.prompts_per_video()):
            raise ValueError("clip-text compares the frames with a prompt: give --prompt TEXT")
        if "fvd" in self.metrics and self.reference_videos is None:
            raise ValueError("fvd compares the videos with real ones: give --reference-videos DIR")
        if not self.sample_fps > 0:
            raise ValueError(f"sample_fps must be positive, got {self.sample_fps}")
        if not 0 <= self.max_lag_seconds <= 5:
            raise ValueError(f"max_lag_seconds must be in [0, 5], got {self.max_lag_seconds}")
        if "object-accuracy" in self.metrics and self.objects is None:
            raise ValueError("object-accuracy compares the frames with the story's timeline: give --objects FILE")
        if self.scene is not None and self.scene not in SCENE_NAMES:
            raise ValueError(f"unknown scene {self.scene!r}: the mini world's are {', '.join(SCENE_NAMES)}")
        if not 0 <= self.object_lag_seconds <= 10:
            raise ValueError(f"object_lag_seconds must be in [0, 10], got {self.object_lag_seconds}")

    def prompts_per_video(self) -> tuple[str | None, ...]:
        return self.prompts if self.prompts is not None else (self.prompt,) * len(self.videos)


@dataclass
class VideoResult:
    video: Path
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"video": str(self.video), "metrics": self.metrics, "details": self.details}


@dataclass
class EvaluationReport:
    results: list[VideoResult]
    pooled: dict[str, float]  # the set's scores (is and fvd over all videos' samples; means of the rest)
    random_weights: list[str]  # networks that have random weights (their numbers mean nothing)


def evaluate(spec: EvaluationSpec, say: Say = print, progress: bool = True) -> EvaluationReport:
    """Score every video of ``spec``.

    1. check every input (videos, audio, reference folder) before any network loads;
    2. load the networks the metrics need, once;
    3. stream each video once through every metric; then the pooled scores of the set.
    """
    infos = [video_info(path) for path in spec.videos]
    if "clip-audio" in spec.metrics:
        check_conditioning(spec.encoder)
    references = reference_videos(spec.reference_videos) if "fvd" in spec.metrics else []
    timeline = read_objects(spec.objects) if "object-accuracy" in spec.metrics else None
    sound = None
    if spec.audio is not None:
        from tpos_live.audio.decode import decode_audio

        sound = decode_audio(spec.audio)  # UserError now, not after the first video; decoded once for all
    elif any(name in spec.metrics for name in AUDIO_METRICS):
        for info in infos:
            if not info.has_audio:
                raise UserError(f"video '{info.path}' has no audio track and {_audio_metrics(spec)} needs the "
                                "sound: pass --audio FILE")
    networks = _Networks(spec, say, progress) if set(spec.metrics) & NETWORK_METRICS else None
    reference_features = networks.reference_features(references) if "fvd" in spec.metrics else None
    results = [_evaluate_video(spec, info, prompt, sound, networks, reference_features, progress, timeline)
               for info, prompt in zip(infos, spec.prompts_per_video(), strict=True)]
    pooled = _pooled(spec, results, networks, reference_features)
    return EvaluationReport(results, pooled, networks.random if networks else [])


def _audio_metrics(spec: EvaluationSpec) -> str:
    return " and ".join(name for name in spec.metrics if name in AUDIO_METRICS)


def read_objects(path: Path) -> list[Turn]:
    """The story's timeline at ``path``; UserError when it cannot be read or is not one."""
    try:
        return read_timeline(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UserError(f"--objects '{path}': {error}: give the story's timeline (examples/story.json)") from None


def reference_videos(folder: Path | None) -> list[VideoInfo]:
    """The videos in ``folder`` (by suffix, sorted). UserError when it is not a folder or holds none."""
    if folder is None or not Path(folder).is_dir():
        raise UserError(f"--reference-videos '{folder}' is not a folder: give a folder of real videos")
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not paths:
        raise UserError(f"--reference-videos '{folder}' holds no videos ({', '.join(VIDEO_SUFFIXES)})")
    return [video_info(path) for path in paths]


def _mono(sound: Audio | None, info: VideoInfo, rate: int) -> np.ndarray:
    """The sound the video should follow (``sound``, the --audio decoded; else its own track) at ``rate``."""
    from tpos_live.audio.decode import decode_audio, resample

    if sound is not None:
        return resample(sound, rate, channels=1).mono()
    return decode_audio(info.path, sample_rate=rate, channels=1).mono()


def _evaluate_video(spec: EvaluationSpec, info: VideoInfo, prompt: str | None, sound: Audio | None, networks,
                    reference_features, progress: bool, timeline: list[Turn] | None = None) -> VideoResult:
    result = VideoResult(info.path)
    signal = signals.FrameDifferences() if {"reactivity", "flicker"} & set(spec.metrics) else None
    objects = ObjectAccuracy(timeline, spec.object_lag_seconds, spec.scene) if timeline is not None else None
    every = max(1, round(info.fps / spec.sample_fps)) if info.fps else 1
    collectors = networks.collectors(every) if networks else {}
    count = 0
    for index, rgb in enumerate(iter_frames(info, progress)):
        if signal is not None:
            signal.add(small_grey(rgb))
        for collector in collectors.values():
            collector.add(index, rgb)
        if objects is not None:
            objects.add(rgb)
        count = index + 1
    if count == 0:
        raise UserError(f"video '{info.path}' has no frames: give a video with pictures in it")
    fps = info.fps or 1.0
    result.details.update(frames=count, fps=fps, width=info.width, height=info.height,
                          audio=str(spec.audio or info.path))
    if "reactivity" in spec.metrics:
        times = np.arange(count) / fps
        drive = signals.audio_drive(_mono(sound, info, SIGNAL_RATE), SIGNAL_RATE, times)
        try:
            score = signals.reactivity(np.array(signal.change), drive, fps, spec.max_lag_seconds)
        except ValueError as error:
            raise UserError(f"video '{info.path}': {error}") from None
        result.metrics.update(reactivity=score.value, sync_lag_ms=score.lag_ms)
        result.details["reactivity_parts"] = score.correlations
    if signal is not None:
        result.details["mean_change"] = float(np.mean(signal.change[1:])) if count > 1 else 0.0
    if "flicker" in spec.metrics:
        result.metrics["flicker"] = signal.flicker()
        result.details["second_difference_mean"] = signal.second_difference_mean()
    if objects is not None:
        metrics, details = objects.scores(fps)
        result.metrics.update(metrics)
        result.details.update(details)
    if networks:
        networks.score(info, prompt, sound, result, collectors, reference_features)
    return result


def _pooled(spec: EvaluationSpec, results: list[VideoResult], networks, reference_features) -> dict[str, float]:
    pooled: dict[str, float] = {}
    for name in results[0].metrics:
        values = [r.metrics[name] for r in results if name in r.metrics and math.isfinite(r.metrics[name])]
        if values:
            pooled[name] = float(np.mean(values))
    if networks and "is" in spec.metrics:
        pooled["is"], pooled["is_std"] = networks.pooled_inception_score()
    if networks and "fvd" in spec.metrics:
        pooled["fvd"] = networks.pooled_fvd(reference_features)
    return pooled


class _Networks:
    """The networks ``spec``'s metrics need, loaded once, and what they kept of the videos seen."""

    def __init__(self, spec: EvaluationSpec, say: Say, progress: bool) -> None:
        from tpos_live.evaluation import networks as nets
        from tpos_live.runtime import resolve_device

        self.device, _ = resolve_device(spec.device, "float32")
        self.random: list[str] = []
        self.probabilities: list[np.ndarray] = []
        self.video_features: list[np.ndarray] = []
        wanted = set(spec.metrics)
        if wanted & {"clip-text", "clip-audio"}:
            self.clip, self.tokenizer = nets.load_clip(spec.clip_model, self.device, progress)
            self._note(nets.network_folder(nets.CLIP, spec.clip_model, progress), spec.clip_model, say)
        if "clip-audio" in wanted:
            self.encoder = self._load_encoder(spec, say)
        if "is" in wanted:
            self.classifier = nets.load_classifier(spec.is_model, self.device, progress)
            self._note(nets.network_folder(nets.CLASSIFIER, spec.is_model, progress), spec.is_model, say)
        if "fvd" in wanted:
            self.video = nets.load_video_network(spec.fvd_model, self.device, progress)
            self._note(nets.network_folder(nets.VIDEO, spec.fvd_model, progress), spec.fvd_model, say)
        self.wanted = wanted
        self.progress = progress

    def _note(self, folder: Path, name: str, say: Say) -> None:
        from tpos_live.evaluation.networks import is_random

        if is_random(folder):
            self.random.append(name if name != "tiny" else f"tiny ({folder.name})")
            say(f"warning: network '{folder.name}' has RANDOM weights: its scores mean nothing")

    def _load_encoder(self, spec: EvaluationSpec, say: Say):
        from tpos_live.audio.spectrogram import SpectrogramConfig
        from tpos_live.conditioning.checkpoint import TPoSConfig, load_tpos, random_tpos
        from tpos_live.conditioning.providers import default_encoder

        width = int(self.clip.config.projection_dim)
        if spec.encoder == "random":
            say("warning: clip-audio uses an UNTRAINED TPoS encoder (--encoder random): its score means nothing")
            self.random.append("encoder random")
            small = SpectrogramConfig("stft", sample_rate=16000, n_fft=256, hop_length=128, height=32,
                                      segment_frames=24)
            return random_tpos(TPoSConfig(embed_dim=width, spectrogram=small, text_family="random"), seed=0,
                               device=self.device)
        path = spec.encoder or default_encoder(CLIP_L14_FAMILY)
        if path is None:
            raise UserError("clip-audio needs a TPoS encoder aligned to CLIP ViT-L/14: pass --encoder "
                            "FILE.safetensors, or set a default with `tpos-live import-tpos` or train-encoder")
        provider = load_tpos(path, device=self.device)
        if provider.embed_dim != width:
            raise UserError(f"TPoS encoder '{path}' is {provider.embed_dim} wide but the CLIP model's joint space "
                            f"is {width}: use an encoder aligned to that CLIP (text family {CLIP_L14_FAMILY})")
        if provider.random_weights:
            self.random.append(f"encoder {path}")
            say(f"warning: TPoS encoder '{path}' has RANDOM weights: clip-audio means nothing")
        return provider

    def collectors(self, every: int) -> dict[str, Any]:
        from tpos_live.evaluation import networks as nets
        from tpos_live.evaluation.metrics import ClipFeatures, SampledFrames, clip_image_features, videomae_features

        out: dict[str, Any] = {}
        if self.wanted & {"clip-text", "clip-audio"}:
            size = self.clip.config.vision_config.image_size
            out["clip"] = SampledFrames(lambda x: clip_image_features(self.clip, x), nets.CLIP, size,
                                        every, self.device)
        if "is" in self.wanted:
            out["is"] = SampledFrames(lambda x: self.classifier(pixel_values=x).logits.softmax(-1),
                                      nets.CLASSIFIER, self.classifier.config.image_size, every, self.device)
        if "fvd" in self.wanted:
            out["fvd"] = ClipFeatures(videomae_features(self.video), nets.VIDEO, self.video.config.image_size,
                                      self.video.config.num_frames, self.device)
        return out

    def reference_features(self, references: list[VideoInfo]) -> np.ndarray:
        features = []
        for info in references:
            collector = self.collectors(1)["fvd"]
            for index, rgb in enumerate(iter_frames(info, self.progress, label=f"reference {info.path.name}")):
                collector.add(index, rgb)
            if len(collector.features()):
                features.append(collector.features())
        if not features or sum(len(f) for f in features) < 2:
            raise UserError(f"the reference videos give fewer than 2 clips of {self.video.config.num_frames} "
                            "frames: fvd needs longer or more reference videos")
        return np.concatenate(features)

    def text_features(self, prompt: str):
        import torch

        from tpos_live.evaluation.metrics import clip_text_features

        tokens = self.tokenizer([prompt], padding="max_length", truncation=True, return_tensors="pt",
                                max_length=self.tokenizer.model_max_length)
        with torch.inference_mode():
            return clip_text_features(self.clip, tokens.input_ids.to(self.device)).float().cpu()

    def score(self, info: VideoInfo, prompt: str | None, sound: Audio | None, result: VideoResult, collectors,
              reference) -> None:
        from tpos_live.evaluation.metrics import cosine_mean, frechet_distance, inception_score, tpos_audio_embeddings

        if "clip" in collectors:
            images = collectors["clip"].outputs()
            times = np.array(collectors["clip"].indices) / (info.fps or 1.0)
            result.details["sampled_frames"] = len(times)
            if "clip-text" in self.wanted:
                text = self.text_features(prompt)
                result.metrics["clip-text"], result.details["clip-text_std"] = cosine_mean(images, text)
                result.details["clip-text_prompt"] = prompt
            if "clip-audio" in self.wanted:
                mono = _mono(sound, info, self.encoder.sample_rate)
                audio = tpos_audio_embeddings(self.encoder, mono, times)
                result.metrics["clip-audio"], result.details["clip-audio_std"] = cosine_mean(images, audio)
        if "is" in collectors:
            probabilities = collectors["is"].outputs().double().numpy()
            self.probabilities.append(probabilities)
            result.metrics["is"], result.details["is_std"] = inception_score(probabilities)
        if "fvd" in collectors:
            features = collectors["fvd"].features()
            self.video_features.append(features)
            result.details["fvd_clips"] = len(features)
            result.metrics["fvd"] = frechet_distance(features, reference) if len(features) >= 2 else float("nan")

    def pooled_inception_score(self) -> tuple[float, float]:
        from tpos_live.evaluation.metrics import inception_score

        return inception_score(np.concatenate(self.probabilities))

    def pooled_fvd(self, reference: np.ndarray) -> float:
        from tpos_live.evaluation.metrics import frechet_distance

        features = [f for f in self.video_features if len(f)]
        if sum(len(f) for f in features) < 2:
            raise UserError(f"the videos give fewer than 2 clips of {self.video.config.num_frames} frames: fvd "
                            "needs longer videos")
        return frechet_distance(np.concatenate(features), reference)


# ---- output -------------------------------------------------------------------------------------


def format_table(report: EvaluationReport) -> str:
    """One row per video (and one for the set when there are several), a column per score."""
    names = list(dict.fromkeys(name for r in report.results for name in r.metrics))
    rows = [[str(r.video), *(_cell(r.metrics.get(n)) for n in names)] for r in report.results]
    if len(report.results) > 1:
        rows.append([f"all {len(report.results)} videos", *(_cell(report.pooled.get(n)) for n in names)])
    header = ["video", *names]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths,
                                                                                                   strict=True)))
             for row in [header, *rows]]
    if report.random_weights:
        lines.append(f"(random weights: {', '.join(report.random_weights)}: those scores mean nothing)")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if math.isfinite(value) else "n/a"


def write_json(report: EvaluationReport, path: Path) -> Path:
    """``{"video", "metrics", "details"}`` per video: one object for one video, a list for several."""
    objects = [r.as_json() for r in report.results]
    document = objects[0] if len(objects) == 1 else objects
    return write_text_atomically(path, json.dumps(_finite(document), indent=2) + "\n")


def _finite(value):
    """JSON has no NaN: a score that could not be computed is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
