"""Import the official TPoS weights (ku-vai/TPoS ``audio_encoder_23.pth`` and ``map_model_23.pth``).

Both files are pickled torch state dicts. They are read with ``torch.load(weights_only=True)``, which
builds tensors and plain containers only and refuses any other Python object, so a file cannot run code
by being imported. Every tensor is then checked, name by name and shape by shape, against the official
module structure (read from a public copy of the official model code):

``Audio_Encoder`` (D = 768, N = 5 segments), in its state dict's order::

    T_A.weight (512, N*D), T_A.bias (512,)           unused by its forward pass
    T_A2.weight (N*512, N*D), T_A2.bias (N*512,)     unused
    conv.weight (3, 1, 3, 3), conv.bias (3,)         -> input_conv.*
    conv2.weight (77, 1, 1, 1), conv2.bias (77,)     unused
    feature_extractor.* (timm resnet18, D classes)   -> backbone.*
    lstm.{weight,bias}_{ih,hh}_l0 (4D, D) / (4D,)    -> lstm.*
    cnn.weight (1, D, 1), cnn.bias (1,)              -> attention.*

``Mapping_Model``: ``linear1`` (10D, D), ``linear2`` (76D, 10D) -> MAP's ``linear1`` / ``linear2``.

Keys may carry DataParallel's ``module.`` prefix (the official training wraps both models in it). The
unused layers are dropped; they may be absent, but when present must have their official shapes. D and
N are read from the file (``cnn.weight`` and ``T_A.weight``; N = 5 when ``T_A`` is absent). The first
missing, unexpected or wrongly shaped tensor is named in a UserError.

The official encoder was aligned to SD 1.4's text encoder (CLIP ViT-L/14) and at inference fed the
linear STFT map (``"stft"``, our default front end) at the official floor (``"official"``: dB re 1.0,
floored 80 dB below the file's peak), which the converted checkpoint records unless told otherwise; it was
trained on 128-band mel maps (``"mel"``, n_fft 2048).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from tpos_live.audio.spectrogram import SpectrogramConfig
from tpos_live.conditioning.base import TEXT_TOKENS
from tpos_live.conditioning.checkpoint import save_tpos
from tpos_live.conditioning.tpos_encoder import (
    MAP_HIDDEN_MULT,
    MappingModule,
    TPoSAudioEncoder,
    TPoSConfig,
    build_tpos_modules,
)
from tpos_live.errors import UserError
from tpos_live.names import CLIP_L14_FAMILY

OFFICIAL_TEXT_FAMILY = CLIP_L14_FAMILY  # SD 1.4
OFFICIAL_SEGMENTS = 5
UNUSED_WIDTH = 512  # width of the official T_A / T_A2 layers
DATA_PARALLEL_PREFIX = "module."
# Official encoder prefix -> ours, in the official state dict's order (None: dropped).
ENCODER_PREFIXES: tuple[tuple[str, str | None], ...] = (
    ("T_A.", None),
    ("T_A2.", None),
    ("conv.", "input_conv."),
    ("conv2.", None),
    ("feature_extractor.", "backbone."),
    ("lstm.", "lstm."),
    ("cnn.", "attention."),
)
UNUSED_PREFIXES = tuple(prefix for prefix, ours in ENCODER_PREFIXES if ours is None)
MAP_KEYS = ("linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias")


def import_official(
    encoder_path: str | os.PathLike[str],
    map_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    spectrogram: SpectrogramConfig | None = None,
    text_family: str = OFFICIAL_TEXT_FAMILY,
) -> tuple[Path, Path]:
    """Convert the two official files into our checkpoint ``<output>.safetensors`` + ``.json``.

    ``spectrogram`` defaults to the official inference map (``"stft"``, 128 x 153 per segment, the
    official floor). Raises UserError when a file is missing, unreadable, holds other objects than tensors, or does
    not match the official structure.
    """
    encoder_state = read_state_dict(encoder_path, "official audio encoder")
    map_state = read_state_dict(map_path, "official MAP")
    encoder, map_model, config = convert_official(
        encoder_state,
        map_state,
        spectrogram=spectrogram,
        text_family=text_family,
        encoder_name=str(encoder_path),
        map_name=str(map_path),
    )
    return save_tpos(output, encoder, map_model, config)


def read_state_dict(path: str | os.PathLike[str], what: str) -> dict[str, torch.Tensor]:
    """A ``{name: tensor}`` dict from a ``.pth`` file, without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file '{path}' does not exist: check the path")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+)", str(error))
        reason = f"it would import {found.group(1)}" if found else "it is not a PyTorch file, or is damaged"
        raise UserError(
            f"{what} file '{path}' is not a plain state dict of tensors ({reason}): refused without "
            "running it; give the official .pth file"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        reason = str(error).split(". ")[0]
        raise UserError(
            f"{what} file '{path}' is not a readable PyTorch file ({reason}): it may be truncated; "
            "download it again"
        ) from None
    if not isinstance(state, Mapping):
        raise UserError(f"{what} file '{path}' holds a {type(state).__name__}, not a state dict of tensors")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise UserError(
                f"{what} file '{path}' is not a state dict of tensors (entry {key!r} holds a "
                f"{type(value).__name__}): give the official .pth file"
            )
    return dict(state)


def convert_official(
    encoder_state: Mapping[str, torch.Tensor],
    map_state: Mapping[str, torch.Tensor],
    *,
    spectrogram: SpectrogramConfig | None = None,
    text_family: str = OFFICIAL_TEXT_FAMILY,
    encoder_name: str = "audio encoder",
    map_name: str = "MAP",
) -> tuple[TPoSAudioEncoder, MappingModule, TPoSConfig]:
    """Official state dicts -> our encoder, MAP (float32, eval mode) and config, after checking both."""
    encoder_state = _strip_data_parallel(encoder_state, encoder_name)
    map_state = _strip_data_parallel(map_state, map_name)
    embed_dim, segments = _encoder_sizes(encoder_state, encoder_name)
    _check_tensors(
        encoder_state, official_encoder_shapes(embed_dim, segments), encoder_name, optional=UNUSED_PREFIXES
    )
    _check_tensors(map_state, official_map_shapes(embed_dim), map_name, optional=())
    if spectrogram is None:
        spectrogram = SpectrogramConfig(kind="stft", segments=segments, floor="official")
    try:
        config = TPoSConfig(
            embed_dim=embed_dim, segments=segments, spectrogram=spectrogram, text_family=text_family
        )
    except ValueError as error:
        raise UserError(f"cannot import the official weights with this front end: {error}") from None
    with torch.device("meta"):  # shapes only: the tensors come from the files
        encoder, map_model = build_tpos_modules(config)
    encoder.load_state_dict(_renamed_encoder_state(encoder_state), strict=True, assign=True)
    map_model.load_state_dict({key: map_state[key].float() for key in MAP_KEYS}, strict=True, assign=True)
    return encoder.eval(), map_model.eval(), config


def official_encoder_shapes(embed_dim: int, segments: int = OFFICIAL_SEGMENTS) -> dict[str, tuple[int, ...]]:
    """Every tensor of the official ``Audio_Encoder``'s state dict, in its order, with its shape."""
    with torch.device("meta"):
        ours = TPoSAudioEncoder(embed_dim, segments).state_dict()
    unused = {
        "T_A.": {"weight": (UNUSED_WIDTH, segments * embed_dim), "bias": (UNUSED_WIDTH,)},
        "T_A2.": {
            "weight": (segments * UNUSED_WIDTH, segments * embed_dim),
            "bias": (segments * UNUSED_WIDTH,),
        },
        "conv2.": {"weight": (TEXT_TOKENS, 1, 1, 1), "bias": (TEXT_TOKENS,)},
    }
    shapes: dict[str, tuple[int, ...]] = {}
    for official, our_prefix in ENCODER_PREFIXES:
        if our_prefix is None:
            shapes.update({official + name: shape for name, shape in unused[official].items()})
            continue
        for key, value in ours.items():
            if key.startswith(our_prefix):
                shapes[official + key[len(our_prefix) :]] = tuple(value.shape)
    return shapes


def official_map_shapes(embed_dim: int) -> dict[str, tuple[int, ...]]:
    """The official ``Mapping_Model``'s tensors and shapes."""
    hidden, out = MAP_HIDDEN_MULT * embed_dim, (TEXT_TOKENS - 1) * embed_dim
    return {
        "linear1.weight": (hidden, embed_dim),
        "linear1.bias": (hidden,),
        "linear2.weight": (out, hidden),
        "linear2.bias": (out,),
    }


def _strip_data_parallel(state: Mapping[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    prefixed = [key.startswith(DATA_PARALLEL_PREFIX) for key in state]
    if not any(prefixed):
        return dict(state)
    if not all(prefixed):
        raise UserError(
            f"'{name}' mixes keys with and without the 'module.' prefix: not an official TPoS file"
        )
    return {key[len(DATA_PARALLEL_PREFIX) :]: value for key, value in state.items()}


def _encoder_sizes(state: Mapping[str, torch.Tensor], name: str) -> tuple[int, int]:
    """``(D, N)`` from the attention layer and the unused ``T_A`` layer."""
    if "cnn.weight" not in state:
        hint = (
            " (it looks like a MAP file: give the audio encoder first, then the MAP)"
            if "linear1.weight" in state
            else ""
        )
        raise UserError(f"'{name}' lacks 'cnn.weight': not an official TPoS audio encoder{hint}")
    attention = state["cnn.weight"]
    if attention.ndim != 3 or attention.shape[0] != 1 or attention.shape[2] != 1:
        raise UserError(
            f"'{name}': tensor 'cnn.weight' has shape {tuple(attention.shape)}, expected (1, D, 1)"
        )
    embed_dim = int(attention.shape[1])
    segments = OFFICIAL_SEGMENTS
    temporal = state.get("T_A.weight")
    if temporal is not None and temporal.ndim == 2 and temporal.shape[1] % embed_dim == 0:
        segments = temporal.shape[1] // embed_dim
    return embed_dim, segments


def _check_tensors(
    state: Mapping[str, torch.Tensor],
    expected: dict[str, tuple[int, ...]],
    name: str,
    optional: tuple[str, ...],
) -> None:
    """Raise UserError naming the first missing, wrongly shaped or unexpected tensor."""
    for key, shape in expected.items():
        if key not in state:
            if key.startswith(optional):
                continue
            raise UserError(f"'{name}' lacks tensor '{key}' of shape {shape}: not an official TPoS file")
        tensor = state[key]
        if tuple(tensor.shape) != shape:
            raise UserError(
                f"'{name}': tensor '{key}' has shape {tuple(tensor.shape)}, "
                f"the official structure has {shape}"
            )
        counter = key.endswith("num_batches_tracked")
        if tensor.is_floating_point() == counter:
            kind = "an integer" if counter else "a floating-point"
            raise UserError(
                f"'{name}': tensor '{key}' is {tensor.dtype}, the official structure has {kind} one"
            )
    extra = [key for key in state if key not in expected]
    if extra:
        raise UserError(
            f"'{name}' holds tensor '{extra[0]}', which the official structure does not have "
            f"({len(extra)} unexpected in all): not an official TPoS file"
        )


def _renamed_encoder_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renamed = {}
    for official, ours in ENCODER_PREFIXES:
        if ours is None:
            continue
        for key, value in state.items():
            if key.startswith(official):
                renamed[ours + key[len(official) :]] = value.float() if value.is_floating_point() else value
    return renamed
