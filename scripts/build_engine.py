"""Build TensorRT engines of the UNet and TAESD decoder into the engine store (``engines/``).

TensorRT 10 API only, strongly typed: the engine's precision is the ONNX export's (``--precision``
float16, bfloat16 or float32). One optimisation profile per engine: ranged over the renderer's
batches (guidance branches x frames) at one resolution, or ``--static`` (one batch: the engine runs as
a CUDA graph). Builds share a timing cache per TensorRT version and GPU. An engine already in the
store for the same weights, shapes, precision, TensorRT version and GPU is reused; any other is
rebuilt, never used. Needs a CUDA GPU and ``pip install 'tpos-live[tensorrt]'``. Examples::

    .venv/bin/python scripts/build_engine.py --model sd15-lcm --size 512x512 --precision float16 --check
    .venv/bin/python scripts/build_engine.py --model tiny --size 64x64 --static --batch 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from tpos_live.backends.engines import EngineStore
from tpos_live.backends.network_specs import PRECISIONS, render_profiles, taesd_decoder_network, unet_network
from tpos_live.backends.onnx_backend import relative_error
from tpos_live.backends.tensorrt_backend import (
    ENGINE_PRECISIONS,
    TensorRTEngine,
    ensure_engine,
    tensorrt_unavailable_reason,
)
from tpos_live.cli.options import parse_size
from tpos_live.errors import UserError


def build(args) -> list[dict]:
    from tpos_live.diffusion.loading import load_stack
    from tpos_live.diffusion.models import ModelSpec
    from tpos_live.diffusion.random_stacks import build_random_stack

    reason = tensorrt_unavailable_reason()
    if reason is not None:
        raise UserError(f"cannot build TensorRT engines here: {reason}")
    if args.random:
        stack = build_random_stack(args.random, seed=0)
    else:
        stack = load_stack(ModelSpec(model=args.model, taesd=args.taesd), progress=True)
    for module in stack.modules().values():
        module.to("cuda", PRECISIONS[args.precision])
    width, height = args.size
    profiles = render_profiles(stack, width, height, args.batch, static=args.static)
    store = EngineStore(args.engines)
    makers = {"unet": unet_network, "taesd_decoder": taesd_decoder_network}
    reports = []
    for name in args.networks:
        network, profile = makers[name](stack), profiles[name]
        started = time.perf_counter()
        path = ensure_engine(network, profile, store, say=lambda m: print(m, file=sys.stderr),
                             workspace_bytes=int(args.workspace_gb * 2**30) if args.workspace_gb else None)
        report = {"network": name, "path": str(path), "precision": args.precision, "profile": profile.key(),
                  "bytes": path.stat().st_size, "seconds": round(time.perf_counter() - started, 1)}
        if args.check:
            report.update(check(network, path, profile))
        reports.append(report)
        print(json.dumps(report), flush=True)
    return reports


@torch.inference_mode()
def check(network, path: Path, profile) -> dict:
    """Relative error against torch and milliseconds per call at the profile's opt shape."""
    engine = TensorRTEngine(path, network.spec, network.precision)
    inputs = network.spec.example_inputs(profile.opt, network.precision, device="cuda")
    expected = network(inputs)
    got = engine.run(inputs)
    errors = {name: relative_error(got[name], expected[name]) for name in expected}
    for _ in range(3):
        engine.run(inputs)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(20):
        engine.run(inputs)
    torch.cuda.synchronize()
    return {"relative_error": errors, "ms_per_call": 1000 * (time.perf_counter() - started) / 20,
            "cuda_graph": engine.cuda_graphs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", default="sd15-lcm", help="alias, folder or hub id (default sd15-lcm)")
    source.add_argument("--random", choices=("sd15", "sd-turbo"),
                        help="a full-size architecture, random weights")
    parser.add_argument("--taesd", help="TAESD decoder for --model")
    parser.add_argument("--networks", nargs="+", default=["unet", "taesd_decoder"],
                        choices=("unet", "taesd_decoder"))
    parser.add_argument("--size", type=parse_size, default=(512, 512), metavar="WxH", help="frame size (512x512)")
    parser.add_argument("--batch", type=int, default=1, help="frames per batch the renderer uses (1)")
    parser.add_argument("--precision", default="float16", choices=ENGINE_PRECISIONS)
    parser.add_argument("--static", action="store_true", help="one batch size: CUDA graphs at run time")
    parser.add_argument("--workspace-gb", type=float, help="TensorRT workspace limit (default: TensorRT's)")
    parser.add_argument("--check", action="store_true", help="compare with torch and time the engine")
    parser.add_argument("--engines", type=Path, help="engine store folder (default: the checkout's engines/)")
    args = parser.parse_args()
    try:
        build(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
