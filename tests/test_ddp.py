"""Training on several processes: two gloo processes on this machine compute what one process computes
on the same global batch, and a run resumes with another number of processes.

Each run trains a small encoder (the real classes at width 16, 5 segments of 32 x 16) for 6 steps of a
class-balanced global batch of 8 clips on a generated data set, through :func:`fit` (sampler, loader,
validation, checkpoints). The two-process runs are started with torch.multiprocessing (spawn) and join
through the same environment variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT on 127.0.0.1), so they take the path ``torchrun ... train-encoder`` takes.

What is compared, and how closely: the processes sum the same numbers in another order (BatchNorm
statistics over two shares, DDP's average of two half-batch gradients), so they agree to float32
rounding, not bit for bit. The first step's gradients (before clipping) agree to relative 1e-4 per
parameter tensor (measured ~1e-5). Later steps drift further apart: a ReLU whose input lies within
rounding of 0 passes its gradient in one run and not in the other, which moves an early layer's
gradient by ~1/sqrt(its ~80k elements), and such events compound from step to step (at lr 1e-3 the
sixth step's losses differed by 1e-3). So the loss terms of every step, the validation figures and the
final weights are held to relative 1e-3 at a small learning rate (measured: a few 1e-5 by step 6; -s
prints it). Real faults are far larger (measured by breaking the code on purpose): per-process
BatchNorm moved the first step's loss terms by 0.7-26%; an all_gather whose backward does not sum the
processes' gradients moved the second step's (unclipped) by 10-58%, and fails the gradient check.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from tpos_live.audio.spectrogram import SpectrogramConfig
from tpos_live.conditioning.tpos_encoder import TPoSConfig, build_tpos_modules
from tpos_live.training.datasets import (
    EpochBatchSampler,
    SpectrogramCache,
    WindowDataset,
    find_clips,
    split_clips,
)
from tpos_live.training.distributed import Processes, join_from_environment
from tpos_live.training.recipe import TrainConfig
from tpos_live.training.targets import TextTargets
from tpos_live.training.trainer import METRICS_FILE, STATE_FILE, TPoSTrainer, fit

SR = 8000
CLASSES = 5
CLIPS_PER_CLASS = 8
WIDTH = 16
SPEC = SpectrogramConfig(
    kind="stft", sample_rate=SR, n_fft=256, hop_length=128, height=32, segment_frames=16, floor="relative"
)
# A small, constant learning rate (with clipping) keeps the runs within float rounding of each other for
# the six steps: see the module docstring.
CONFIG = TrainConfig(
    epochs=2, batch_size=8, lr=5e-4, max_lr=5e-4, cycle_epochs=1, grad_clip=1.0, balanced=True, seed=3
)
GRADIENT_TOLERANCE = 1e-4  # relative, per parameter tensor, first step
RELATIVE_TOLERANCE = 1e-3  # of every loss term, every step, and of the validation figures
ABSOLUTE_TOLERANCE = 1e-6


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_wav(path: Path, samples: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(SR)
        file.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> dict:
    """What every run trains on: cached clips of five tone classes, random text targets, the config."""
    root = tmp_path_factory.mktemp("ddp-sounds")
    rng = np.random.default_rng(0)
    t = np.arange(round(1.6 * SR)) / SR
    for label in range(CLASSES):
        for k in range(CLIPS_PER_CLASS):
            tone = np.sin(2 * np.pi * (300 + 600 * label) * rng.uniform(0.95, 1.05) * t)
            hiss = 0.05 * rng.standard_normal(len(t))
            write_wav(root / f"class {label}" / f"{k}.wav", rng.uniform(0.2, 0.6) * tone + hiss)
    found = find_clips(root)
    entries, failures = SpectrogramCache(root / "cache", SPEC).prepare([c.path for c in found.clips], progress=False)
    assert not failures
    entry_of = dict(zip(found.clips, entries, strict=True))
    train, val = split_clips(found.clips, 0.3, seed=0)
    labels = sorted({clip.label for clip in found.clips})
    index = {label: i for i, label in enumerate(labels)}
    generator = torch.Generator().manual_seed(1)
    targets = TextTargets(
        tuple(labels),
        tuple(labels),
        torch.randn(len(labels), WIDTH, generator=generator),
        torch.randn(len(labels), 76, WIDTH, generator=generator),
        "tiny",
        "projected",
    )
    assert (len(train), len(val)) == (30, 10)  # 3 global batches per epoch; 2 validation batches (8 + 2)
    return {
        "train": ([str(entry_of[c]) for c in train], [index[c.label] for c in train]),
        "val": ([str(entry_of[c]) for c in val], [index[c.label] for c in val]),
        "targets": targets,
        "config": CONFIG,
    }


def train(job: dict, processes: Processes, output: Path, *, resume: bool = False, max_steps: int | None = None):
    """One run (or this process's part of one) through fit(); returns its steps' loss terms."""
    tpos_config = TPoSConfig(embed_dim=WIDTH, spectrogram=SPEC, text_family="tiny")
    torch.manual_seed(0)  # the same initial weights in every process and every run
    encoder, map_model = build_tpos_modules(tpos_config)
    config = dataclasses.replace(job["config"], max_steps=max_steps)
    trainer = TPoSTrainer(encoder, map_model, tpos_config, job["targets"], config, "cpu", processes)
    train_set = WindowDataset(*job["train"], SPEC, random_crop=True, seed=config.seed)
    val_set = WindowDataset(*job["val"], SPEC, random_crop=False)
    steps: list[tuple[int, dict[str, float]]] = []
    fit(
        trainer, train_set, val_set, output, resume=resume, say=lambda _: None, progress=False,
        on_step=lambda step, terms: steps.append((step, terms)),
    )
    return steps


def first_gradients(job: dict, processes: Processes) -> dict[str, torch.Tensor]:
    """The gradients of the first step (unclipped), taken just before the optimisers step."""
    tpos_config = TPoSConfig(embed_dim=WIDTH, spectrogram=SPEC, text_family="tiny")
    torch.manual_seed(0)
    encoder, map_model = build_tpos_modules(tpos_config)
    config = dataclasses.replace(job["config"], grad_clip=None)
    trainer = TPoSTrainer(encoder, map_model, tpos_config, job["targets"], config, "cpu", processes)
    names = {id(p): f"encoder.{n}" for n, p in trainer.encoder.named_parameters()}
    names.update({id(p): f"map.{n}" for n, p in trainer.map_model.named_parameters()})
    gradients: dict[str, torch.Tensor] = {}

    def keep(optimizer, _args, _kwargs) -> None:
        for group in optimizer.param_groups:
            gradients.update({names[id(p)]: p.grad.detach().clone() for p in group["params"]})

    trainer.optimizer.register_step_pre_hook(keep)
    trainer.map_optimizer.register_step_pre_hook(keep)
    train_set = WindowDataset(*job["train"], SPEC, random_crop=True, seed=config.seed)
    sampler = EpochBatchSampler(train_set.labels, config.batch_size, balanced=True, seed=config.seed,
                                processes=processes)
    items = [train_set[i] for i in next(iter(sampler))]
    trainer.train_step(torch.stack([maps for maps, _ in items]), torch.tensor([label for _, label in items]))
    return gradients


def _worker(rank: int, world_size: int, port: int, job: dict, output: str, logs: str, resume: bool) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    processes, device = join_from_environment("cpu")
    assert (processes.rank, processes.world_size, device) == (rank, world_size, "cpu")
    try:
        if not resume and rank == 0:
            torch.save(first_gradients(job, processes), Path(logs, "gradients.pt"))
        elif not resume:
            first_gradients(job, processes)
        steps = train(job, processes, Path(output), resume=resume)
    finally:
        processes.close()
    Path(logs, f"rank-{rank}.json").write_text(json.dumps(steps))


def train_on_two_processes(job: dict, output: Path, logs: Path, *, resume: bool = False) -> list[list]:
    """Spawn the two processes; returns each rank's steps."""
    with socket.socket() as probe:  # a free port on the loopback for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    logs.mkdir(parents=True, exist_ok=True)
    mp.spawn(_worker, args=(2, port, job, str(output), str(logs), resume), nprocs=2, join=True)
    return [json.loads((logs / f"rank-{rank}.json").read_text()) for rank in range(2)]


@pytest.fixture(scope="module")
def single(job, tmp_path_factory):
    """The reference: one process, the whole global batch."""
    output = tmp_path_factory.mktemp("single") / "run"
    return train(job, Processes(), output), output


def assert_same_steps(ours, reference, what: str) -> float:
    """Every loss term of every step agrees; returns the largest relative difference."""
    assert [step for step, _ in ours] == [step for step, _ in reference], what
    worst = 0.0
    for (step, terms), (_, expected) in zip(ours, reference, strict=True):
        for name, value in expected.items():
            assert terms[name] == pytest.approx(value, rel=RELATIVE_TOLERANCE, abs=ABSOLUTE_TOLERANCE), (
                f"{what}: step {step} {name} {terms[name]!r} vs {value!r}"
            )
            worst = max(worst, abs(terms[name] - value) / max(abs(value), 1e-12))
    return worst


def assert_same_weights(folder: Path, reference: Path) -> None:
    ours, theirs = load_file(folder / "last.safetensors"), load_file(reference / "last.safetensors")
    assert ours.keys() == theirs.keys()
    for key, expected in theirs.items():
        if expected.is_floating_point():
            difference = float((ours[key] - expected).norm())
            assert difference <= RELATIVE_TOLERANCE * float(expected.norm()) + 1e-6, key
        else:  # BatchNorm's batch counters
            assert torch.equal(ours[key], expected), key


def test_two_processes_compute_the_losses_of_one_on_the_same_global_batch(job, single, tmp_path) -> None:
    reference, reference_dir = single
    output = tmp_path / "run"
    ranks = train_on_two_processes(job, output, tmp_path / "logs")

    # The first step's gradients (before clipping) are those of the global batch in one process: InfoNCE
    # over all 8 clips, the MSE's mean over all 8, BatchNorm over all 8 x 5 segments.
    gradients = torch.load(tmp_path / "logs" / "gradients.pt", weights_only=True)
    expected = first_gradients(job, Processes())
    assert gradients.keys() == expected.keys()
    scale = max(float(g.norm()) for g in expected.values())
    worst = 0.0
    for name, gradient in expected.items():
        difference = float((gradients[name] - gradient).norm())
        assert difference <= GRADIENT_TOLERANCE * float(gradient.norm()) + 1e-7 * scale, name
        worst = max(worst, difference / max(float(gradient.norm()), 1e-7 * scale))
    print(f"\nfirst-step gradients, 2 processes vs 1: largest relative difference {worst:.2e}")

    assert ranks[0] == ranks[1]  # every process reports the global batch's terms
    steps = [(step, terms) for step, terms in ranks[0]]
    worst = assert_same_steps(steps, reference, "2 processes vs 1")
    print(f"{len(steps)} steps, 2 processes vs 1: largest relative difference of a loss term {worst:.2e}")
    assert len(steps) == 6

    # Rank 0 alone wrote: one metrics line per epoch, with the validation figures of one process.
    lines = [json.loads(line) for line in (output / METRICS_FILE).read_text().splitlines()]
    expected = [json.loads(line) for line in (reference_dir / METRICS_FILE).read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    for line, other in zip(lines, expected, strict=True):
        for name, value in other["val"].items():
            assert line["val"][name] == pytest.approx(value, rel=RELATIVE_TOLERANCE, abs=ABSOLUTE_TOLERANCE), name
        assert line["best"] == other["best"]
    assert sorted(path.name for path in output.iterdir()) == sorted(path.name for path in reference_dir.iterdir())
    assert_same_weights(output, reference_dir)


def test_a_run_resumes_with_another_number_of_processes(job, single, tmp_path) -> None:
    reference, reference_dir = single
    output = tmp_path / "run"
    first = train(job, Processes(), output, max_steps=4)  # one process stops part-way through epoch 2
    assert [step for step, _ in first] == [1, 2, 3, 4]
    assert torch.load(output / STATE_FILE, weights_only=True)["batch_in_epoch"] == 1
    ranks = train_on_two_processes(job, output, tmp_path / "logs", resume=True)  # two take it to the end
    steps = first + [(step, terms) for step, terms in ranks[0]]
    worst = assert_same_steps(steps, reference, "1 then 2 processes vs 1")
    print(f"\nresumed on 2 processes at step 4: largest relative difference {worst:.2e}")
    assert_same_weights(output, reference_dir)


def test_a_batch_that_does_not_split_evenly_is_refused(job) -> None:
    from tpos_live.errors import UserError

    tpos_config = TPoSConfig(embed_dim=WIDTH, spectrogram=SPEC, text_family="tiny")
    encoder, map_model = build_tpos_modules(tpos_config)
    with pytest.raises(UserError, match="does not split evenly over 3 processes"):
        TPoSTrainer(encoder, map_model, tpos_config, job["targets"], CONFIG, "cpu", Processes(0, 3))
