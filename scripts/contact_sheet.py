"""A contact sheet of a video: one frame every ``--every`` seconds, in rows, each under its time.

    .venv/bin/python scripts/contact_sheet.py story.mp4 docs/mini_story_sheet.png [--every 1] [--columns 10]
        [--scale 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
from PIL import Image, ImageDraw

from tpos_live.fileio import write_atomically

LABEL_HEIGHT = 12


def frames_every(video: Path, every: float) -> list[tuple[float, Image.Image]]:
    """(time, picture) of the first frame at or after each multiple of ``every`` seconds."""
    picked, due = [], 0.0
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            if frame.time is not None and frame.time + 1e-6 >= due:
                picked.append((frame.time, frame.to_image()))
                due = (int(frame.time / every + 1e-6) + 1) * every  # the grid's next point, even after a gap
    return picked


def sheet(frames: list[tuple[float, Image.Image]], columns: int, scale: int) -> Image.Image:
    width, height = (side * scale for side in frames[0][1].size)
    rows = (len(frames) + columns - 1) // columns
    canvas = Image.new("RGB", (columns * width, rows * (height + LABEL_HEIGHT)), "white")
    draw = ImageDraw.Draw(canvas)
    for index, (seconds, picture) in enumerate(frames):
        x, y = (index % columns) * width, (index // columns) * (height + LABEL_HEIGHT)
        draw.text((x + 2, y), f"{seconds:.0f} s", fill="black")
        canvas.paste(picture.resize((width, height), Image.NEAREST), (x, y + LABEL_HEIGHT))
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("output", type=Path, help="the PNG to write")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between frames (1)")
    parser.add_argument("--columns", type=int, default=10)
    parser.add_argument("--scale", type=int, default=2, help="each frame enlarged this many times (2)")
    args = parser.parse_args()
    frames = frames_every(args.video, args.every)
    if not frames:
        raise SystemExit(f"error: '{args.video}' has no video frames: give a rendered video")
    picture = sheet(frames, args.columns, args.scale)
    write_atomically(args.output, lambda temp: picture.save(temp, format="PNG"))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
