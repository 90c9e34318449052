"""Built artefacts (ONNX files, TensorRT engines) in ``engines/``, and the manifest that says what each is.

An artefact is keyed by everything its content depends on (:class:`ArtefactKey`): the network, a hash
of its weights, the precision, the shape profile, the opset, and for TensorRT engines the TensorRT
version and the GPU they were built on. :meth:`EngineStore.ensure` returns the artefact of a key when
the manifest lists it and its files are exactly as recorded; otherwise (missing, built for other
weights, shapes, TensorRT or GPU, or changed on disk since) it builds a new one. A stale or mismatched
artefact is never handed out.

Layout: ``engines/manifest.json`` plus one file per artefact, named ``<network>-<digest>.<ext>``
(ONNX models over 2 GB keep their weights in ``<name>.data`` beside it). Builds run in a temporary
folder inside ``engines/`` and are renamed into place, under a per-artefact lock, so two processes
asking for the same engine build it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from tpos_live.errors import UserError
from tpos_live.paths import cache_folder

FORMAT_VERSION = 1  # bump when exports change in a way the other key fields cannot see
MANIFEST = "manifest.json"
KINDS = {"onnx": ".onnx", "tensorrt": ".engine"}


def default_engines_dir() -> Path:
    """``$TPOS_LIVE_ENGINES``, else the checkout's ``engines/``, else ``~/.cache/tpos-live/engines``."""
    configured = os.environ.get("TPOS_LIVE_ENGINES")
    if configured:
        return Path(configured).expanduser()
    checkout = Path(__file__).resolve().parents[2] / "engines"
    if (checkout / "README.md").is_file():
        return checkout
    return cache_folder() / "engines"


@dataclass(frozen=True)
class ArtefactKey:
    """Everything a built artefact's content depends on."""

    network: str
    kind: str  # "onnx" or "tensorrt"
    weights: str  # weights_hash() of the network's modules
    precision: str
    profile: str  # ShapeProfile.key()
    opset: int
    tensorrt: str | None = None  # TensorRT version (engines only)
    gpu: str | None = None  # GPU name and compute capability (engines only)
    format: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}, got {self.kind!r}")
        if self.kind == "tensorrt" and not (self.tensorrt and self.gpu):
            raise ValueError("a TensorRT engine's key needs the TensorRT version and the GPU")

    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def file_name(self) -> str:
        return f"{self.network}-{self.digest()}{KINDS[self.kind]}"


def weights_hash(modules: Sequence[nn.Module]) -> str:
    """sha256 of the modules' structure (their repr, so that layers without weights count too, such as
    MAP's output activation) and of their parameters and buffers: names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for index, module in enumerate(modules):
        digest.update(f"{index}:{module!r};".encode())
        for name, tensor in sorted(module.state_dict().items()):
            data = tensor.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"{index}.{name}:{data.dtype}:{tuple(tensor.shape)};".encode())
            digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:24]


class EngineStore:
    """The artefacts of one ``engines/`` folder.

    Args:
        folder: where artefacts and the manifest live (created on first build).
    """

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_engines_dir()

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    def entries(self) -> dict[str, dict]:
        """The manifest: file name -> {"key": ..., "files": {name: {"bytes", "mtime_ns"}}, "built": ...}."""
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            raise UserError(f"the engine manifest '{self.manifest_path}' cannot be read ({error}): delete it "
                            "and the engines will be rebuilt") from None
        return manifest.get("entries", {})

    def find(self, key: ArtefactKey) -> Path | None:
        """The artefact of ``key`` when it is listed and its files are as recorded, else None."""
        entry = self.entries().get(key.file_name)
        if entry is None or entry.get("key") != asdict(key):
            return None
        for name, recorded in entry.get("files", {}).items():
            if _file_record(self.folder / name) != recorded:
                return None
        return self.folder / key.file_name

    def ensure(self, key: ArtefactKey, build: Callable[[Path], None],
               say: Callable[[str], None] | None = None) -> Path:
        """The artefact of ``key``, built by ``build(path)`` unless a fresh one is already stored.

        ``build`` writes the artefact at ``path`` (and may write side files next to it, such as ONNX
        external data); they are moved into the folder together once it returns.
        """
        found = self.find(key)
        if found is not None:
            return found
        self.folder.mkdir(parents=True, exist_ok=True)
        with _locked(self.folder / f".{key.digest()}.lock"):
            found = self.find(key)  # another process may have built it while we waited
            if found is not None:
                return found
            if say is not None:
                say(f"building {key.kind} artefact of {key.network} ({key.precision}, {key.profile})")
            with tempfile.TemporaryDirectory(dir=self.folder, prefix=".build-") as scratch:
                started = time.perf_counter()
                build(Path(scratch) / key.file_name)
                seconds = time.perf_counter() - started
                files = sorted(p.name for p in Path(scratch).iterdir())
                if key.file_name not in files:
                    raise RuntimeError(f"building {key.file_name} wrote no file of that name")
                for name in files:
                    os.replace(Path(scratch) / name, self.folder / name)
            self._record(key, files, seconds)
        return self.folder / key.file_name

    def remove(self, file_name: str) -> None:
        """Delete an artefact's files and its manifest entry."""
        with _locked(self.folder / ".manifest.lock"):
            entries = self.entries()
            entry = entries.pop(file_name, None)
            for name in (entry or {}).get("files", {file_name: None}):
                with contextlib.suppress(FileNotFoundError):
                    (self.folder / name).unlink()
            self._write(entries)

    def _record(self, key: ArtefactKey, files: list[str], seconds: float) -> None:
        with _locked(self.folder / ".manifest.lock"):
            entries = self.entries()
            entries[key.file_name] = {
                "key": asdict(key),
                "files": {name: _file_record(self.folder / name) for name in files},
                "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "build_seconds": round(seconds, 2),
            }
            self._write(entries)

    def _write(self, entries: dict[str, dict]) -> None:
        text = json.dumps({"format": FORMAT_VERSION, "entries": entries}, indent=2, sort_keys=True)
        with tempfile.NamedTemporaryFile("w", dir=self.folder, prefix=".manifest-", delete=False) as out:
            out.write(text + "\n")
        os.replace(out.name, self.manifest_path)


def _file_record(path: Path) -> dict[str, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

