"""Every flag that more than one command takes, defined once, and the specs they fill.

``add_*`` functions add a group of flags to a command's parser; ``*_spec`` functions turn the parsed
flags into the plain specs :mod:`tpos_live.session` builds from. A bad value is a UserError (one line).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tpos_live.audio.source_spec import SourceSpec
from tpos_live.backends.spec import BackendSpec
from tpos_live.config import FAST_PRESET, IMG2IMG_PRESETS, MIN_TEXT_GUIDANCE, PAPER_PRESET
from tpos_live.control.spec import QUANTISE_CHOICES, TEMPO_CHOICES, ControlSpec, OutputSpec
from tpos_live.diffusion.models import ALIASES, FAST_DEFAULT_MODEL, PAPER_DEFAULT_MODEL, ModelSpec, default_model
from tpos_live.errors import UserError
from tpos_live.live.settings import LiveSettings
from tpos_live.names import (
    BACKENDS,
    DECODERS,
    DEVICE_NAMES_HELP,
    DTYPE_NAMES,
    FRAME_PATHS,
    LATENCIES,
    SAMPLERS,
    WINDOWS,
)
from tpos_live.specs import ConditioningSpec, SceneSpec

DTYPE_CHOICES = ("auto", *DTYPE_NAMES)
DEFAULT_MODEL = FAST_DEFAULT_MODEL

# The RenderSettings fields the sampling and frame flags fill (dest = field name).
RENDER_SETTING_FLAGS = (
    "seed", "fps", "steps", "sampler", "text_guidance", "audio_guidance", "threshold", "momentum_scale",
    "momentum_beta", "delta_timestep", "delta_step", "envelope_depth", "attack_seconds", "release_seconds",
    "decoder", "batch_frames", "windows", "condition_scale", "strength", "edit_scale", "frames",
)


def fast(setting: str) -> str:
    """A render setting's fast-mode default as a help text shows it (24.0 as 24)."""
    return shown(getattr(FAST_PRESET, setting))


def paper(setting: str) -> str:
    """A render setting's paper-mode default as a help text shows it."""
    return shown(getattr(PAPER_PRESET, setting))


def shown(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def checked(make, *args, **kwargs):
    """``make(*args, **kwargs)``, its ValueError turned into a UserError (a spec refusing a value)."""
    try:
        return make(*args, **kwargs)
    except ValueError as error:
        raise UserError(str(error)) from None


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 512x512, got {text!r}") from None
    return width, height


# ---- scene and frames ---------------------------------------------------------------------------


def add_scene_options(p: argparse.ArgumentParser, prompt_default: str | None = None,
                      init_image_help: str = "start from this image instead of the prompt alone") -> None:
    """--prompt (required unless given a default), --negative-prompt, --seed, --init-image."""
    scene = p.add_argument_group("scene")
    if prompt_default is None:
        add_prompt_option(scene, "what the frames show", required=True)
    else:
        add_prompt_option(scene, f"what the frames show ({prompt_default!r})", default=prompt_default)
    scene.add_argument("--negative-prompt", default="", metavar="TEXT", help="what they should not show")
    add_seed_option(scene, "the noise (z^T and the step noise)")
    scene.add_argument("--init-image", type=Path, metavar="IMAGE", help=init_image_help)


def add_prompt_option(group, help_text: str, required: bool = False, default: str | None = None) -> None:
    """--prompt: the text of the scene (what the frames show, or should show)."""
    group.add_argument("--prompt", required=required, default=default, metavar="TEXT", help=help_text)


def add_frame_options(group, fps_help: str) -> None:
    """--size, --fps, --batch, --frame-path (``fps_help`` says what --fps is to the command, and its default)."""
    group.add_argument("--size", type=parse_size, metavar="WxH",
                       help=f"frame size (default {fast('width')}x{fast('height')})")
    group.add_argument("--fps", type=float, help=fps_help)
    group.add_argument("--batch", type=int, dest="batch_frames", metavar="N",
                       help=f"frames rendered per batch (default {fast('batch_frames')})")
    conditions_per_second = shown(1 / LiveSettings.hop_seconds)
    group.add_argument("--frame-path", choices=FRAME_PATHS, dest="frames",
                       help=f"how frames are made. {fast('frames')} (default): composed from keyframes, one UNet "
                            f"call per audio condition ({conditions_per_second}/s at the default hop), where that "
                            "is exact (one guided step, fast mode's default), else each frame rendered; "
                            "keyframes: also with several guided steps, linearised in g_s (exact at each "
                            "keyframe); per-frame: the UNet runs for every frame")


def add_sampling_options(p: argparse.ArgumentParser) -> None:
    """The sampler, steps and every guidance setting (defaults: the mode's and the model's)."""
    sampling = p.add_argument_group("sampling and guidance")
    sampling.add_argument("--steps", type=int, metavar="N",
                          help=f"denoising steps (fast: the model's, paper: {paper('steps')})")
    sampling.add_argument("--sampler", choices=SAMPLERS, help=f"fast: {fast('sampler')}, paper: {paper('sampler')}")
    least = shown(MIN_TEXT_GUIDANCE)
    sampling.add_argument("--guidance", type=float, dest="text_guidance", metavar="G",
                          help=f"text guidance scale g, at least {least} ({least}: the prompt alone, no "
                               "classifier-free guidance; fast: the model's, 1 for LCM and sd-turbo; paper: "
                               f"{paper('text_guidance')})")
    sampling.add_argument("--audio-guidance", type=float, metavar="GS",
                          help=f"audio guidance scale g_s (default {fast('audio_guidance')})")
    sampling.add_argument("--threshold", type=float, metavar="Q",
                          help=f"guidance quantile threshold q in [0, 1) ({fast('threshold')})")
    sampling.add_argument("--momentum", type=float, dest="momentum_scale", metavar="M",
                          help=f"momentum scale ({fast('momentum_scale')})")
    sampling.add_argument("--momentum-beta", type=float, metavar="B", help=f"momentum beta ({fast('momentum_beta')})")
    delta = sampling.add_mutually_exclusive_group()
    delta.add_argument("--delta", type=int, dest="delta_timestep", metavar="T",
                       help="audio guidance on steps with DDPM timestep t < T, like the official param_t "
                            f"(paper: {paper('delta_timestep')})")
    delta.add_argument("--delta-step", type=int, metavar="I",
                       help="audio guidance from step index I on (fast: the last step)")
    sampling.add_argument("--envelope", type=float, dest="envelope_depth", metavar="DEPTH",
                          help=f"how much loudness scales g_s, 0..1 (fast {fast('envelope_depth')}, paper "
                               f"{paper('envelope_depth')} = off)")
    sampling.add_argument("--attack", type=float, dest="attack_seconds", metavar="S",
                          help=f"envelope attack, s ({fast('attack_seconds')})")
    sampling.add_argument("--release", type=float, dest="release_seconds", metavar="S",
                          help=f"envelope release, s ({fast('release_seconds')})")


def add_paper_options(p: argparse.ArgumentParser) -> None:
    """The official procedure's choices: windows, condition scale, init strength and preset, text edit."""
    group = p.add_argument_group("the paper's procedure")
    group.add_argument("--windows", choices=WINDOWS,
                       help="official: consecutive windows of N segments, each giving its N segments' conditions "
                            "(the official txt2img); sliding: a window ending at each segment, its newest "
                            f"segment's condition (as live). Paper: {paper('windows')}, fast: {fast('windows')}")
    img2img = IMG2IMG_PRESETS["official"]
    group.add_argument("--condition-scale", type=float, metavar="X",
                       help="MAP input X * alpha_n * s_n (default N = 5, the paper; official img2img: "
                            f"{shown(img2img['condition_scale'])})")
    group.add_argument("--strength", type=float, metavar="S",
                       help="with --init-image: noise it to the timestep of strength S in (0, 1] (the last "
                            "int(steps * S) steps run, as img2img), whatever delta is (default: noised to delta)")
    group.add_argument("--img2img-preset", choices=tuple(IMG2IMG_PRESETS),
                       help=f"with --init-image: the official img2img settings ({img2img_summary(img2img)})")
    group.add_argument("--edit-prompt", metavar="TEXT",
                       help="a text concept guided beside the audio (the paper's joint text + audio "
                            "conditioning: a second SEGA edit, masked and summed)")
    group.add_argument("--edit-scale", type=float, metavar="S",
                       help=f"guidance scale of --edit-prompt (fast: {fast('edit_scale')}; paper: the audio "
                            "guidance, as the official code scales both concepts by s_e)")


def img2img_summary(preset: dict) -> str:
    """An img2img preset's settings in a few words. Its s_e is given as the official script's, which the
    official DDIM step halves (``config.IMG2IMG_PRESETS`` holds the halved one)."""
    value = {name: shown(setting) for name, setting in preset.items()}
    momentum = "no momentum carried" if preset["momentum_scale"] == 0 else f"momentum {value['momentum_scale']}"
    return (f"{value['sampler'].upper()}, g {value['text_guidance']}, s_e {shown(2 * preset['audio_guidance'])} "
            f"halved, threshold {value['threshold']}, t<{value['delta_timestep']}, condition "
            f"x{value['condition_scale']}, {momentum}, strength {value['strength']}")


def scene_spec(args: argparse.Namespace) -> SceneSpec:
    overrides = {name: getattr(args, name, None) for name in RENDER_SETTING_FLAGS}
    if args.size is not None:
        overrides.update(width=args.size[0], height=args.size[1])
    return checked(SceneSpec, args.prompt, args.negative_prompt, args.init_image, args.mode, overrides,
                   getattr(args, "edit_prompt", None), getattr(args, "img2img_preset", None))


# ---- models and backends ------------------------------------------------------------------------


MODEL_NAMES_HELP = (f"{FAST_DEFAULT_MODEL} (default; SD 1.5 + LCM LoRA), {PAPER_DEFAULT_MODEL} (paper mode's default: "
                    "CompVis/stable-diffusion-v1-4, the official code's), sd-turbo, mini (trained on a synthetic "
                    "world, shipped: no download), tiny (random weights, for speed tests), a diffusers folder, a "
                    ".safetensors checkpoint, or a Hugging Face repo id")


def add_model_option(group, default: str | None = DEFAULT_MODEL, purpose: str = "") -> None:
    """--model: the Stable Diffusion model (an alias, a folder, a single file or a hub id)."""
    group.add_argument("--model", default=default, help=(purpose + ": " if purpose else "") + MODEL_NAMES_HELP)


def add_compute_device_option(group) -> None:
    """--compute-device: where the networks run (--device is always the sound device)."""
    group.add_argument("--compute-device", default="auto", metavar="DEVICE",
                       help=f"where the networks run: {DEVICE_NAMES_HELP} (default %(default)s: CUDA, else MPS, "
                            "else the CPU)")


def add_seed_option(group, what: str, default: int = FAST_PRESET.seed) -> None:
    """--seed: the seed of a command's randomness (the same seed, the same result); ``default`` is the seed
    the command's settings take when the flag is left out (shown, not set: None reaches the spec)."""
    group.add_argument("--seed", type=int, metavar="N",
                       help=f"seed of {what}: the same seed, the same result ({default})")


def add_model_options(p: argparse.ArgumentParser, model_default: str | None = DEFAULT_MODEL) -> None:
    """The diffusion model, its decoder, the audio conditioning, the compute device and precision."""
    models = p.add_argument_group("models")
    add_model_option(models, model_default)
    models.add_argument("--lora", help="a LoRA to fuse (folder, .safetensors or repo id)")
    models.add_argument("--lora-scale", type=float, metavar="S",
                        help=f"strength of --lora, or of the model alias's LoRA ({ModelSpec.lora_scale})")
    models.add_argument("--taesd", help="TAESD decoder (folder or repo id), or 'none'")
    models.add_argument("--decoder", choices=DECODERS, help="fast: taesd, paper: vae")
    add_encoder_option(models, "audio conditioning: a TPoS checkpoint (.safetensors with its .json), 'random' "
                               "(untrained TPoS), or 'clap' / 'clap:FOLDER|REPO_ID' (zero-shot concept bank, "
                               "default laion/clap-htsat-unfused). Default: the TPoS encoder set by "
                               "import/training, else the CLAP bank")
    models.add_argument("--concepts", type=Path, metavar="TOML",
                        help="concept bank TOML for CLAP conditioning (default: the bundled bank of 14 concepts)")
    add_compute_device_option(models)
    models.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                        help="network precision (auto: float16 on CUDA and MPS, float32 on CPU)")
    add_backend_options(models)


def add_encoder_option(group, help_text: str) -> None:
    """--encoder: the audio encoder (a TPoS checkpoint, 'random', or what the command's help adds)."""
    group.add_argument("--encoder", help=help_text)


def add_backend_options(group) -> None:
    """--backend, --allow-fallback, --engines, --static-shapes."""
    group.add_argument("--backend", default=BackendSpec.name, choices=tuple(BACKENDS),
                       help="what runs the UNet and decoder: " + "; ".join(f"{name}: {what}"
                                                                           for name, what in BACKENDS.items()))
    group.add_argument("--allow-fallback", action="store_true",
                       help="if the backend cannot run here, use torch instead (with a warning)")
    group.add_argument("--engines", type=Path, metavar="DIR", help="ONNX/TensorRT artefacts (default engines/)")
    group.add_argument("--static-shapes", action="store_true", help="TensorRT: one batch size, run as CUDA graphs")


def model_spec(args: argparse.Namespace) -> ModelSpec:
    """The model flags' spec; no --model: the mode's default model (:func:`default_model`)."""
    model = args.model or default_model(getattr(args, "mode", "fast"))
    given = {} if args.lora_scale is None else {"lora_scale": args.lora_scale}
    if given and args.lora is None and getattr(ALIASES.get(model), "lora", None) is None:
        raise UserError(f"--lora-scale scales a LoRA and model '{model}' fuses none: give --lora too")
    return checked(ModelSpec, model=model, lora=args.lora, taesd=args.taesd, device=args.compute_device,
                   dtype=args.dtype, **given)


def backend_spec(args: argparse.Namespace, switchable: bool = False) -> BackendSpec:
    """The backend flags' spec; unless the backend can be ``switchable`` later (the app), --engines and
    --static-shapes that the backend would not read are refused."""
    spec = checked(BackendSpec, args.backend, args.allow_fallback, args.engines, args.static_shapes)
    if not switchable:
        checked(spec.refuse_unused_engine_options)
    return spec


def conditioning_spec(args: argparse.Namespace) -> ConditioningSpec:
    return checked(ConditioningSpec, args.encoder, args.concepts, getattr(args, "clap_model", None))


# ---- live: sound, timing, control, outputs --------------------------------------------------------


def add_sound_options(p: argparse.ArgumentParser, device_default: str, gain_default: float | None) -> None:
    """Where the sound comes from: a device, a file played in real time, or a test signal (live and app)."""
    audio = p.add_argument_group("sound")
    where = audio.add_mutually_exclusive_group()
    where.add_argument("--device", help=f"capture device: index or (part of) its name (default: {device_default})")
    where.add_argument("--file", type=Path, help="play this audio file in real time instead of capturing")
    where.add_argument("--synthetic", action="store_true", help="a built-in test signal instead of capturing")
    audio.add_argument("--host-api", help="look for --device on this host API only (ALSA, JACK, WASAPI, ...)")
    audio.add_argument("--sample-rate", type=int, help="capture rate (default: the encoder's if the device "
                                                       "supports it, else the device's)")
    audio.add_argument("--channel", type=int, help="use only this input channel (0 is the first; default: "
                                                   "mix all down)")
    gain_help = "input gain in dB (" + ("the saved one" if gain_default is None else f"{gain_default:g}") + ")"
    audio.add_argument("--gain", type=float, default=gain_default, dest="gain_db", help=gain_help)
    audio.add_argument("--latency", choices=LATENCIES,
                       help=f"the device's input latency: PortAudio's suggested low or high one "
                            f"({SourceSpec.latency}); the stats show what the device gave")
    audio.add_argument("--play-to", help="with --file: also play it on this output device")
    audio.add_argument("--loop", action="store_true", help="with --file: start over at the end")


def source_spec(args: argparse.Namespace, gain_db: float | None = None) -> SourceSpec:
    """The sound flags' source (``gain_db`` when the flags leave the gain to the caller)."""
    kind = "file" if args.file is not None else "synthetic" if args.synthetic else "device"
    if kind != "device" and args.latency is not None:
        raise UserError("--latency is how a device captures: leave it out with --file or --synthetic")
    if kind == "synthetic" and args.channel is not None:
        raise UserError("--channel picks an input channel of a device or a file; the test signal has one: "
                        "leave --channel out with --synthetic")
    gain = args.gain_db if args.gain_db is not None else (gain_db or 0.0)
    latency = {} if args.latency is None else {"latency": args.latency}
    return checked(SourceSpec, kind, args.device, args.file, args.host_api, args.sample_rate, args.channel, gain,
                   args.play_to, args.loop, **latency)


def add_live_timing_options(group, crossfade_default: float | None, crossfade_help: str) -> None:
    """--hop and --crossfade (``crossfade_default`` None: LiveSettings' or the caller's, see :func:`live_settings`)."""
    group.add_argument("--hop", type=float, default=LiveSettings.hop_seconds,
                       help="seconds between encoder updates (%(default)s)")
    group.add_argument("--crossfade", type=float, default=crossfade_default, help=crossfade_help)


def live_settings(args: argparse.Namespace) -> LiveSettings:
    """--hop and --crossfade (left out: LiveSettings' default, or what the caller puts in its place)."""
    crossfade = {} if args.crossfade is None else {"crossfade_seconds": args.crossfade}
    return checked(LiveSettings, hop_seconds=args.hop, **crossfade)


def add_control_options(p: argparse.ArgumentParser) -> None:
    """OSC, MIDI, presets, tempo, Link, modulation and NDI/Spout/Syphon (all off by default; docs/control.md)."""
    group = p.add_argument_group("live control (docs/control.md)")
    group.add_argument("--osc-port", type=int, metavar="PORT", help="listen for OSC on this UDP port")
    group.add_argument("--osc-host", help=f"with --osc-port: the address to listen on ({ControlSpec.osc_host}: "
                                          "this machine only; 0.0.0.0: the network)")
    group.add_argument("--midi-port", metavar="NAME", help="MIDI input: index or (part of) its name")
    group.add_argument("--midi-map", type=Path, metavar="FILE", help="MIDI mappings (.json or .toml; default: "
                                                                     "midi.json in the settings folder)")
    group.add_argument("--midi-learn", metavar="TARGET,...", help="learn these knobs/triggers in turn from the "
                                                                  "next controls moved; saved to --midi-map")
    group.add_argument("--presets", type=Path, metavar="FOLDER", help="preset files (*.toml) to recall by "
                                                                      "OSC/MIDI")
    group.add_argument("--quantise", choices=QUANTISE_CHOICES, default=ControlSpec.quantise,
                       help="preset changes land on the next beat or bar (%(default)s)")
    group.add_argument("--tempo", choices=TEMPO_CHOICES, default=ControlSpec.tempo,
                       help="the beat clock follows the sound (default), only taps, or the 24-ppqn clock and "
                            "start/stop of --midi-port (midi-clock)")
    group.add_argument("--link", action="store_true",
                       help="join an Ableton Link session: its tempo and beat phase drive --quantise and the "
                            "beat/bar modulation")
    group.add_argument("--link-lead", action="store_true",
                       help="with --link: push this session's tempo (--tempo audio or tap) to the Link session")
    low, high = ControlSpec.bpm_range
    group.add_argument("--bpm-range", type=parse_bpm_range, default=ControlSpec.bpm_range, metavar="LOW:HIGH",
                       help=f"tempi the audio tempo may take ({low:g}:{high:g}); narrow it if it reads double or "
                            "half")
    group.add_argument("--beats-per-bar", type=int, default=ControlSpec.beats_per_bar,
                       help="for --quantise bar (%(default)s)")
    group.add_argument("--modulate", action="append", default=[], metavar="FEATURE:KNOB:LOW:HIGH[:GAIN[:SMOOTH]]",
                       help="drive a knob from low/mid/high/onset/loudness, or tempo-synced beat/bar "
                            "(repeatable)")
    group.add_argument("--ndi", metavar="NAME", help="send the frames as an NDI source with this name")
    group.add_argument("--spout", metavar="NAME", help="send the frames as a Spout sender with this name (Windows)")
    group.add_argument("--syphon", metavar="NAME", help="send the frames as a Syphon server with this name (macOS)")


def parse_bpm_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(":"))
    except ValueError:
        example = ":".join(f"{bpm:g}" for bpm in ControlSpec.bpm_range)
        raise argparse.ArgumentTypeError(f"--bpm-range takes LOW:HIGH in BPM, like {example}; got {text!r}") from None
    return low, high


def control_spec(args: argparse.Namespace) -> ControlSpec:
    learn = tuple(t.strip() for t in (args.midi_learn or "").split(",") if t.strip())
    if args.osc_host is not None and args.osc_port is None:
        raise UserError("--osc-host is where OSC listens: give --osc-port PORT too")
    host = {} if args.osc_host is None else {"osc_host": args.osc_host}
    return checked(ControlSpec, osc_port=args.osc_port, **host, midi_port=args.midi_port,
                   midi_map=args.midi_map, midi_learn=learn, presets=args.presets, quantise=args.quantise,
                   tempo=args.tempo, bpm_range=args.bpm_range, beats_per_bar=args.beats_per_bar,
                   modulate=tuple(args.modulate), link=args.link, link_lead=args.link_lead)


def output_spec(args: argparse.Namespace) -> OutputSpec:
    """The outputs asked for; UserError (nothing started yet) for Spout or Syphon on the wrong platform."""
    from tpos_live.control.video_out import check_platform

    spec = checked(OutputSpec, record=getattr(args, "record", None), ndi=args.ndi, spout=args.spout,
                   syphon=args.syphon)
    for output in spec.video_outputs():
        check_platform(output)
    return spec


def add_quiet_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help=what)
