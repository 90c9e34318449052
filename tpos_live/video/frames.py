"""A folder of numbered PNG frames that a render writes as it goes and a resumed render reads back.

Each frame is written under a temporary name and renamed, so a frame file at its final name is whole
unless something else damaged it; :meth:`FrameStore.is_valid` checks that too (every chunk's CRC, the
size and the colour mode). A small manifest records what the frames were rendered from, so that a
resumed render never mixes frames of two different renders.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tpos_live.errors import UserError
from tpos_live.fileio import write_text_atomically

MANIFEST = ".tpos-live-render.json"
FRAME_DIGITS = 6
FRAME_FILE = f"frame_{{:0{FRAME_DIGITS}d}}.png"  # frame i's file in a frames folder
FRAME_NAME = re.compile(rf"frame_(\d{{{FRAME_DIGITS}}})\.png")  # the names FRAME_FILE gives, the index captured
PIL_DEFAULT_COMPRESSION = 6  # what PIL writes without options: --frames PNGs stay byte for byte as before


class FrameStore:
    """Frames ``frame_000000.png``, ``frame_000001.png``, ... in ``folder`` (created if missing).

    Args:
        folder: where the frames go.
        width, height: the frames' size; a file of another size is not a valid frame.
        compress_level: PNG zlib level (0-9); the user's ``--frames`` keep PIL's default, a cache
            that is deleted at the end takes 1 (fast).
    """

    def __init__(self, folder: str | Path, width: int, height: int,
                 compress_level: int = PIL_DEFAULT_COMPRESSION) -> None:
        self.folder = Path(folder)
        self.width, self.height = width, height
        self.compress_level = compress_level
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"cannot create frames folder '{self.folder}' ({error.strerror}): "
                            "choose another path") from error

    def path(self, index: int) -> Path:
        return self.folder / FRAME_FILE.format(index)

    def save(self, index: int, frame: np.ndarray) -> None:
        """Write frame ``index`` (uint8 RGB, H x W x 3) whole or not at all."""
        path = self.path(index)
        partial = path.with_name(f".{path.name}.part")
        Image.fromarray(frame).save(partial, format="PNG", compress_level=self.compress_level)
        os.replace(partial, path)

    def load(self, index: int) -> np.ndarray:
        with Image.open(self.path(index)) as image:
            return np.asarray(image.convert("RGB"))

    def is_valid(self, index: int) -> bool:
        """Whether frame ``index`` exists as a complete RGB PNG of the store's size."""
        try:
            with Image.open(self.path(index)) as image:
                if image.format != "PNG" or image.size != (self.width, self.height) or image.mode != "RGB":
                    return False
                image.verify()  # every chunk's CRC, to the IEND chunk: a cut or damaged file fails
            return True
        except (OSError, SyntaxError, ValueError, zlib.error):
            return False

    def valid_frames(self, indices: Iterable[int]) -> set[int]:
        return {index for index in indices if self.is_valid(index)}

    # ---- what the frames were rendered from ----------------------------------------------------------

    def read_manifest(self) -> dict[str, Any] | None:
        return self.read_manifest_in(self.folder)

    @staticmethod
    def read_manifest_in(folder: Path) -> dict[str, Any] | None:
        """The record of what rendered the frames in ``folder`` (None: none there, or unreadable)."""
        try:
            return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        write_text_atomically(self.folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")

    def remove(self, count: int) -> None:
        """Delete frames 0..count-1, the manifest and the folder if that leaves it empty (a cache's end)."""
        for index in range(count):
            self.path(index).unlink(missing_ok=True)
        (self.folder / MANIFEST).unlink(missing_ok=True)
        for leftover in self.folder.glob(".frame_*.png.part"):
            leftover.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # something else is in there: not ours to delete
            self.folder.rmdir()


def frames_of(folder: Path) -> dict[int, Path]:
    """The frame files (:data:`FRAME_NAME`) in ``folder`` by index (none when it is not a folder)."""
    if not folder.is_dir():
        return {}
    return {int(match.group(1)): path for path in folder.iterdir() if (match := FRAME_NAME.fullmatch(path.name))}


def render_record(manifest: Mapping[str, Any], count: int) -> dict[str, Any]:
    """What a render of ``count`` frames records in its frames folder: ``manifest`` as JSON reads it back."""
    return json.loads(json.dumps({**manifest, "frames": count}, default=str, sort_keys=True))


def refuse_frames_of_another_render(folder: Path, record: Mapping[str, Any], count: int) -> None:
    """UserError when ``folder`` holds frames that a resumed render with ``record`` must not take as its
    own: frames without a record of what rendered them, or a record that differs."""
    found = FrameStore.read_manifest_in(folder)
    if found is None:
        if any((folder / FRAME_FILE.format(index)).exists() for index in range(count)):
            raise UserError(f"'{folder}' holds frames but no record of what rendered them: remove them "
                            "or render without --resume")
        return
    if found != record:
        differ = sorted(key for key in record.keys() | found.keys() if record.get(key) != found.get(key))
        raise UserError(f"the frames in '{folder}' come from another render ({', '.join(differ)} differ): "
                        "render without --resume, or give the same settings")

