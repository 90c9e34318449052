"""Init images for the paper's visual conditioning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tpos_live.errors import UserError


def load_image_tensor(path: str | Path, width: int, height: int) -> torch.Tensor:
    """An image file as a (1, 3, height, width) tensor in [-1, 1], centre-cropped to the aspect, then resized."""
    from PIL import Image

    with open_image(path) as image:
        rgb = _crop_to_aspect(image, width / height).resize((width, height), Image.LANCZOS)
    array = np.asarray(rgb, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()


def open_image(path: str | Path):
    """The init image at ``path`` as a decoded RGB PIL image; UserError when it is missing or unreadable."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"init image '{path}' does not exist: give the path of a PNG or JPEG file")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # decodes every pixel: a cut-off file fails here
    except (UnidentifiedImageError, OSError) as error:
        raise UserError(f"init image '{path}' cannot be read ({error}): give a PNG or JPEG file") from None


def _crop_to_aspect(image, aspect: float):
    w, h = image.size
    if w / h > aspect:
        new_w = round(h * aspect)
        left = (w - new_w) // 2
        return image.crop((left, 0, left + new_w, h))
    new_h = round(w / aspect)
    top = (h - new_h) // 2
    return image.crop((0, top, w, top + new_h))
