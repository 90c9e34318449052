"""Labelled audio for training the TPoS encoder: finding clips, splits, cached spectrograms, batches.

How :func:`find_clips` reads each of the layouts (:data:`~tpos_live.training.spec.LAYOUTS`;
``layout="auto"`` picks one from what ``source`` is):

- ``folders``: ``root/<label>/<clip>`` (any depth below the label folder);
- ``vggsound``: VGGSound's CSV (no header; YouTube id, start second, label, ``train`` | ``test``), the
  clips in one folder named ``<id>_<start, 6 digits>.<ext>`` (as the common download scripts write
  them; ``<id>_<start>`` and ``<id>`` are accepted too). The CSV's test rows validate;
- ``esc50``: ESC-50's ``meta/esc50.csv`` (``filename, fold, target, category, ...``), the clips in
  ``audio/`` next to ``meta/``; one fold validates (:data:`~tpos_live.training.spec.VAL_FOLD`);
- ``prefix`` (Landscape): ``root/<label>_<anything>.<ext>``, the label being the file name before its
  first ``_`` (as the official TPoS data set code reads it).

Labels keep their words; underscores become spaces (``chirping_birds`` -> ``chirping birds``). A
:class:`~tpos_live.training.spec.PromptTemplate` turns a label into the text the encoder is aligned to.

Spectrograms are computed once per clip and kept in a cache folder (:class:`SpectrogramCache`). A
training item is a window of N segments cut from a clip's cached frames at a random column (the
official code crops at random too), or at the centre for validation; its segment maps equal what
:func:`tpos_live.audio.spectrogram.segment_map` gives for the same samples, so the encoder trains on
exactly the maps it sees at inference (up to the float16 rounding of the cache), with the floor its
config names (a relative or official floor takes each segment's own peak as reference, as the live front
end and the sliding windows do; the official windows of a render take the file's for the official floor).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from tpos_live.audio.decode import decode_audio
from tpos_live.audio.spectrogram import (
    SILENCE_DB,
    SpectrogramConfig,
    decibels_to_map,
    frame_decibels,
    resize_matrix,
    spectrogram,
)
from tpos_live.errors import UserError
from tpos_live.fileio import write_atomically, write_text_atomically
from tpos_live.training.distributed import Processes
from tpos_live.training.spec import AUTO_LAYOUT, LAYOUT_CHOICES, LAYOUTS, VAL_FOLD

AUDIO_EXTENSIONS = frozenset(
    {
        ".wav",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".mp3",
        ".m4a",
        ".aac",
        ".mp4",
        ".mkv",
        ".webm",
        ".mov",
        ".avi",
    }
)
ESC50_HEADER = ("filename", "fold", "target", "category")
CACHE_FORMAT = 1  # bump when what a cache file holds changes
FINGERPRINT_CHUNK = 1 << 20  # bytes read from each end of a file to fingerprint it


# --- clips and labels ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledClip:
    """One audio file and its label; ``split`` is "train" or "val" when the data set fixes it."""

    path: Path
    label: str
    split: Literal["train", "val"] | None = None


class FoundClips(NamedTuple):
    """What :func:`find_clips` found, and the files a CSV lists that are not there."""

    clips: list[LabelledClip]
    missing: list[str]


def find_clips(
    source: str | os.PathLike[str],
    layout: str = AUTO_LAYOUT,
    *,
    audio_dir: str | os.PathLike[str] | None = None,
    val_fold: int = VAL_FOLD,
) -> FoundClips:
    """Labelled clips of a data set in one of the layouts of the module docstring.

    ``source`` is the data set's folder, or its CSV file for ``vggsound`` / ``esc50``. ``audio_dir``
    overrides where a CSV layout's clips are (default: next to the CSV for VGGSound, ``../audio``
    for ESC-50). Raises UserError when the source does not exist, the layout does not fit it, or it
    holds no clips.
    """
    source = Path(source)
    if not source.exists():
        raise UserError(
            f"training data '{source}' does not exist: give a folder of clips or a data set's CSV"
        )
    layout = resolved_layout(source, layout)
    readers: dict[str, Callable[[], FoundClips]] = {
        "folders": lambda: FoundClips(_folder_clips(source), []),
        "prefix": lambda: FoundClips(_prefix_clips(source), []),
        "vggsound": lambda: _vggsound_clips(source, audio_dir),
        "esc50": lambda: _esc50_clips(source, audio_dir, val_fold),
    }
    if layout not in readers:
        raise ValueError(f"layout must be one of {LAYOUT_CHOICES}, got {layout!r}")
    found = readers[layout]()
    if not found.clips:
        raise UserError(
            f"found no audio clips in '{source}' as a {layout!r} data set: check the layout "
            f"(one of {', '.join(LAYOUTS)}) and the audio folder"
        )
    return found


def resolved_layout(source: Path, layout: str = AUTO_LAYOUT) -> str:
    """``layout``, or with :data:`AUTO_LAYOUT` the layout ``source`` (an existing folder or CSV) has."""
    return _detect_layout(source) if layout == AUTO_LAYOUT else layout


def _detect_layout(source: Path) -> str:
    if source.is_file():
        if source.suffix.lower() != ".csv":
            raise UserError(
                f"training data '{source}' is a file but not a CSV: give a folder or a data set's CSV"
            )
        return "esc50" if _csv_header(source)[: len(ESC50_HEADER)] == list(ESC50_HEADER) else "vggsound"
    if (source / "meta" / "esc50.csv").is_file():
        return "esc50"
    if any(child.is_dir() and _audio_files(child) for child in source.iterdir()):
        return "folders"
    return "prefix"


def _csv_header(path: Path) -> list[str]:
    with _open_csv(path) as file:
        return [cell.strip().lower() for cell in next(csv.reader(file), [])]


def _open_csv(path: Path):
    try:
        return path.open(newline="", encoding="utf-8")
    except OSError as error:
        raise UserError(f"cannot read '{path}' ({error.strerror}): check the path and permissions") from error


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())


def _label(text: str) -> str:
    return " ".join(text.replace("_", " ").split())


def _folder_clips(root: Path) -> list[LabelledClip]:
    if not root.is_dir():
        raise UserError(
            f"training data '{root}' is not a folder: the 'folders' layout needs root/<label>/<clip>"
        )
    return [
        LabelledClip(path, _label(folder.name))
        for folder in sorted(p for p in root.iterdir() if p.is_dir())
        for path in _audio_files(folder)
    ]


def _prefix_clips(root: Path) -> list[LabelledClip]:
    if not root.is_dir():
        raise UserError(
            f"training data '{root}' is not a folder: the 'prefix' layout needs root/<label>_<name>"
        )
    clips = []
    for path in sorted(p for p in root.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()):
        prefix, underscore, _ = path.stem.partition("_")
        if not underscore or not _label(prefix):
            raise UserError(
                f"'{path.name}' has no label prefix: in the 'prefix' (Landscape) layout every file is named "
                "<label>_<anything>"
            )
        clips.append(LabelledClip(path, _label(prefix)))
    return clips


def _vggsound_clips(csv_path: Path, audio_dir: str | os.PathLike[str] | None) -> FoundClips:
    if not csv_path.is_file():
        raise UserError(f"'{csv_path}' is not a file: the 'vggsound' layout needs VGGSound's CSV")
    folder = Path(audio_dir) if audio_dir is not None else csv_path.parent
    by_stem = {path.stem: path for path in _audio_files(folder)}
    clips, missing = [], []
    with _open_csv(csv_path) as file:
        for line, row in enumerate(csv.reader(file), start=1):
            if not row:
                continue
            if len(row) < 4 or not row[1].strip().isdigit() or row[3].strip() not in ("train", "test"):
                raise UserError(
                    f"'{csv_path}' line {line} is not a VGGSound row (YouTube id, start second, label, "
                    f"train|test): {','.join(row)[:80]!r}"
                )
            video, start, label, split = (cell.strip() for cell in row[:4])
            stems = (f"{video}_{int(start):06d}", f"{video}_{int(start)}", video)
            path = next((by_stem[stem] for stem in stems if stem in by_stem), None)
            if path is None:
                missing.append(stems[0])
                continue
            clips.append(LabelledClip(path, _label(label), "val" if split == "test" else "train"))
    return FoundClips(clips, missing)


def _esc50_clips(source: Path, audio_dir: str | os.PathLike[str] | None, val_fold: int) -> FoundClips:
    csv_path = source / "meta" / "esc50.csv" if source.is_dir() else source
    if not csv_path.is_file():
        raise UserError(f"'{csv_path}' does not exist: the 'esc50' layout needs ESC-50's meta/esc50.csv")
    folder = Path(audio_dir) if audio_dir is not None else csv_path.parent.parent / "audio"
    clips, missing = [], []
    with _open_csv(csv_path) as file:
        rows = csv.DictReader(file)
        if rows.fieldnames is None or not set(ESC50_HEADER) <= {name.strip() for name in rows.fieldnames}:
            raise UserError(f"'{csv_path}' lacks ESC-50's columns {', '.join(ESC50_HEADER)}")
        for row in rows:
            path = folder / row["filename"].strip()
            if not path.is_file():
                missing.append(str(path))
                continue
            split = "val" if row["fold"].strip() == str(val_fold) else "train"
            clips.append(LabelledClip(path, _label(row["category"]), split))
    return FoundClips(clips, missing)


def split_clips(
    clips: Sequence[LabelledClip], val_fraction: float, seed: int
) -> tuple[list[LabelledClip], list[LabelledClip]]:
    """``(train, val)``: clips whose data set fixes the split keep it; the others are split per label,
    ``round(val_fraction * n)`` of each label's n clips (at least one when n >= 2 and the fraction is
    positive) drawn at random by ``seed`` for validation. The same clips and seed give the same split."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    train = [clip for clip in clips if clip.split == "train"]
    val = [clip for clip in clips if clip.split == "val"]
    by_label: dict[str, list[LabelledClip]] = defaultdict(list)
    for clip in sorted((c for c in clips if c.split is None), key=lambda c: (c.label, str(c.path))):
        by_label[clip.label].append(clip)
    rng = np.random.default_rng(seed)
    for label in sorted(by_label):
        members = by_label[label]
        count = round(val_fraction * len(members))
        if val_fraction > 0 and len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        chosen = set(rng.permutation(len(members))[:count].tolist())
        for index, clip in enumerate(members):
            (val if index in chosen else train).append(clip)
    return train, val


# --- the spectrogram cache ----------------------------------------------------------------------------


def clip_frames(mono: np.ndarray, config: SpectrogramConfig) -> np.ndarray:
    """``(rows, frames)`` float32: what windows of a clip are cut from (:func:`window_maps`).

    - ``"stft"``, absolute floor: the map itself (its columns depend on their own frame only);
    - ``"stft"``, relative or official floor: the amplitude dB (re 1, not floored) of the bins the
      frequency resize reads (:func:`resized_bins`: 256 of the 513 when they become 128 rows), then one
      row more holding each frame's maximum over all bins, from which a segment takes its reference;
    - ``"mel"``: mel power dB re 1, not floored; each segment is floored as its config says.

    A clip shorter than one FFT frame is padded with silence.
    """
    mono = np.asarray(mono, dtype=np.float64)
    if len(mono) < config.n_fft:
        mono = np.concatenate([mono, np.zeros(config.n_fft - len(mono))])
    if _cached_as_map(config):
        return spectrogram(mono, config)
    decibels = frame_decibels(mono, config)
    if config.kind == "stft":
        bins, _ = _bin_resize(config.n_bins, config.height)
        decibels = np.vstack([decibels[bins], decibels.max(axis=0)])
    return decibels.astype(np.float32)


def window_maps(frames: np.ndarray, start: int, config: SpectrogramConfig) -> np.ndarray:
    """``(N, height, segment_frames)`` float32 segment maps of the window whose first column is ``start``
    in ``frames`` (from :func:`clip_frames`); columns before 0 or past the end are silence."""
    rows, total = frames.shape
    width = config.segments * config.segment_frames
    silence = 0.0 if _cached_as_map(config) else SILENCE_DB
    window = np.full((rows, width), silence, dtype=np.float32)
    low, high = max(start, 0), min(start + width, total)
    if high > low:
        window[:, low - start : high - start] = frames[:, low:high]
    segments = window.reshape(rows, config.segments, config.segment_frames).transpose(1, 0, 2)
    if not _cached_as_map(config):
        segments = np.stack([_segment_map(decibels, config) for decibels in segments])
    return np.ascontiguousarray(segments, dtype=np.float32)


def resized_bins(config: SpectrogramConfig) -> np.ndarray:
    """The STFT bins whose values the ``"stft"`` map's frequency resize reads (the others get weight 0)."""
    return _bin_resize(config.n_bins, config.height)[0].copy()


def _cached_as_map(config: SpectrogramConfig) -> bool:
    return config.kind == "stft" and config.floor == "absolute"


@lru_cache(maxsize=8)
def _bin_resize(n_bins: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    matrix = resize_matrix(n_bins, height)
    bins = np.flatnonzero(matrix.any(axis=0))
    return bins, matrix[:, bins]


def _segment_map(decibels: np.ndarray, config: SpectrogramConfig) -> np.ndarray:
    # One segment's rows of clip_frames -> its map, by the same steps as the inference front end.
    if config.kind == "mel":
        return decibels_to_map(decibels, config)
    _, resize = _bin_resize(config.n_bins, config.height)
    return resize @ decibels_to_map(decibels[:-1], config, peak=float(decibels[-1].max()))


class SpectrogramCache:
    """Each clip's :func:`clip_frames`, float16, in ``<folder>/<content hash>-<config hash>.npy``.

    The content hash covers the file's size and its first and last MiB (cheap for large video files,
    and a renamed or moved file keeps its entry); ``fingerprints.json`` remembers it per path, size
    and modification time, so a second run only stats the files. Entries are written atomically.
    """

    def __init__(self, folder: str | os.PathLike[str], config: SpectrogramConfig) -> None:
        self.folder = Path(folder)
        self.config = config
        fields = {"cache_format": CACHE_FORMAT, **asdict(config)}
        for per_window in ("segment_frames", "segments"):  # windows are cut later: not part of the frames
            fields.pop(per_window)
        if config.kind == "mel" or config.floor == "absolute":
            # What these entries hold does not depend on the floor (and entries made before the floor
            # existed keep their names).
            fields.pop("floor")
        self.config_key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]

    def prepare(
        self, paths: Sequence[Path], *, workers: int = 1, progress: bool = True
    ) -> tuple[list[Path | None], dict[Path, str]]:
        """Make sure every path has an entry. Returns each path's entry (None where the clip could not
        be decoded) and the reason of each failure."""
        self.folder.mkdir(parents=True, exist_ok=True)
        known = self._read_fingerprints()
        jobs = [
            (str(path), self.config, str(self.folder), self.config_key, known.get(_stat_key(path)))
            for path in paths
        ]
        results: list[tuple[str | None, str | None, str | None]]
        bar = {"total": len(jobs), "desc": "spectrograms", "unit": "clip", "disable": not progress}
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                results = list(tqdm(pool.map(_cache_entry, jobs, chunksize=16), **bar))
        else:
            results = [_cache_entry(job) for job in tqdm(jobs, **bar)]
        entries: list[Path | None] = []
        failures: dict[Path, str] = {}
        for path, (fingerprint, entry, error) in zip(paths, results, strict=True):
            if entry is not None:
                known[_stat_key(path)] = fingerprint
            entries.append(Path(entry) if entry else None)
            if error is not None:
                failures[path] = error
        self._write_fingerprints(known)
        return entries, failures

    def _read_fingerprints(self) -> dict[str, str]:
        try:
            data = json.loads((self.folder / "fingerprints.json").read_text())
        except (OSError, json.JSONDecodeError):
            return {}  # no index yet (or a damaged one): files are hashed again, nothing is lost
        return data if isinstance(data, dict) else {}

    def _write_fingerprints(self, known: dict[str, str]) -> None:
        write_text_atomically(self.folder / "fingerprints.json", json.dumps(known))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as file:  # a file object: np.save would append ".npy" to a path
        np.save(file, array, allow_pickle=False)


def _stat_key(path: Path) -> str:
    """Index key of a file's current version; a file that cannot be stat'ed gets a key of its own that
    matches nothing (the worker then reports why it cannot be read)."""
    try:
        stat = path.stat()
    except OSError:
        return f"{path}|unreadable"
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def file_fingerprint(path: Path) -> str:
    """A hash of the file's size and its first and last :data:`FINGERPRINT_CHUNK` bytes."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as file:
        digest.update(file.read(FINGERPRINT_CHUNK))
        if size > FINGERPRINT_CHUNK:
            file.seek(max(FINGERPRINT_CHUNK, size - FINGERPRINT_CHUNK))
            digest.update(file.read())
    return digest.hexdigest()[:32]


def _cache_entry(job: tuple) -> tuple[str | None, str | None, str | None]:
    """``(fingerprint, entry path, error)`` for one clip; runs in a worker process."""
    path_text, config, folder, config_key, fingerprint = job
    path = Path(path_text)
    try:
        fingerprint = fingerprint or file_fingerprint(path)
        entry = Path(folder) / f"{fingerprint}-{config_key}.npy"
        if not entry.is_file():
            audio = decode_audio(path, sample_rate=config.sample_rate, channels=1)
            frames = clip_frames(audio.mono(), config).astype(np.float16)
            write_atomically(entry, lambda temp: _save_npy(temp, frames))
        return fingerprint, str(entry), None
    except UserError as error:
        return fingerprint, None, str(error)
    except OSError as error:
        return fingerprint, None, f"cannot read '{path}' ({error.strerror or error})"


# --- items and batches --------------------------------------------------------------------------------


class WindowDataset(Dataset):
    """Cached clips -> ``(maps (N, height, segment_frames) float32 tensor, label index)`` items.

    With ``random_crop`` a window starts at a random column (a clip shorter than a window lands at a
    random place in silence); otherwise it is centred. The draw depends only on ``(seed, epoch, index)``,
    so an epoch's items are the same however they are loaded, by any worker, after any resume.
    """

    def __init__(
        self,
        entries: Sequence[Path],
        labels: Sequence[int],
        config: SpectrogramConfig,
        *,
        random_crop: bool,
        seed: int = 0,
    ) -> None:
        if len(entries) != len(labels):
            raise ValueError("entries and labels must have the same length")
        self.entries = [Path(entry) for entry in entries]
        self.labels = list(labels)
        self.config = config
        self.random_crop = random_crop
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        frames = np.load(self.entries[index], mmap_mode="r", allow_pickle=False)
        width = self.config.segments * self.config.segment_frames
        slack = frames.shape[1] - width
        if self.random_crop:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            start = int(rng.integers(min(0, slack), max(0, slack) + 1))
        else:
            start = slack // 2
        return torch.from_numpy(window_maps(frames, start, self.config)), self.labels[index]


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of item indices for one epoch: ``len(labels) // batch_size`` full batches (the last
    partial batch is dropped, as in the official code: InfoNCE wants a full batch of negatives).

    Plain: a random permutation of all items. ``balanced``: each batch draws its labels uniformly
    (distinct labels while the batch has room for them, i.e. without replacement within a batch), then
    one random clip of each drawn label, so rare classes are seen as often as common ones.
    The order depends only on ``(seed, epoch)``; ``set_epoch(epoch, skip)`` leaves out the first
    ``skip`` batches (resuming within an epoch). With several ``processes`` each gets its contiguous
    share of every (global) batch, so the global batches stay those of one process.
    """

    def __init__(
        self,
        labels: Sequence[int],
        batch_size: int,
        *,
        balanced: bool,
        seed: int = 0,
        processes: Processes | None = None,
    ) -> None:
        self.processes = processes or Processes()
        if batch_size < 1 or batch_size % self.processes.world_size:
            raise ValueError(
                f"batch_size must be a positive multiple of the {self.processes.world_size} processes, "
                f"got {batch_size}"
            )
        self.labels = np.asarray(labels, dtype=np.int64)
        self.batch_size = batch_size
        self.balanced = balanced
        self.seed = seed
        self.epoch = 0
        self.skip = 0
        self.members = [np.flatnonzero(self.labels == label) for label in np.unique(self.labels)]

    @property
    def batches_per_epoch(self) -> int:
        return len(self.labels) // self.batch_size

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        if not 0 <= skip <= self.batches_per_epoch:
            raise ValueError(f"skip must lie in [0, {self.batches_per_epoch}], got {skip}")
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return self.batches_per_epoch - self.skip

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.epoch_batches(self.epoch)[self.skip :]:
            yield self.processes.share(batch)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The epoch's global batches."""
        rng = np.random.default_rng((self.seed, epoch))
        if not self.balanced:
            order = rng.permutation(len(self.labels))
            return [
                order[start : start + self.batch_size].tolist()
                for start in range(0, self.batches_per_epoch * self.batch_size, self.batch_size)
            ]
        batches = []
        for _ in range(self.batches_per_epoch):
            repeats = -(-self.batch_size // len(self.members))
            classes = np.concatenate([rng.permutation(len(self.members)) for _ in range(repeats)])
            batches.append([int(rng.choice(self.members[c])) for c in classes[: self.batch_size]])
        return batches


def evaluation_batches(count: int, batch_size: int, processes: Processes | None = None) -> list[list[int]]:
    """Items ``0..count-1`` in order, in batches of ``batch_size`` (the last may be shorter); with several
    processes, batch ``j`` is process ``j % N``'s, so its ``i``-th batch is batch ``i * N + rank``."""
    processes = processes or Processes()
    batches = [list(range(start, min(start + batch_size, count))) for start in range(0, count, batch_size)]
    return batches[processes.rank :: processes.world_size]
