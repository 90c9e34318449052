"""Write the mini world (tpos_live/mini/world.py): pictures with captions and labelled sound clips, seeded.

    python scripts/make_mini_world.py OUT [--pictures 2400] [--clips-per-concept 40] [--seed 0]
    python scripts/make_mini_world.py --story examples/story.wav      # and examples/story.json
    python scripts/make_mini_world.py --measure 1000                  # the detector's accuracy

OUT holds::

    sounds/<label>/<concept>_0000.wav     the clips, in train-encoder's "folders" layout, labelled with
                                          the concept's caption words ("a_bell": "a bell"):
                                          tpos-live train-encoder OUT/sounds ...
    pictures/00000.png                    64 x 64 RGB
    pictures/metadata.jsonl               one line a picture: file_name, text (its caption), scene, concept
    world.json                            what was made: seed, counts, rate, the scene and concept names

OUT must not exist or be empty: the world is written to a temporary folder beside it, then renamed, so a
reader never sees half a world. The same arguments give the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from PIL import Image

from tpos_live.errors import UserError
from tpos_live.fileio import write_atomically, write_text_atomically
from tpos_live.mini import detect, world

SOUNDS, PICTURES, METADATA, MANIFEST = "sounds", "pictures", "metadata.jsonl", "world.json"


def write_pictures(folder: Path, seed: int, count: int) -> None:
    folder.mkdir()
    lines = []
    for index in range(count):
        shown = world.picture(seed, index)
        name = f"{index:05d}.png"
        Image.fromarray(shown.pixels).save(folder / name)
        lines.append(json.dumps({"file_name": name, "text": shown.caption, "scene": shown.scene,
                                 "concept": shown.concept}))
    (folder / METADATA).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def write_sounds(folder: Path, seed: int, per_concept: int) -> None:
    """Clip i of concept c is item ``c * per_concept + i`` of ``seed``: each clip its own generator."""
    for number, concept in enumerate(world.CONCEPTS):
        labelled = folder / concept.label.replace(" ", "_")  # the folders layout reads "_" as a space
        labelled.mkdir(parents=True)
        for index in range(per_concept):
            samples = world.clip(seed, number * per_concept + index, concept)
            (labelled / f"{concept.name}_{index:04d}.wav").write_bytes(world.wav_bytes(samples))


def manifest(seed: int, pictures: int, per_concept: int) -> dict:
    return {"seed": seed, "pictures": pictures, "clips_per_concept": per_concept,
            "sample_rate": world.SAMPLE_RATE, "clip_seconds": world.CLIP_SECONDS, "sounds_layout": "folders",
            "scenes": list(world.SCENE_NAMES), "concepts": list(world.CONCEPT_NAMES)}


def make_world(out: Path, seed: int, pictures: int, per_concept: int) -> None:
    """Write the world into ``out``, which must be absent or empty (UserError otherwise)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"'{out}' is not an empty folder: give a new one, or remove it first")
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    temp.mkdir()  # not mkdtemp: the world's folder gets the usual permissions, not 0700
    try:
        write_pictures(temp / PICTURES, seed, pictures)
        write_sounds(temp / SOUNDS, seed, per_concept)
        (temp / MANIFEST).write_text(json.dumps(manifest(seed, pictures, per_concept), indent=2) + "\n")
        if out.exists():
            out.rmdir()
        os.rename(temp, out)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def write_story(path: Path, seed: int) -> None:
    """The example sound at ``path`` (16-bit mono WAV) and its timeline beside it (``.json``)."""
    samples, timeline = world.story(seed)
    write_atomically(path, lambda temp: temp.write_bytes(world.wav_bytes(samples)))
    turns = [{"start": turn.start, "end": turn.end, "concept": turn.concept} for turn in timeline]
    write_text_atomically(path.with_suffix(".json"), json.dumps(turns, indent=2) + "\n")


def print_accuracy(count: int, seed: int) -> None:
    for blur, words in ((1, "as drawn"), (4, "blurred (4x reduced, enlarged back)")):
        found = detect.measure(count, seed, blur)
        print(f"{found.pictures} pictures of seed {seed}, {words}: scene {found.scene:.1%}, "
              f"object {found.concept:.1%}, unsure {found.unsure:.1%}")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("output", type=Path, nargs="?", help="the world's folder (absent or empty)")
    p.add_argument("--pictures", type=int, default=2400, help="pictures to draw (default 2400)")
    p.add_argument("--clips-per-concept", type=int, default=40, help="sound clips per concept (default 40)")
    p.add_argument("--seed", type=int, help="the world's seed (default 0; --measure: the held-out "
                                            f"{detect.MEASURE_SEED}; --story: {world.STORY_SEED})")
    p.add_argument("--story", type=Path, metavar="WAV", help="write the example story and its .json instead")
    p.add_argument("--measure", type=int, metavar="N", help="measure the detector on N fresh pictures instead")
    args = p.parse_args(argv)
    if sum(x is not None for x in (args.output, args.story, args.measure)) != 1:
        p.error("give one of OUTPUT, --story WAV or --measure N")
    if args.pictures < 0 or args.clips_per_concept < 0 or (args.measure is not None and args.measure < 1):
        p.error("--pictures and --clips-per-concept must be at least 0, --measure at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        if args.measure is not None:
            print_accuracy(args.measure, detect.MEASURE_SEED if args.seed is None else args.seed)
        elif args.story is not None:
            write_story(args.story, world.STORY_SEED if args.seed is None else args.seed)
        else:
            make_world(args.output, args.seed or 0, args.pictures, args.clips_per_concept)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
