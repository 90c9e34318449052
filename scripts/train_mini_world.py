"""Train the mini world's models from nothing (tpos_live/mini/models.py, tpos_live/training/world.py).

    flock /tmp/tpos-heavy.lock .venv/bin/python scripts/train_mini_world.py OUT [--seed 0] [--ship]

In steps:

1. the diffusion stack (autoencoder, TAESD, text encoder, UNet) on the world's pictures and captions,
   saved as a diffusers folder at OUT (``load_stack`` reads it: ``--model OUT``);
2. the world's sounds, in ``train-encoder``'s folder layout, under OUT's work folder;
3. the TPoS audio encoder, by ``tpos-live train-encoder`` against OUT's text encoder (pooled targets:
   the world's text encoder has no CLIP projection), narrowed with ``--backbone-width``;
4. its best checkpoint copied into OUT as ``encoder.safetensors`` / ``encoder.json``;
5. with ``--ship``, OUT in float16 made the package's mini model (``tpos_live/mini/weights``,
   ``--model mini``), replacing the one there.

OUT must not exist or be empty; the work folder (``OUT.work``, the sounds and the encoder's run) is
kept for inspection. Each step says how long it took.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from make_mini_world import write_sounds
from safetensors.torch import load_file, save_file

from tpos_live.cli.main import main as tpos_live_main
from tpos_live.diffusion.folders import ENCODER_NAME, own_encoder, save_stack
from tpos_live.errors import UserError
from tpos_live.mini.models import untrained_mini_stack
from tpos_live.mini.world import CONCEPTS
from tpos_live.paths import mini_model_folder
from tpos_live.training.world import WorldRecipe, train_mini_stack

MINI_STEPS, MINI_GUIDANCE = 20, 4.0  # the mini UNet is not distilled: 20 PLMS steps with text guidance
# Fast mode's settings measured on the story (docs/evaluation.md, "The mini world"): its own size; every step
# guided by the audio (one guided step of 20 does not show the object); no loudness envelope (it lowers
# g_s where a sound is quiet, and the bell's decay and the birds' pauses then lose their object); frames
# composed from keyframes (one per condition: 5x faster than per frame here, and as accurate).
MINI_FAST_SETTINGS = {"width": 64, "height": 64, "delta_step": 0, "envelope_depth": 0.0, "frames": "keyframes"}
ABOUT = "mini: a model trained on a synthetic world ({} concepts), for trying the method offline; not Stable Diffusion"


def say(message: str) -> None:
    print(message, flush=True)


def train_stack(out: Path, recipe: WorldRecipe) -> None:
    stack = untrained_mini_stack(recipe.seed)
    losses = train_mini_stack(stack, recipe, say)
    stack.name = "mini"
    stack.about = ABOUT.format(len(CONCEPTS))
    stack.random_weights = False
    stack.default_steps, stack.default_guidance = MINI_STEPS, MINI_GUIDANCE
    stack.fast_settings = dict(MINI_FAST_SETTINGS)
    temp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(temp, ignore_errors=True)
    save_stack(stack, temp)
    temp.rename(out)
    say(f"stack saved to {out}; last losses {losses}")


def train_encoder(out: Path, work: Path, seed: int, clips: int, epochs: int, width: int, batch: int,
                  max_lr: float) -> None:
    sounds = work / "sounds"
    if not sounds.exists():
        write_sounds(sounds, seed, clips)
    run = work / "encoder"
    argv = ["train-encoder", str(sounds), "-o", str(run), "--model", str(out), "--text-target", "pooled",
            "--backbone-width", str(width), "--epochs", str(epochs), "--batch-size", str(batch),
            "--max-lr", str(max_lr), "--map-output", "linear",
            "--seed", str(seed), "--compute-device", "cpu", "--no-default", "-q"]
    say("tpos-live " + " ".join(argv))
    if tpos_live_main(argv) != 0:
        raise UserError("train-encoder failed (see above)")
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(run / f"best{suffix}", out / f"{ENCODER_NAME}{suffix}")
    say(f"encoder copied into {out}")


def ship(trained: Path, shipped: Path) -> None:
    """Copy the folder ``trained`` to ``shipped`` with its weights in float16, replacing what is there; the
    copy is made beside it and renamed in, so the package never holds half a model."""
    if own_encoder(trained) is None:
        raise UserError(f"'{trained}' holds no {ENCODER_NAME}.safetensors / .json: train its encoder before shipping")
    temp, old = shipped.with_name(f".{shipped.name}.tmp"), shipped.with_name(f".{shipped.name}.old")
    for leftover in (temp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    shutil.copytree(trained, temp)
    for weights in temp.rglob("*.safetensors"):
        tensors = load_file(weights)
        save_file({name: t.half() if t.is_floating_point() else t for name, t in tensors.items()}, weights)
    for file in [temp, *temp.rglob("*")]:
        file.chmod(0o755 if file.is_dir() else 0o644)  # a wheel built from the tree is read by everyone
    if shipped.exists():
        shipped.rename(old)
    temp.rename(shipped)
    shutil.rmtree(old, ignore_errors=True)
    size = sum(f.stat().st_size for f in shipped.rglob("*") if f.is_file())
    say(f"shipped as {shipped} ({size / 1e6:.1f} MB)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("output", type=Path, help="the stack's folder (absent or empty)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pictures", type=int, default=WorldRecipe.pictures)
    p.add_argument("--autoencoder-steps", type=int, default=WorldRecipe.autoencoder_steps)
    p.add_argument("--taesd-steps", type=int, default=WorldRecipe.taesd_steps)
    p.add_argument("--denoiser-steps", type=int, default=WorldRecipe.denoiser_steps)
    p.add_argument("--clips-per-concept", type=int, default=30)
    p.add_argument("--encoder-epochs", type=int, default=30)
    p.add_argument("--backbone-width", type=int, default=16)
    # Six classes: a batch of 24 holds four clips of each where 48 held eight (their texts are equal), and
    # gives twice the steps. The official peak learning rate of 0.1 made a width-16 encoder collapse to a
    # constant in one of two runs; 0.02 is the mini's.
    p.add_argument("--encoder-batch-size", type=int, default=24)
    p.add_argument("--encoder-max-lr", type=float, default=0.02)
    p.add_argument("--skip-stack", action="store_true", help="OUT holds a trained stack: train the encoder only")
    p.add_argument("--skip-encoder", action="store_true", help="OUT holds its encoder: train nothing more")
    p.add_argument("--ship", action="store_true",
                   help=f"then make OUT the package's mini model ({mini_model_folder()}), in float16")
    args = p.parse_args(argv)
    out, work = args.output, args.output.with_name(args.output.name + ".work")
    try:
        recipe = WorldRecipe(pictures=args.pictures, seed=args.seed, autoencoder_steps=args.autoencoder_steps,
                             taesd_steps=args.taesd_steps, denoiser_steps=args.denoiser_steps)
        if args.skip_encoder and not args.skip_stack:
            raise UserError("--skip-encoder needs --skip-stack: a new stack needs its own encoder")
        if not args.skip_stack and out.exists() and any(out.iterdir()):
            raise UserError(f"'{out}' is not an empty folder: give a new one, or remove it first")
        started = time.monotonic()
        if not args.skip_stack:
            out.parent.mkdir(parents=True, exist_ok=True)
            if out.exists():
                out.rmdir()
            train_stack(out, recipe)
        stack_done = time.monotonic()
        say(f"stack: {stack_done - started:.0f} s")
        if not args.skip_encoder:
            work.mkdir(parents=True, exist_ok=True)
            train_encoder(out, work, args.seed, args.clips_per_concept, args.encoder_epochs,
                          args.backbone_width, args.encoder_batch_size, args.encoder_max_lr)
            say(f"encoder: {time.monotonic() - stack_done:.0f} s; all told {time.monotonic() - started:.0f} s")
        if args.ship:
            ship(out, mini_model_folder())
    except (UserError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
