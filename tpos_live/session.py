"""The composition root: plain specs in, models, sound source, conditioning, engine, controls and outputs out.

The command line (``tpos_live.cli``) parses flags into these specs and calls this module; nothing below
it sees an argparse namespace. Each spec lives beside the code it configures and is gathered here:

- :class:`~tpos_live.diffusion.models.ModelSpec`: which diffusion model, on which device and dtype;
- :class:`~tpos_live.backends.registry.BackendSpec`: what runs the UNet and the decoder;
- :class:`ConditioningSpec`: the audio conditioning (a TPoS encoder, or the CLAP concept bank);
- :class:`SceneSpec`: the prompt, the init image, the mode and the render settings given;
- :class:`~tpos_live.audio.source_spec.SourceSpec`: the live sound source;
- :class:`~tpos_live.control.spec.ControlSpec` and :class:`~tpos_live.control.spec.OutputSpec`: how a
  live session is played and where its frames go.

    models = load_models(model, backend, conditioning, scene, say)      # slow: weights
    report = render(RenderSpec(...), say)                                # an audio file to an MP4
    with LiveSession(LiveSpec(...), models, report=log) as session:      # the live engine, started
        ...
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tpos_live.audio.channels import db_to_gain
from tpos_live.audio.decode import Audio
from tpos_live.audio.source_spec import SourceSpec, open_source
from tpos_live.backends.registry import create_backend
from tpos_live.backends.spec import BackendSpec
from tpos_live.conditioning.base import ConditionProvider, TextSpace
from tpos_live.conditioning.providers import load_provider
from tpos_live.config import IMG2IMG_PRESETS, RenderSettings, layered
from tpos_live.control import Controls, attach_controls
from tpos_live.control.spec import ControlSpec, OutputSpec
from tpos_live.diffusion.backend import Backend
from tpos_live.diffusion.loading import load_stack
from tpos_live.diffusion.models import ALIASES, ModelSpec, distillation, fast_defaults
from tpos_live.diffusion.renderer import TPoSRenderer
from tpos_live.diffusion.stack import ModelStack
from tpos_live.errors import UserError
from tpos_live.live.engine import LiveEngine
from tpos_live.live.settings import LiveSettings
from tpos_live.offline import (
    FramePlan,
    FrameRenderer,
    RenderReport,
    cache_folder,
    frame_times,
    plan_frames,
    prepare_scene,
    render_track,
)
from tpos_live.preflight import (
    Input,
    check_conditioning,
    check_init_image,
    check_output_folder,
    model_inputs,
    refuse_output_on_inputs,
)
from tpos_live.reporting import Reporter, ignore_report
from tpos_live.specs import ConditioningSpec, SceneSpec
from tpos_live.video.frames import FrameStore, frames_of, refuse_frames_of_another_render, render_record

Say = Callable[[str], None]

__all__ = [
    "BackendSpec", "ConditioningSpec", "ControlSpec", "LiveSession", "LiveSpec", "ModelSpec", "Models",
    "OutputSpec", "RenderSpec", "SceneSpec", "SourceSpec", "WorkerFrameRenderers", "assemble_renderer",
    "load_models", "render", "render_settings",
]


def render_settings(scene: SceneSpec, model: ModelSpec, stack: ModelStack | None = None) -> RenderSettings:
    """The settings of ``scene`` for ``model``: the mode's preset, the model's fast-mode steps and
    guidance (:func:`~tpos_live.diffusion.models.fast_defaults`: an alias's, a saved folder's, or once
    ``stack`` is loaded, its own), the img2img preset, then what the user gave. UserError (one line) for
    values out of range."""
    layers = [fast_defaults(model.model, stack)] if scene.mode == "fast" else []
    if scene.img2img_preset is not None:
        layers.append(IMG2IMG_PRESETS[scene.img2img_preset])
    try:
        return RenderSettings.for_mode(scene.mode, **layered(*layers, scene.given()))
    except ValueError as error:
        raise UserError(str(error)) from None


@dataclass
class Models:
    """What a session renders with, loaded once: the stack, the backend, the settings, the renderer of the
    three and the audio conditioning (with the text space it conditions).

    ``renderer`` is built here unless :func:`load_models` built it already; a ``replace`` that changes the
    stack, the settings or the backend builds a new one, so it never renders with what was swapped out.
    """

    stack: ModelStack
    backend: Backend
    settings: RenderSettings
    provider: ConditionProvider
    text_space: TextSpace
    renderer: TPoSRenderer | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        made = self.renderer
        if made is None or made.stack is not self.stack or made.backend is not self.backend \
                or made.settings != self.settings:
            self.renderer = TPoSRenderer(self.stack, self.settings, backend=self.backend)

    @property
    def random_weights(self) -> bool:
        return bool(self.stack.random_weights or getattr(self.provider, "random_weights", False))


def load_models(model: ModelSpec, backend: BackendSpec, conditioning: ConditioningSpec, scene: SceneSpec,
                say: Say = print, progress: bool = True) -> Models:
    """Load everything a render or a live session renders with, saying what runs.

    1. the renderer (:func:`assemble_renderer`: the settings, the model stack, the backend);
    2. the audio conditioning, refusing one whose width does not fit the model.
    """
    renderer = assemble_renderer(model, backend, scene, say, progress)
    stack = renderer.stack
    text_space = renderer.text_space()
    provider = load_provider(conditioning.encoder, stack, text_space, say=say, concepts=conditioning.concepts,
                             prompt_encoder=renderer.encode_prompt, progress=progress)
    if stack.random_weights:
        say(f"warning: model '{stack.name}' has RANDOM weights: frames show noise patterns, not images")
    return Models(stack, renderer.backend, renderer.settings, provider, text_space, renderer)


def assemble_renderer(model: ModelSpec, backend: BackendSpec, scene: SceneSpec, say: Say = print,
                      progress: bool = True) -> TPoSRenderer:
    """The renderer of ``scene`` on ``model`` and ``backend``: the one model assembly, in this process and
    in every Ray worker of a render.

    1. the settings (before any weights load, so that bad values fail at once);
    2. the model stack, on its device (in paper mode with the full VAE, no TAESD fetched);
    3. the backend that runs its UNet and decoder (an unavailable one: UserError, or a warning and
       torch with ``allow_fallback``);
    4. the renderer, which refuses sizes and decoders the stack lacks.
    """
    settings = render_settings(scene, model)
    model = _paper_model(model, scene, settings, say)
    stack = load_stack(model, progress=progress)
    settings = render_settings(scene, model, stack)  # a model that is not an alias brings its own sampling
    say(f"model: {stack.name} on {stack.device} ({str(stack.dtype).removeprefix('torch.')})")
    if stack.about:
        say(stack.about)
    return TPoSRenderer(stack, settings, backend=make_backend(backend, stack, settings, say))


def _paper_model(model: ModelSpec, scene: SceneSpec, settings: RenderSettings, say: Say) -> ModelSpec:
    """Say which model paper mode runs, warning when it is a distilled one (only a model the user
    named can be: paper mode's default is plain SD v1.4); with the full VAE, an alias's TAESD is not
    fetched."""
    if scene.mode == "paper":
        alias = ALIASES.get(model.model)
        base = f"{model.model} ({alias.model})" if alias is not None else model.model
        say(f"paper mode: model {base}" + (f" + LoRA {model.lora}" if model.lora else ""))
        distilled = distillation(model.model, model.lora)
        if distilled is not None:
            say(f"warning: paper mode on {model.model}, which is {distilled}: the paper's {settings.steps} "
                f"{settings.sampler.upper()} steps at g {settings.text_guidance:g} are made for plain SD "
                f"(paper mode's default, sd14 = CompVis/stable-diffusion-v1-4)")
    if settings.decoder == "vae" and model.taesd is None and model.model in ALIASES:
        model = replace(model, taesd="none")
    return model


def make_backend(spec: BackendSpec, stack: ModelStack, settings: RenderSettings, say: Say = print) -> Backend:
    """The backend of ``spec`` for ``stack`` at ``settings``' size, batch and decoder; says what runs."""
    backend = create_backend(spec.name, stack, settings, allow_fallback=spec.allow_fallback, say=say,
                             engines=spec.engines, static_shapes=spec.static_shapes)
    say(f"backend: {backend.describe()}")
    return backend


# ---- offline ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderSpec:
    """An audio file to an MP4: the models, the scene, and where the result goes.

    Attributes:
        audio: the sound (any file FFmpeg decodes).
        output: the MP4 to write (nothing appears there until it is complete).
        frames_dir: also write every frame as a PNG here.
        resume: keep the valid frames an earlier run of the same render left (in ``frames_dir``, else in
            the cache beside ``output`` that a render with ``resume`` keeps until it completes).
        overwrite_frames: let the frames replace PNGs in ``frames_dir`` that no render recorded writing
            (without it they are refused).
        workers: render on this many Ray workers (None: in this process; see ``tpos_live.distributed``).
        ray_address: join the Ray cluster there (None: start a local one of ``workers`` CPUs).
    """

    audio: Path
    output: Path
    scene: SceneSpec
    model: ModelSpec = field(default_factory=ModelSpec)
    backend: BackendSpec = field(default_factory=BackendSpec)
    conditioning: ConditioningSpec = field(default_factory=ConditioningSpec)
    frames_dir: Path | None = None
    resume: bool = False
    overwrite_frames: bool = False
    workers: int | None = None
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if self.overwrite_frames and self.frames_dir is None:
            raise ValueError("--overwrite-frames lets --frames DIR replace PNGs there: give --frames DIR")
        if self.overwrite_frames and self.resume:
            raise ValueError("--resume keeps the frames in --frames DIR, --overwrite-frames replaces them: "
                             "pick one")
        if self.workers is not None and not 1 <= self.workers <= 1024:
            raise ValueError(f"workers must be in 1..1024, got {self.workers}")
        if self.ray_address is not None and self.workers is None:
            raise ValueError("a Ray address needs --workers N: how many workers to start on that cluster")


def render(spec: RenderSpec, say: Say = print, progress: bool = True) -> RenderReport:
    """Render ``spec`` to its MP4.

    1. check every input and the output, decoding the sound (once: the render takes it from here), and,
       with workers, that Ray is there, before any weights load;
    2. load the models;
    3. plan the frames and render them (``tpos_live.offline``), here or on Ray workers
       (``tpos_live.distributed``).
    """
    sound, manifest = check_render(spec)
    with _farm(spec, say) as farm:
        models = load_models(spec.model, spec.backend, spec.conditioning, spec.scene, say, progress)
        plan = plan_frames(models.settings, models.provider, models.text_space, sound, say)
        return render_track(models.renderer, plan, sound, spec.output, spec.scene, frames_dir=spec.frames_dir,
                            say=say, progress=progress, resume=spec.resume, manifest=manifest, farm=farm)


def check_render(spec: RenderSpec) -> tuple[Audio, dict]:
    """Everything a render of ``spec`` reads and writes, checked before any weights load: the settings,
    the output (writable, not an input), the init image, the concept bank, the sound (decoded: at least
    one frame of it) and the frames an earlier render left. Returns the sound and the render's manifest."""
    from tpos_live.video.writer import check_output_path

    settings = render_settings(spec.scene, spec.model)
    _refuse_unused_settings(spec.scene, settings)
    _refuse_unused_taesd(spec.model, settings)
    check_output_path(spec.output)
    if spec.frames_dir is not None:
        check_output_folder(spec.frames_dir)
    refuse_output_on_inputs(spec.output, "-o", [("sound file", spec.audio), ("init image", spec.scene.init_image),
                                                *_model_inputs(spec.model, spec.backend, spec.conditioning)])
    check_init_image(spec.scene.init_image)
    check_conditioning(spec.conditioning.encoder, spec.conditioning.concepts)
    sound = _decoded_sound(spec.audio, settings.fps, channels=2)  # the MP4 keeps the file's rate, <= 2 channels
    manifest = render_manifest(spec, settings)
    count = len(frame_times(sound.duration, settings.fps))
    if spec.resume:
        refuse_frames_of_another_render(spec.frames_dir or cache_folder(spec.output),
                                        render_record(manifest, count), count)
    elif spec.frames_dir is not None and not spec.overwrite_frames:
        _refuse_foreign_frames(spec.frames_dir, count)
    return sound, manifest


def _refuse_unused_settings(scene: SceneSpec, settings: RenderSettings) -> None:
    """UserError for a setting a render never reads with the others it has (live can turn the envelope and
    the momentum up while it runs, so only a render refuses these)."""
    given = scene.given()
    if settings.envelope_depth == 0 and ({"attack_seconds", "release_seconds"} & given.keys()):
        raise UserError("--attack and --release shape the loudness envelope, which is off here (--envelope 0, "
                        "paper mode's): give --envelope DEPTH too, or leave them out")
    if settings.momentum_scale == 0 and "momentum_beta" in given:
        raise UserError("--momentum-beta is the momentum's decay, and the momentum is off here (--momentum 0): "
                        "give --momentum M too, or leave --momentum-beta out")


def _decoded_sound(path: Path, fps: float, channels: int | None = None) -> Audio:
    """The sound of ``path`` at its own rate (``channels``: see :func:`decode_audio`); UserError unless it
    holds at least one frame's worth at ``fps`` (less, resampled to the encoder's rate, can be nothing)."""
    from tpos_live.audio.decode import decode_audio

    sound = decode_audio(path, channels=channels)
    if sound.duration * fps < 1:
        raise UserError(f"audio file '{path}' holds {sound.duration * 1000:.2f} ms of sound, less than one frame "
                        f"at {fps:g} fps: give a longer file")
    return sound


def _refuse_unused_taesd(model: ModelSpec, settings: RenderSettings) -> None:
    if settings.decoder == "vae" and model.taesd not in (None, "none"):
        raise UserError("--taesd is the decoder of --decoder taesd, and these frames are decoded by the full VAE "
                        "(--decoder vae, paper mode's): leave --taesd out, or give --decoder taesd")


def _model_inputs(model: ModelSpec, backend: BackendSpec, conditioning: ConditioningSpec) -> list[Input]:
    return model_inputs(model.model, model.lora, model.taesd, conditioning.encoder, conditioning.concepts,
                        backend.engines)


def _refuse_foreign_frames(folder: Path, count: int) -> None:
    """UserError when a render of ``count`` frames would overwrite PNGs in ``folder`` that no render
    recorded writing there."""
    record = FrameStore.read_manifest_in(folder)
    recorded = record.get("frames") if isinstance(record, dict) else None
    recorded = recorded if isinstance(recorded, int) else 0
    foreign = sorted(path.name for index, path in frames_of(folder).items() if recorded <= index < count)
    if foreign:
        raise UserError(f"--frames '{folder}' holds {len(foreign)} PNGs this render would overwrite "
                        f"({foreign[0]}, ...) that no render recorded writing: pass --overwrite-frames to "
                        "replace them, or give another folder")


def _farm(spec: RenderSpec, say: Say):
    """The Ray workers of ``spec`` (connected now: a missing Ray or cluster fails before weights load),
    or nothing to render in this process."""
    if spec.workers is None:
        return contextlib.nullcontext()
    from tpos_live.distributed import RayFarm

    workers = WorkerFrameRenderers(spec.model, spec.backend, spec.scene)
    return RayFarm(workers, spec.workers, spec.ray_address, spec.model.device, say)


def render_manifest(spec: RenderSpec, settings: RenderSettings) -> dict:
    """What the frames of ``spec`` are made from (a resumed render keeps only frames made the same way)."""
    scene = spec.scene
    return {
        "audio_sha256": file_digest(spec.audio),
        "settings": asdict(settings),
        "scene": {"prompt": scene.prompt, "negative_prompt": scene.negative_prompt,
                  # a missing image is the scene's error to report, later, in its own words
                  "init_image_sha256": file_digest(scene.init_image) if scene.init_image and
                  Path(scene.init_image).is_file() else scene.init_image},
        "model": asdict(spec.model),
        "backend": spec.backend.name,
        "conditioning": asdict(spec.conditioning),
    }


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class WorkerFrameRenderers:
    """Builds a render's frame renderer in a Ray worker (an :class:`~tpos_live.offline.FrameRendererFactory`):
    the driver's model assembly (:func:`assemble_renderer`) on the worker's device, no audio conditioning
    (the plan holds the condition track) and the scene, prepared from the seed as every process prepares it.
    """

    model: ModelSpec
    backend: BackendSpec
    scene: SceneSpec

    def __call__(self, plan: FramePlan, device: str) -> FrameRenderer:
        renderer = assemble_renderer(replace(self.model, device=device), self.backend, self.scene,
                                     say=_say_nothing, progress=False)
        return FrameRenderer(renderer, prepare_scene(renderer, self.scene), plan)


def _say_nothing(message: str) -> None:
    """A worker's say: the driver has said what runs."""


# ---- live ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveSpec:
    """A live session: the models and scene, the sound, how it runs, how it is played, where it goes."""

    scene: SceneSpec
    model: ModelSpec = field(default_factory=ModelSpec)
    backend: BackendSpec = field(default_factory=BackendSpec)
    conditioning: ConditioningSpec = field(default_factory=ConditioningSpec)
    source: SourceSpec = field(default_factory=SourceSpec)
    live: LiveSettings = field(default_factory=LiveSettings)
    control: ControlSpec = field(default_factory=ControlSpec)
    outputs: OutputSpec = field(default_factory=OutputSpec)


def check_live(spec: LiveSpec) -> Audio | None:
    """Everything a live session of ``spec`` reads and writes, checked before any weights load: the
    settings, the recording (writable, not an input), the init image, the concept bank, the presets, the
    MIDI map and the sound file (decoded: at least one frame of it). Returns the sound file's sound (the
    session plays it from there), or None without one."""
    settings = render_settings(spec.scene, spec.model)
    _refuse_unused_taesd(spec.model, settings)
    inputs = [("sound file", spec.source.file), ("init image", spec.scene.init_image),
              *_model_inputs(spec.model, spec.backend, spec.conditioning)]
    control = spec.control
    if spec.outputs.record is not None:
        from tpos_live.video.writer import check_output_path

        check_output_path(spec.outputs.record)
        refuse_output_on_inputs(spec.outputs.record, "--record", [*inputs, ("MIDI map", control.midi_map),
                                                                  ("presets folder", control.presets)])
    check_init_image(spec.scene.init_image)
    check_conditioning(spec.conditioning.encoder, spec.conditioning.concepts)
    _check_control_files(control, inputs)
    if spec.source.file is None:
        return None
    from tpos_live.audio.file_source import check_channel

    sound = _decoded_sound(spec.source.file, settings.fps)
    check_channel(spec.source.file, sound, spec.source.channel)
    return sound


def _check_control_files(control: ControlSpec, inputs: list[Input]) -> None:
    """The presets and the MIDI map parse; a MIDI map that --midi-learn writes lands on no input."""
    if control.presets is not None:
        from tpos_live.control.preset_bank import load_preset_folder

        load_preset_folder(control.presets, may_be_empty=control.presets_may_be_empty)
    if control.midi_port is None:
        return
    from tpos_live.control.midi import default_mappings_path, load_mappings

    path = control.midi_map or default_mappings_path()
    if control.midi_learn:
        refuse_output_on_inputs(path, "--midi-map", inputs)
    if path.exists():
        load_mappings(path)
    elif control.midi_map is not None and not control.midi_learn:
        raise UserError(f"MIDI map '{path}' does not exist: check the path, or add --midi-learn to make it")


def _check_live_scene(scene: SceneSpec, settings: RenderSettings, report: Reporter) -> None:
    """Refuse what only a render does (the edit prompt); say that live windows are always sliding."""
    if scene.edit_prompt is not None:
        raise UserError("--edit-prompt is for tpos-live render: a live session guides with the audio alone")
    if settings.windows != "sliding" or settings.condition_scale is not None:
        report("warning", "live uses sliding windows with the MAP input N alpha_n s_n (a window cannot hold "
                          "sound that has not arrived): the official windows and condition scale are for render "
                          "(the official floor, if the encoder's, lies below each segment's peak, not the file's)")


class LiveSession:
    """The live engine on ``models`` with the sound, controls and outputs of ``spec``.

    Opening the sound source happens here (UserError when it cannot be opened; with ``fallback_source``
    that one is used instead, said as a warning). :meth:`start` starts the engine, the recording and the
    controls; :meth:`stop` (or leaving ``with``) stops them all and returns the recording's path.

    Every change of what runs while it runs goes through the session (:meth:`switch_source`,
    :meth:`set_gain`, :meth:`switch_conditioning`, :meth:`switch_backend`), so that :attr:`spec` and
    :attr:`models` always say what the engine runs now.

    Args:
        spec: the session.
        models: from :func:`load_models` with the spec's model, backend, conditioning and scene.
        report: ``report(level, message)`` for what the engine and the controls say.
        fallback_source: the source to use when ``spec.source`` cannot be opened (None: the error stands).
        sound: the sound file of ``spec.source`` as :func:`check_live` decoded it (None: decode it here).
    """

    def __init__(self, spec: LiveSpec, models: Models, report: Reporter = ignore_report,
                 fallback_source: SourceSpec | None = None, sound: Audio | None = None) -> None:
        self.spec, self.models, self.report = spec, models, report
        # The app swaps on background jobs and the GUI thread at once: one swap and its record at a time, so
        # that spec and models always say what the engine runs.
        self._swapping = threading.RLock()
        self._capture = spec.source  # the capture options every device picked later is opened with
        _check_live_scene(spec.scene, models.settings, report)
        source = self._first_source(spec.source, fallback_source, sound)
        self.engine = LiveEngine(models.stack, models.settings, models.provider, source, spec.scene.prompt,
                                 spec.scene.negative_prompt, live=spec.live, init_image=spec.scene.init_image,
                                 report=report, backend=models.backend, renderer=models.renderer)
        self.controls: Controls | None = None

    def _first_source(self, wanted: SourceSpec, fallback: SourceSpec | None, sound: Audio | None):
        try:
            return open_source(wanted, self.models.provider.sample_rate, self.report, decoded=sound)
        except UserError as error:
            if fallback is None:
                raise
            self.report("warning", f"{error}; using the {fallback.kind} source instead")
            self.spec = replace(self.spec, source=fallback)
            return self.open_source(fallback)

    def open_source(self, spec: SourceSpec):
        """A source for ``spec`` at the conditioning's rate (not started); UserError if it cannot be had."""
        return open_source(spec, self.models.provider.sample_rate, self.report)

    def device_source(self, device: str | None, gain_db: float, synthetic: bool = False) -> SourceSpec:
        """The source of a device picked by name (or of the test signal), with the session's capture options."""
        base = self._capture
        if synthetic:
            return SourceSpec(kind="synthetic", channel=base.channel, gain_db=gain_db)
        return SourceSpec(kind="device", device=device, host_api=base.host_api, sample_rate=base.sample_rate,
                          channel=base.channel, gain_db=gain_db, latency=base.latency)

    # ---- life cycle -----------------------------------------------------------------------------

    def start(self) -> LiveSession:
        """Start the engine, the recording (if asked for), the controls (OSC, MIDI, tempo, Link, modulation)
        and the video outputs (NDI, Spout, Syphon)."""
        self.engine.start()
        try:
            if self.spec.outputs.record is not None:
                self.engine.start_recording(self.spec.outputs.record)
            self.controls = attach_controls(self.engine, self.spec.control, self.report, outputs=self.spec.outputs)
        except BaseException:
            self.engine.stop()
            raise
        return self

    def stop(self) -> Path | None:
        """Stop the controls, then the engine; returns the recording written (None if none)."""
        if self.controls is not None:
            self.controls.close()
            self.controls = None
        return self.engine.stop()

    def __enter__(self) -> LiveSession:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- changing what runs ----------------------------------------------------------------------

    def switch_source(self, spec: SourceSpec):
        """Open the source of ``spec`` and take the sound from it from now on, without stopping the frames;
        the old source is stopped (slow: call it off the GUI thread). The new source takes the session's input
        gain (the latest :meth:`set_gain`, even one made while it opened). UserError when it cannot be opened
        (then nothing changes). Returns the new source."""
        source = self.open_source(spec)
        with self._swapping:
            old = self.engine.set_source(source)  # starts the new one; UserError leaves the old running
            gain_db = self.spec.source.gain_db
            self.spec = replace(self.spec, source=replace(spec, gain_db=gain_db))
            self._apply_gain(gain_db)
        old.stop()
        return source

    def set_gain(self, gain_db: float) -> None:
        """The input gain of the sound source in use, in dB, from the next block read."""
        with self._swapping:
            self._apply_gain(gain_db)
            self.spec = replace(self.spec, source=replace(self.spec.source, gain_db=gain_db))

    def _apply_gain(self, gain_db: float) -> None:
        source = self.engine.source
        source.channel_map = replace(source.channel_map, gain=db_to_gain(gain_db))

    def switch_conditioning(self, provider: ConditionProvider, encoder: str) -> ConditionProvider:
        """Condition the running engine on ``provider`` (what ``load_provider`` loaded from ``encoder``) from
        the next encoder hop. UserError when it does not fit the model (then nothing changes). Returns the
        old provider."""
        with self._swapping:
            old = self.engine.set_provider(provider)
            self.models = replace(self.models, provider=provider)
            self.spec = replace(self.spec, conditioning=replace(self.spec.conditioning, encoder=encoder))
        return old

    def switch_backend(self, spec: BackendSpec, say: Say | None = None) -> Backend:
        """Build the backend of ``spec`` and swap it into the running engine (slow: exports or compiles;
        call it off the GUI thread). UserError when it cannot run (then nothing changes)."""
        say = say or (lambda message: self.report("info", message))
        backend = make_backend(spec, self.models.stack, self.models.settings, say)
        with self._swapping:
            models = replace(self.models, backend=backend)  # built first: a failure changes nothing
            self.engine.set_backend(backend)
            self.models, self.spec = models, replace(self.spec, backend=spec)
        return backend

    @property
    def backend_description(self) -> str:
        return self.engine.backend.describe()
