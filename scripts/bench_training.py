"""Training throughput (clips/s) of the full-size TPoS encoder + MAP, one optimiser step at a time.

Full size: embed 768, the official 5 segments of 128 x 153 (stft front end), MAP 768 -> 7680 -> 76 x 768
(454M parameters, trained with Adam), ResNet-18 per segment on the original and the SpecAugment view:
exactly :meth:`TPoSTrainer.train_step`. Random weights, maps and text targets (cost does not depend on
their values). FLOPs per step are counted (matmuls and convolutions, forward and backward) so the
figure can be carried to other hardware; ``--gpu-tflops`` says what sustained rate to assume there.
Needs ~9 GB of RAM on a CPU: run it under the heavy-run lock::

    flock /tmp/tpos-heavy.lock .venv/bin/python scripts/bench_training.py --batch 8 --steps 3 -o bench.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from bench_timing import print_and_save
from torch.utils.flop_counter import FlopCounterMode

from tpos_live.conditioning.tpos_encoder import TPoSConfig, build_tpos_modules
from tpos_live.training.trainer import TextTargets, TPoSTrainer, TrainConfig

VGGSOUND_CLIPS = 170_000
# Sustained bf16 rate assumed for one H100 on this step. ResNet-style training reaches a small share of
# the ~790 TFLOP/s dense peak (BatchNorm, activations and the optimiser are memory-bound): PyTorch AMP
# ResNet-50 training runs ~3,000 images/s x ~25 GFLOP (forward + backward) ~ 75 TFLOP/s on one H100.
# Our segments are small (126 x 151) and the LSTM and the 454M-parameter Adam step add memory-bound
# work, so we assume 30.
DEFAULT_GPU_TFLOPS = 30.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=8, help="clips per step (default 8)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step (default 3)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--gpu-tflops",
        type=float,
        default=DEFAULT_GPU_TFLOPS,
        help=f"sustained TFLOP/s assumed for one GPU (default {DEFAULT_GPU_TFLOPS:g}, see source)",
    )
    parser.add_argument("-o", "--output", help="write the JSON here too")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = TPoSConfig()  # the official sizes
    encoder, map_model = build_tpos_modules(config)
    labels = [f"class {i}" for i in range(args.batch)]
    targets = TextTargets(
        tuple(labels),
        tuple(labels),
        torch.randn(args.batch, config.embed_dim),
        torch.randn(args.batch, config.map_tokens, config.embed_dim),
        "clip-vit-l-14",
    )
    trainer = TPoSTrainer(
        encoder, map_model, config, targets, TrainConfig(batch_size=args.batch), args.device
    )
    spectrogram = config.spectrogram
    maps = torch.rand(args.batch, config.segments, spectrogram.height, spectrogram.segment_frames)
    label_index = torch.arange(args.batch)

    with FlopCounterMode(display=False) as counter:
        trainer.train_step(maps, label_index)  # warm-up, and the FLOP count of one step
    flops = counter.get_total_flops()
    seconds = []
    for _ in range(args.steps):
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        trainer.train_step(maps, label_index)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)

    step = statistics.median(seconds)
    clips_per_second = args.batch / step
    achieved = flops / step / 1e12
    gpu_seconds_per_clip = flops / args.batch / (args.gpu_tflops * 1e12)
    result = {
        "device": args.device,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "amp_dtype": str(trainer.amp_dtype),
        "batch": args.batch,
        "encoder_parameters": sum(p.numel() for p in encoder.parameters()),
        "map_parameters": sum(p.numel() for p in map_model.parameters()),
        "seconds_per_step": step,
        "seconds_per_step_all": seconds,
        "clips_per_second": clips_per_second,
        "gflop_per_clip": flops / args.batch / 1e9,
        "achieved_tflops": achieved,
        "vggsound_epoch_hours_here": VGGSOUND_CLIPS / clips_per_second / 3600,
        "assumed_gpu_tflops": args.gpu_tflops,
        "assumed_gpu_to_here_ratio": args.gpu_tflops / achieved,
        "vggsound_epoch_minutes_on_gpu": VGGSOUND_CLIPS * gpu_seconds_per_clip / 60,
    }
    print_and_save(result, args.output)


if __name__ == "__main__":
    main()
