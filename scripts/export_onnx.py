"""Export the networks to ONNX, check them, and compare ONNX Runtime with torch on the same inputs.

Networks: ``unet``, ``taesd_decoder`` (of a model stack), ``audio_segment``, ``audio_window`` (of a
TPoS audio encoder). Each goes to the engine store (``engines/`` and its manifest, reused while the
weights are unchanged) or, with ``--out``, to that folder; the ONNX checker runs on every file, and
``--check`` runs ONNX Runtime against torch at the export shape and at another one (batch and size
are dynamic) and reports the relative error ``||ort - torch|| / ||torch||`` per output. Examples::

    .venv/bin/python scripts/export_onnx.py --model tiny --check
    flock /tmp/tpos-heavy.lock .venv/bin/python scripts/export_onnx.py --random sd15 --networks unet \\
        --size 256x256 --check --out /tmp/sd15-onnx
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from tpos_live.backends.engines import EngineStore
from tpos_live.backends.network_specs import (
    PRECISIONS,
    audio_profiles,
    audio_segment_network,
    audio_window_network,
    render_profiles,
    taesd_decoder_network,
    unet_network,
)
from tpos_live.backends.onnx_backend import OPSET, ensure_onnx, export_onnx, onnx_parity
from tpos_live.cli.options import parse_size
from tpos_live.errors import UserError

NETWORKS = ("unet", "taesd_decoder", "audio_segment", "audio_window")


def load_models(args):
    """The model stack (and TPoS encoder when an audio network is asked for), in ``args.precision``."""
    from tpos_live.diffusion.loading import load_stack
    from tpos_live.diffusion.models import ModelSpec
    from tpos_live.diffusion.random_stacks import build_random_stack

    if args.random:
        stack = build_random_stack(args.random, seed=0)
    else:
        stack = load_stack(ModelSpec(model=args.model, taesd=args.taesd), progress=False)
    dtype = PRECISIONS[args.precision]
    for module in stack.modules().values():
        module.to(dtype)
    encoder = None
    if {"audio_segment", "audio_window"} & set(args.networks):
        encoder = load_encoder(args.encoder, stack.cross_attention_dim)
        encoder.encoder.to(dtype)
        encoder.map_model.to(dtype)
    return stack, encoder


def load_encoder(name: str, embed_dim: int):
    from tpos_live.conditioning.checkpoint import load_tpos, random_tpos
    from tpos_live.conditioning.tpos_encoder import TPoSConfig

    if name == "random":
        return random_tpos(TPoSConfig(embed_dim=embed_dim), seed=0)
    return load_tpos(name, device="cpu")


def networks_to_export(args, stack, provider):
    width, height = args.size
    profiles = {**render_profiles(stack, width, height, args.batch), **audio_profiles()}
    makers = {
        "unet": lambda: unet_network(stack),
        "taesd_decoder": lambda: taesd_decoder_network(stack),
        "audio_segment": lambda: audio_segment_network(provider.encoder, provider.config),
        "audio_window": lambda: audio_window_network(provider.encoder, provider.map_model, provider.config),
    }
    return [(makers[name](), profiles[name]) for name in args.networks]


def other_shape(profile) -> dict[str, int]:
    """A shape other than the export's: a different batch (and resolution for image networks)."""
    values = dict(profile.opt)
    first = next(iter(values))
    values[first] = values[first] + 1
    if "height" in values:  # sizes stay multiples of 8, so every UNet level divides evenly
        values["height"] = max(8, values["height"] - 8)
    return values


def export_one(network, profile, args, store) -> dict:
    started = time.perf_counter()
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        path = export_onnx(network, args.out / f"{network.spec.name}.onnx", profile, args.opset)
    else:
        path = ensure_onnx(network, profile, store, say=lambda m: print(m, file=sys.stderr))
    files = [p for p in path.parent.iterdir() if p.name.startswith(path.name)]
    report = {
        "network": network.spec.name, "path": str(path), "precision": network.precision,
        "bytes": sum(p.stat().st_size for p in files),
        "external_data": any(p.suffix == ".data" for p in files),
        "export_seconds": round(time.perf_counter() - started, 1), "checker": "passed",
    }
    if args.check:
        report["relative_error"] = {}
        for values in (dict(profile.opt), other_shape(profile)):
            shape = ",".join(f"{k}={v}" for k, v in values.items())
            try:
                report["relative_error"][shape] = onnx_parity(network, path, values)
            except UserError as error:
                report["relative_error"][shape] = f"not checked: {error}"
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", default="tiny",
                        help="model to export (alias, folder or hub id; default tiny)")
    source.add_argument("--random", choices=("sd15", "sd-turbo"),
                        help="a full-size architecture, random weights")
    parser.add_argument("--taesd", help="TAESD decoder for --model")
    parser.add_argument("--encoder", default="random",
                        help="TPoS checkpoint for the audio networks, or random")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    parser.add_argument("--size", type=parse_size, default=(512, 512), metavar="WxH", help="frame size (512x512)")
    parser.add_argument("--batch", type=int, default=1, help="frames per batch the renderer uses (1)")
    parser.add_argument("--precision", default="float32", choices=sorted(PRECISIONS))
    parser.add_argument("--opset", type=int, default=OPSET)
    parser.add_argument("--check", action="store_true", help="compare ONNX Runtime with torch")
    parser.add_argument("--out", type=Path, help="write plain files here instead of the engine store")
    parser.add_argument("--engines", type=Path, help="engine store folder (default: the checkout's engines/)")
    args = parser.parse_args()
    try:
        stack, provider = load_models(args)
        store = EngineStore(args.engines)
        reports = []
        with torch.inference_mode(False):
            for network, profile in networks_to_export(args, stack, provider):
                reports.append(export_one(network, profile, args, store))
                print(json.dumps(reports[-1]), flush=True)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
