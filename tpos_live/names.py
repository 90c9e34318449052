"""The names that specs, the command line and the code they configure share, importable without torch
(so that ``tpos-live --help`` answers at once). Each is defined here once."""

from __future__ import annotations

MODES = ("fast", "paper")
SAMPLERS = ("lcm", "ddim", "plms")
DECODERS = ("taesd", "vae")
DTYPE_NAMES = ("float32", "bfloat16", "float16")
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"  # compute devices a spec may name (mps: Apple GPUs)
DEVICE_NAMES_HELP = "cpu, cuda, cuda:N, mps (Apple GPU) or auto"
LATENCIES = ("low", "high")  # PortAudio's suggested input latencies (audio/capture.py)
SPECTROGRAM_FLOORS = ("official", "relative", "absolute")  # dB reference of an encoder's maps (audio/spectrogram.py)
TEXT_TARGETS = ("projected", "pooled")  # the encoder's InfoNCE text target (training/targets.py)
# tpos-live evaluate's metrics (docs/evaluation.md); the first two need no network and are the default.
METRICS = ("reactivity", "flicker", "clip-text", "clip-audio", "is", "fvd", "object-accuracy")
DEFAULT_METRICS = ("reactivity", "flicker")
# object-accuracy scores renders of the mini world's sounds against their timeline: not part of "all".
ALL_METRICS = tuple(name for name in METRICS if name != "object-accuracy")
# object-accuracy counts a frame from this long after each change of object: two encoder segments (1.79 s
# each), so that the newest two of a window's five carry the new sound.
OBJECT_LAG_SECONDS = 3.6
WINDOWS = ("official", "sliding")  # how a file is cut into encoder windows (conditioning/windows.py)
# How frames are made (diffusion/renderer.py): "auto" composes them from keyframes where that is exact (one
# guided step) and renders each frame otherwise; "keyframes" also linearises several guided steps in g_s.
FRAME_PATHS = ("auto", "keyframes", "per-frame")
# The text encoders a model stack can have (ModelStack.text_family): an audio encoder is trained for one.
CLIP_L14_FAMILY = "clip-vit-l-14"  # SD 1.x
OPENCLIP_H14_FAMILY = "openclip-vit-h-14"  # SD 2.x, sd-turbo
TINY_FAMILY = "tiny"  # the tiny test stacks
MINI_FAMILY = "mini"  # the mini world's own small text encoder
TEXT_FAMILIES = (CLIP_L14_FAMILY, OPENCLIP_H14_FAMILY, TINY_FAMILY, MINI_FAMILY)
IMG2IMG_PRESETS = ("official",)  # settings presets for an init image (config.IMG2IMG_PRESETS)

BACKENDS: dict[str, str] = {
    "torch": "the model's torch modules as loaded (eager)",
    "torch-compiled": "torch.compile (inductor, frozen weights), compiled on the first frame of each shape",
    "torch-bf16": "bfloat16 weights in channels_last: the fast path on CPUs with AMX or AVX512-BF16",
    "torch-cuda-graphs": "CUDA graphs of the torch networks, float16 (or bfloat16 with --dtype bfloat16) in "
                         "channels_last, captured once per batch size: the GPU fast path without TensorRT",
    "onnxruntime": "ONNX Runtime, TAESD decoder (exported to engines/ on first use)",
    "tensorrt": "TensorRT 10+ engines on a CUDA GPU, TAESD decoder (built into engines/ on first use)",
}
OFFICIAL_MAP_OUTPUT = "gelu"
MAP_OUTPUTS = (OFFICIAL_MAP_OUTPUT, "linear")
"""MAP's output: the official dropout and GELU (no output below -0.17), or a plain linear one, for text
encoders whose tokens go further below zero (the mini world's: a third of its tokens' values do)."""
MODEL_METADATA_FILE = "tpos_live.json"  # our facts about a saved model folder (name, defaults, random weights)
