"""Our TPoS checkpoint format: ``<name>.safetensors`` (weights) next to ``<name>.json`` (config).

The safetensors file holds the encoder's state dict under ``encoder.`` and MAP's under ``map.``
(names as in :mod:`tpos_live.conditioning.tpos_encoder`), float32, plus BatchNorm's int64 counters.
The JSON file::

    {"format": "tpos-live-encoder", "format_version": 1,
     "embed_dim": 768, "map_tokens": 76, "segments": 5,
     "spectrogram": {"kind": "stft", "sample_rate": 44100, ...},
     "text_family": "clip-vit-l-14", "hop_seconds": null, "backbone_width": 64, "map_output": "gelu",
     "random_weights": false}

``backbone_width`` (the ResNet-18's) and ``map_output`` (MAP's output: activation and dropout; see
:class:`~tpos_live.conditioning.tpos_encoder.TPoSConfig`) may be absent: files written before them hold
the official width, 64, and the official GELU.

Loading checks both files completely against the model the config describes before using any weight,
and refuses anything else with a UserError.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tpos_live.audio.spectrogram import SpectrogramConfig
from tpos_live.conditioning.tpos_encoder import (
    MappingModule,
    TPoSAudioEncoder,
    TPoSConfig,
    TPoSProvider,
    build_tpos_modules,
)
from tpos_live.errors import UserError
from tpos_live.fileio import write_atomically
from tpos_live.limits import OFFICIAL_BACKBONE_WIDTH
from tpos_live.names import OFFICIAL_MAP_OUTPUT

__all__ = ["FORMAT", "FORMAT_VERSION", "TPoSConfig", "load_tpos", "random_tpos", "save_tpos"]

FORMAT = "tpos-live-encoder"
FORMAT_VERSION = 1
_PREFIXES = {"encoder": "encoder.", "map": "map."}
_REQUIRED_KEYS = (
    "format",
    "format_version",
    "embed_dim",
    "map_tokens",
    "segments",
    "spectrogram",
    "text_family",
    "hop_seconds",
    "random_weights",
)
_HOW_TO_GET_ONE = (
    "convert the official weights with `tpos-live import-tpos` or train one with `tpos-live train-encoder`"
)


def checkpoint_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(weights, config)`` paths of a checkpoint named by either file or by the shared stem."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_tpos(
    path: str | os.PathLike[str],
    encoder: TPoSAudioEncoder,
    map_model: MappingModule,
    config: TPoSConfig,
    *,
    random_weights: bool = False,
) -> tuple[Path, Path]:
    """Write ``<name>.safetensors`` and ``<name>.json``, each atomically; returns both paths."""
    weights_path, config_path = checkpoint_paths(path)
    tensors = {
        **{_PREFIXES["encoder"] + k: v for k, v in encoder.state_dict().items()},
        **{_PREFIXES["map"] + k: v for k, v in map_model.state_dict().items()},
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "embed_dim": config.embed_dim,
        "map_tokens": config.map_tokens,
        "segments": config.segments,
        "spectrogram": dataclasses.asdict(config.spectrogram),
        "text_family": config.text_family,
        "hop_seconds": config.hop_seconds,
        "backbone_width": config.backbone_width,
        "map_output": config.map_output,
        "random_weights": random_weights,
    }
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(weights_path, lambda temp: save_file(tensors, str(temp), metadata={"format": FORMAT}))
    write_atomically(config_path, lambda temp: temp.write_text(json.dumps(document, indent=2) + "\n"))
    return weights_path, config_path


def load_tpos(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> TPoSProvider:
    """Load a checkpoint saved by :func:`save_tpos` as a provider on ``device``.

    ``path`` names either file or their shared stem. Raises UserError when a file is missing or
    unreadable, the JSON lacks a key or holds a bad value, or the tensors differ from the model the
    config describes (missing, extra or wrongly shaped keys).
    """
    weights_path, _ = checkpoint_paths(path)
    config, random_weights = read_tpos_config(path)
    with torch.device("meta"):  # shapes only: the real tensors come from the file
        encoder, map_model = build_tpos_modules(config)
    modules = {"encoder": encoder, "map": map_model}
    expected = {
        _PREFIXES[part] + key: value
        for part, module in modules.items()
        for key, value in module.state_dict().items()
    }
    stored = _read_tensors(weights_path, expected)
    for part, module in modules.items():
        prefix = _PREFIXES[part]
        state = {key[len(prefix) :]: value for key, value in stored.items() if key.startswith(prefix)}
        module.load_state_dict(state, strict=True, assign=True)
    return TPoSProvider(
        encoder,
        map_model,
        config,
        name=f"tpos:{weights_path}",
        random_weights=random_weights,
        device=device,
    )


def read_tpos_config(path: str | os.PathLike[str]) -> tuple[TPoSConfig, bool]:
    """``(config, random_weights)`` of the checkpoint ``path`` names, after checking that both its files
    are there (cheap: what a command checks before any model loads). UserError saying what is wrong."""
    weights_path, config_path = checkpoint_paths(path)
    for file in (config_path, weights_path):
        if not file.is_file():
            raise UserError(f"TPoS encoder file '{file}' does not exist: {_HOW_TO_GET_ONE}")
    return _read_config(config_path)


def random_tpos(config: TPoSConfig, seed: int = 0, device: str | torch.device = "cpu") -> TPoSProvider:
    """A provider with randomly initialised weights (for speed tests and plumbing, not pictures).

    The same seed gives the same weights; the global torch random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder, map_model = build_tpos_modules(config)
    return TPoSProvider(encoder, map_model, config, name="tpos:random", random_weights=True, device=device)


def _read_config(config_path: Path) -> tuple[TPoSConfig, bool]:
    try:
        document = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(
            f"TPoS encoder config '{config_path}' is not readable JSON ({error}): {_HOW_TO_GET_ONE}"
        ) from error
    if not isinstance(document, dict):
        raise UserError(f"TPoS encoder config '{config_path}' is not a JSON object: {_HOW_TO_GET_ONE}")
    missing = [key for key in _REQUIRED_KEYS if key not in document]
    if missing:
        raise UserError(f"TPoS encoder config '{config_path}' lacks {', '.join(missing)}: {_HOW_TO_GET_ONE}")
    if document["format"] != FORMAT or document["format_version"] != FORMAT_VERSION:
        raise UserError(
            f"TPoS encoder config '{config_path}' has format {document['format']!r} version "
            f"{document['format_version']!r}; this tpos-live reads {FORMAT!r} version {FORMAT_VERSION}: "
            f"use the tpos-live that wrote it, or {_HOW_TO_GET_ONE}"
        )
    if not isinstance(document["random_weights"], bool):
        raise UserError(f"TPoS encoder config '{config_path}': random_weights must be true or false")
    try:
        spectrogram = SpectrogramConfig(**document["spectrogram"])
        config = TPoSConfig(
            embed_dim=document["embed_dim"],
            map_tokens=document["map_tokens"],
            segments=document["segments"],
            spectrogram=spectrogram,
            text_family=document["text_family"],
            hop_seconds=document["hop_seconds"],
            backbone_width=document.get("backbone_width", OFFICIAL_BACKBONE_WIDTH),  # absent: written before widths
            map_output=document.get("map_output", OFFICIAL_MAP_OUTPUT),
        )
    except (TypeError, ValueError) as error:
        raise UserError(
            f"TPoS encoder config '{config_path}' holds a bad value ({error}): {_HOW_TO_GET_ONE}"
        ) from error
    return config, document["random_weights"]


def _read_tensors(weights_path: Path, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Read every tensor after checking names, shapes and kinds against ``expected``."""
    try:
        with safe_open(str(weights_path), framework="pt") as file:
            stored_keys = set(file.keys())
            problem = _first_mismatch(file, stored_keys, expected)
            if problem:
                raise UserError(
                    f"TPoS encoder weights '{weights_path}' do not fit the model its config describes: "
                    f"{problem}. Check that the .json file belongs to these weights, or {_HOW_TO_GET_ONE}"
                )
            return {key: file.get_tensor(key).to(expected[key].dtype) for key in expected}
    except UserError:
        raise
    except Exception as error:  # safetensors reports damage with several exception types
        raise UserError(
            f"TPoS encoder weights '{weights_path}' are not a readable safetensors file ({error}): "
            f"{_HOW_TO_GET_ONE}"
        ) from error


def _first_mismatch(file: Any, stored_keys: set[str], expected: dict[str, torch.Tensor]) -> str | None:
    for key, reference in expected.items():
        if key not in stored_keys:
            return f"tensor '{key}' is missing"
        stored = file.get_slice(key)
        shape = tuple(stored.get_shape())
        if shape != tuple(reference.shape):
            return f"tensor '{key}' has shape {shape}, expected {tuple(reference.shape)}"
        is_float = stored.get_dtype() in ("F16", "BF16", "F32", "F64")
        if is_float != reference.dtype.is_floating_point:
            return f"tensor '{key}' has dtype {stored.get_dtype()}, expected {reference.dtype}"
    extra = sorted(stored_keys - expected.keys())
    if extra:
        return f"tensor '{extra[0]}' is not part of the model ({len(extra)} unexpected in all)"
    return None
