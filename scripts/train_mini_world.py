"""Train the mini world's models from nothing (tpos_live/mini/models.py, tpos_live/training/world.py).

    flock /tmp/tpos-heavy.lock .venv/bin/python scripts/train_mini_world.py OUT [--seed 0]

In steps:

1. the diffusion stack (autoencoder, TAESD, text encoder, UNet) on the world's pictures and captions,
   saved as a diffusers folder at OUT (``load_stack`` reads it: ``--model OUT``);
2. the world's sounds, in ``train-encoder``'s folder layout, under OUT's work folder;
3. the TPoS audio encoder, by ``tpos-live train-encoder`` against OUT's text encoder (pooled targets:
   the world's text encoder has no CLIP projection), narrowed with ``--backbone-width``;
4. its best checkpoint copied into OUT as ``encoder.safetensors`` / ``encoder.json``.

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

from tpos_live.cli.main import main as tpos_live_main
from tpos_live.diffusion.folders import save_stack
from tpos_live.errors import UserError
from tpos_live.mini.models import untrained_mini_stack
from tpos_live.mini.world import CONCEPTS, SCENES
from tpos_live.training.world import WorldRecipe, train_mini_stack

MINI_STEPS, MINI_GUIDANCE = 20, 4.0  # the mini UNet is not distilled: DDIM steps and text guidance


def say(message: str) -> None:
    print(message, flush=True)


def train_stack(out: Path, recipe: WorldRecipe) -> None:
    stack = untrained_mini_stack(recipe.seed)
    losses = train_mini_stack(stack, recipe, say)
    stack.name = f"mini: a model trained on a synthetic world ({len(CONCEPTS)} concepts over {len(SCENES)} scenes)"
    stack.random_weights = False
    stack.default_steps, stack.default_guidance = MINI_STEPS, MINI_GUIDANCE
    temp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(temp, ignore_errors=True)
    save_stack(stack, temp)
    temp.rename(out)
    say(f"stack saved to {out}; last losses {losses}")


def train_encoder(out: Path, work: Path, seed: int, clips: int, epochs: int, width: int, batch: int) -> None:
    sounds = work / "sounds"
    if not sounds.exists():
        write_sounds(sounds, seed, clips)
    run = work / "encoder"
    argv = ["train-encoder", str(sounds), "-o", str(run), "--model", str(out), "--text-target", "pooled",
            "--backbone-width", str(width), "--epochs", str(epochs), "--batch-size", str(batch),
            "--seed", str(seed), "--compute-device", "cpu", "--no-default", "-q"]
    say("tpos-live " + " ".join(argv))
    if tpos_live_main(argv) != 0:
        raise UserError("train-encoder failed (see above)")
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(run / f"best{suffix}", out / f"encoder{suffix}")
    say(f"encoder copied into {out}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("output", type=Path, help="the stack's folder (absent or empty)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pictures", type=int, default=WorldRecipe.pictures)
    p.add_argument("--autoencoder-steps", type=int, default=WorldRecipe.autoencoder_steps)
    p.add_argument("--taesd-steps", type=int, default=WorldRecipe.taesd_steps)
    p.add_argument("--denoiser-steps", type=int, default=WorldRecipe.denoiser_steps)
    p.add_argument("--clips-per-concept", type=int, default=30)
    p.add_argument("--encoder-epochs", type=int, default=40)
    p.add_argument("--backbone-width", type=int, default=16)
    p.add_argument("--encoder-batch-size", type=int, default=48)
    p.add_argument("--skip-stack", action="store_true", help="OUT holds a trained stack: train the encoder only")
    args = p.parse_args(argv)
    out, work = args.output, args.output.with_name(args.output.name + ".work")
    try:
        recipe = WorldRecipe(pictures=args.pictures, seed=args.seed, autoencoder_steps=args.autoencoder_steps,
                             taesd_steps=args.taesd_steps, denoiser_steps=args.denoiser_steps)
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
        work.mkdir(parents=True, exist_ok=True)
        train_encoder(out, work, args.seed, args.clips_per_concept, args.encoder_epochs, args.backbone_width,
                      args.encoder_batch_size)
        say(f"encoder: {time.monotonic() - stack_done:.0f} s; all told {time.monotonic() - started:.0f} s")
    except (UserError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
