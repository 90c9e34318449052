"""What the audio's meaning needs on the mini world: object and scene accuracy, reactivity and flicker of
the story rendered with ``--model mini`` under each setting of a sweep.

    flock /tmp/tpos-heavy.lock .venv/bin/python scripts/measure_mini.py [--sweeps guided gs threshold modes
        paths] [--seeds 42 1] [--fps 4] [-o mini_measurements.json]

Each run renders examples/story.wav (rain, bell, fire, birds, 5 s each) at 64 x 64 with the prompt
``--scene`` and scores the video with ``tpos-live evaluate``: object-accuracy against examples/story.json
(each turn counted from tpos_live.names.OBJECT_LAG_SECONDS on), scene accuracy against the prompt, and
reactivity and flicker. A setting is the model's fast defaults plus the flags of its row below; each is
rendered once per seed (the seed of z^T), and the table gives the mean and the range over the seeds.

The sweeps (``BASE`` is the mini model's own fast settings):

- guided: how many of the sampler's steps are guided by the audio (1, 2, 3, half, all);
- gs: the audio guidance scale g_s (0: none, so the object is left to chance; 2, 4, 7, 12);
- threshold: SEGA's quantile q (0.5, 0.8, 0.95);
- modes: fast mode against paper mode (50 PLMS steps, guided from timestep 900, the paper's g_s 7);
- paths: keyframes against per-frame rendering.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench_timing import print_and_save

from tpos_live.cli.main import main as tpos_live

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
METRICS = ("object_accuracy", "scene_accuracy", "reactivity", "flicker")


def sweeps(steps: int) -> dict[str, dict[str, list[str]]]:
    """name -> {row label: render flags}, for a sampler of ``steps`` steps."""
    return {
        "guided": {f"{n} guided step{'s' * (n > 1)}": ["--delta-step", str(steps - n)]
                   for n in (1, 2, 3, steps // 2, steps)},
        "gs": {f"g_s {g}": ["--audio-guidance", str(g)] for g in (0, 2, 4, 7, 12)},
        "threshold": {f"q {q}": ["--threshold", str(q)] for q in (0.5, 0.8, 0.95)},
        "modes": {"fast (the mini's defaults)": [],
                  "paper (50 PLMS steps from t 900, g 7.5, g_s 7)": ["--mode", "paper"]},
        "paths": {"keyframes": ["--frame-path", "keyframes"], "per-frame": ["--frame-path", "per-frame"]},
    }


def render_and_score(folder: Path, flags: list[str], seed: int, args: argparse.Namespace) -> dict:
    video, scores = folder / "story.mp4", folder / "story.json"
    started = time.monotonic()
    if tpos_live(["render", str(EXAMPLES / "story.wav"), "-o", str(video), "--model", "mini", "--size", "64x64",
                  "--fps", f"{args.fps:g}", "--prompt", args.scene, "--seed", str(seed), "--quiet", *flags]) != 0:
        raise SystemExit(f"render failed: {flags}, seed {seed}")
    seconds = time.monotonic() - started
    if tpos_live(["evaluate", str(video), "--metrics", "object-accuracy,reactivity,flicker", "--objects",
                  str(EXAMPLES / "story.json"), "--scene", args.scene, "--json", str(scores), "--quiet"]) != 0:
        raise SystemExit(f"evaluate failed: {flags}, seed {seed}")
    return {**json.loads(scores.read_text())["metrics"], "render_seconds": seconds}


def summary(runs: list[dict]) -> dict:
    return {name: {"mean": statistics.fmean(run[name] for run in runs),
                   "min": min(run[name] for run in runs), "max": max(run[name] for run in runs)}
            for name in (*METRICS, "render_seconds")}


def table_row(label: str, result: dict) -> str:
    cells = [f"{result[name]['mean']:.2f} ({result[name]['min']:.2f}-{result[name]['max']:.2f})"
             for name in METRICS]
    return f"| {label} | " + " | ".join(cells) + f" | {result['render_seconds']['mean']:.0f} s |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweeps", nargs="+", default=["guided", "gs", "threshold", "modes", "paths"],
                        choices=("guided", "gs", "threshold", "modes", "paths"))
    parser.add_argument("--steps", type=int, default=20, help="the mini's fast-mode steps (its default, 20)")
    parser.add_argument("--base", default="", help='flags every fast run gets, e.g. --base="--delta-step 10"')
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1])
    parser.add_argument("--fps", type=float, default=4.0)
    parser.add_argument("--scene", default="night")
    parser.add_argument("-o", "--output", type=Path, help="write the JSON here too")
    args = parser.parse_args()

    results: dict[str, dict] = {}
    lines = ["| setting | object accuracy | scene accuracy | reactivity | flicker | render |",
             "|---|---|---|---|---|---|"]
    chosen = sweeps(args.steps)
    with tempfile.TemporaryDirectory() as scratch:
        for sweep in args.sweeps:
            for label, flags in chosen[sweep].items():
                base = [] if "--mode" in flags else args.base.split()
                runs = [render_and_score(Path(scratch), [*base, *flags], seed, args) for seed in args.seeds]
                results.setdefault(sweep, {})[label] = summary(runs)
                lines.append(table_row(label, results[sweep][label]))
                print(lines[-1], flush=True)
    print("\n".join(lines))
    print_and_save({"scene": args.scene, "fps": args.fps, "seeds": args.seeds, "base": args.base,
                    "results": results, "table": lines}, args.output)


if __name__ == "__main__":
    main()
