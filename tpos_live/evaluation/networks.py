"""The pretrained networks the evaluation metrics use: where they come from, how they load, and their
tiny random twins (same classes, toy sizes) for tests and for trying the metrics without downloads.

=========== ======================================= =====================================================
metric      default network (Hugging Face hub)      class
=========== ======================================= =====================================================
clip-text,  ``openai/clip-vit-large-patch14``       ``CLIPModel`` (ViT-L/14, as the paper's CLIP scores)
clip-audio
is          ``google/vit-base-patch16-224``         ``ViTForImageClassification`` (ImageNet-1k classes)
fvd         ``MCG-NJU/videomae-base``               ``VideoMAEModel`` (self-supervised on Kinetics-400)
=========== ======================================= =====================================================

A name is a local folder (``save_pretrained`` layout, safetensors weights), a hub id (the cache first,
downloaded with a progress bar when missing and online), or ``tiny`` (random weights, built once into the
cache). A network that is neither here nor downloadable is a :class:`~tpos_live.errors.MissingResource`:
one line naming what to fetch.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from tpos_live.diffusion.folders import load_component
from tpos_live.diffusion.hub import REPO_ID, hub_snapshot, progress_bars
from tpos_live.errors import MissingResource, UserError
from tpos_live.paths import cache_folder

TINY = "tiny"
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HALF, HALF_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class NetworkKind:
    """One metric network: its default, the files a folder must hold, its input normalisation."""

    what: str
    flag: str
    default: str
    files: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CLIP = NetworkKind("CLIP model", "--clip-model", "openai/clip-vit-large-patch14",
                   ("config.json", "model.safetensors", "vocab.json", "merges.txt"), CLIP_MEAN, CLIP_STD)
CLASSIFIER = NetworkKind("image classifier (Inception Score)", "--is-model", "google/vit-base-patch16-224",
                         ("config.json", "model.safetensors"), HALF, HALF_STD)
VIDEO = NetworkKind("video feature network (FVD)", "--fvd-model", "MCG-NJU/videomae-base",
                    ("config.json", "model.safetensors"), IMAGENET_MEAN, IMAGENET_STD)
KINDS = {"clip": CLIP, "is": CLASSIFIER, "fvd": VIDEO}


def network_folder(kind: NetworkKind, name: str, progress: bool = True) -> Path:
    """The local folder ``name`` loads from (module docstring)."""
    if name == TINY:
        return tiny_network_folder(kind)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{kind.what} '{path}' is not a folder: give a folder saved with save_pretrained "
                            f"or a hub id to {kind.flag}")
        return path
    if REPO_ID.match(name):
        try:
            return hub_snapshot(name, kind.files, kind.what, f"pass a local folder with {kind.flag}", progress)
        except UserError as error:
            raise MissingResource(str(error)) from None
    raise UserError(f"{kind.what} '{name}' is neither a folder nor a hub id (owner/name): check {kind.flag}")


def load_network(cls, kind: NetworkKind, name: str, device: str, progress: bool = True) -> torch.nn.Module:
    """``cls`` from ``name``'s folder, in eval mode on ``device`` (float32: the metrics compare numbers)."""
    with progress_bars(progress):
        folder = network_folder(kind, name, progress)
        model = load_component(cls, folder)
    return model.to(device).eval()


def load_clip(name: str, device: str, progress: bool = True):
    """(CLIPModel, CLIPTokenizer) of ``name``."""
    from transformers import CLIPModel, CLIPTokenizer

    model = load_network(CLIPModel, CLIP, name, device, progress)
    return model, load_component(CLIPTokenizer, network_folder(CLIP, name, progress))


def load_classifier(name: str, device: str, progress: bool = True):
    from transformers import ViTForImageClassification

    return load_network(ViTForImageClassification, CLASSIFIER, name, device, progress)


def load_video_network(name: str, device: str, progress: bool = True):
    from transformers import VideoMAEModel

    return load_network(VideoMAEModel, VIDEO, name, device, progress)


def model_input(frames: torch.Tensor, size: int, kind: NetworkKind) -> torch.Tensor:
    """(B, H, W, 3) uint8 frames -> (B, 3, size, size) normalised floats: the shorter side resized to
    ``size`` (bicubic, antialiased, as the models' image processors do), then the centre crop."""
    x = frames.permute(0, 3, 1, 2).float() / 255.0
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = x[..., top:top + size, left:left + size].clamp(0, 1)
    mean = torch.tensor(kind.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(kind.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


# ---- tiny random twins ----------------------------------------------------------------------------

TINY_WIDTH = 32  # the tiny CLIP's joint space (and so the tiny TPoS encoder's embed_dim)
_TINY_VERSION = "1"


def build_tiny_network(kind: NetworkKind, seed: int = 0):
    """A randomly initialised network of ``kind``'s class at toy size (and the tokenizer, for CLIP)."""
    from transformers import (
        CLIPConfig,
        CLIPModel,
        VideoMAEConfig,
        VideoMAEModel,
        ViTConfig,
        ViTForImageClassification,
    )

    from tpos_live.diffusion.random_stacks import tiny_tokenizer

    small = {"hidden_size": TINY_WIDTH, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 37}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind is CLIP:
            tokenizer = tiny_tokenizer()
            ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                   "pad_token_id": tokenizer.pad_token_id}
            text = {**small, **ids, "vocab_size": len(tokenizer), "max_position_embeddings": 77}
            config = CLIPConfig(text_config=text,
                                vision_config={**small, "image_size": 32, "patch_size": 8},
                                projection_dim=TINY_WIDTH)
            return CLIPModel(config).eval(), tokenizer
        if kind is CLASSIFIER:
            labels = {i: f"class {i}" for i in range(10)}
            config = ViTConfig(**small, image_size=32, patch_size=8, id2label=labels,
                               label2id={v: k for k, v in labels.items()})
            return ViTForImageClassification(config).eval(), None
        if kind is VIDEO:
            config = VideoMAEConfig(**small, image_size=32, patch_size=16, num_frames=4, tubelet_size=2)
            return VideoMAEModel(config).eval(), None
    raise ValueError(f"no tiny network of kind {kind.what}")


def save_network(model, folder: str | Path, tokenizer=None) -> Path:
    """``save_pretrained`` (safetensors) of ``model`` and ``tokenizer`` into ``folder``."""
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def tiny_network_folder(kind: NetworkKind) -> Path:
    """The saved tiny network of ``kind`` in the cache, built on first use (in a temporary folder renamed
    into place, so that no reader sees half of one)."""
    name = {CLIP: "clip", CLASSIFIER: "classifier", VIDEO: "videomae"}[kind]
    root = cache_folder() / "evaluation"
    folder = root / f"tiny-{name}"
    stamp = folder / "tpos-live-tiny.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("version") == _TINY_VERSION:
        return folder
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".tiny-{name}-build-") as scratch:
        built = Path(scratch) / name
        model, tokenizer = build_tiny_network(kind)
        save_network(model, built, tokenizer)
        (built / stamp.name).write_text(json.dumps({"version": _TINY_VERSION, "random_weights": True}))
        if folder.exists():
            with contextlib.suppress(FileNotFoundError):
                folder.rename(Path(scratch) / "stale")
        with contextlib.suppress(OSError):  # a concurrent build that got there first is as good
            built.rename(folder)
    return folder


def is_random(folder: Path) -> bool:
    return (folder / "tpos-live-tiny.json").is_file()
