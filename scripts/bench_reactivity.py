"""Do frames composed from keyframes follow the sound as well as frames rendered one by one?

Renders a sound (default examples/groove.wav) with ``tpos-live render`` once per frame path and seed, scores
every video with ``tpos-live evaluate`` (reactivity, flicker), and reports each path's mean and its spread
over the seeds (the run-to-run spread the comparison must exceed). The sampling is the model's fast default
(one guided step) unless ``--render-args`` says otherwise. On the tiny stack's random weights one guided
step at g_s 7 moves a frame by ~0.1 of a level, which H.264 does not keep (reactivity and flicker then
read 0 for both paths), so its runs raise g_s (a frame stays affine in it) or guide every step (then
``--paths keyframes per-frame``: linearised keyframes). Examples (the tiny stack, no weights):

    flock /tmp/tpos-heavy.lock .venv/bin/python scripts/bench_reactivity.py --model tiny --size 128 \\
        --seeds 1 2 3 --render-args="--audio-guidance 300" -o reactivity.json
    flock /tmp/tpos-heavy.lock .venv/bin/python scripts/bench_reactivity.py --model tiny --size 128 \\
        --seeds 1 2 3 --paths keyframes per-frame --render-args="--delta-step 0" -o reactivity_linearised.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import tempfile
from pathlib import Path

from tpos_live.cli.main import main as tpos_live

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "groove.wav"
METRICS = ("reactivity", "flicker")


def render_and_score(audio: Path, folder: Path, path: str, seed: int, args: argparse.Namespace) -> dict:
    video = folder / f"{path}-{seed}.mp4"
    scores = folder / f"{path}-{seed}.json"
    code = tpos_live(["render", str(audio), "-o", str(video), "--model", args.model, "--size",
                      f"{args.size}x{args.size}", "--fps", f"{args.fps:g}", "--prompt", args.prompt, "--seed",
                      str(seed), "--frame-path", path, "--quiet", *shlex.split(args.render_args)])
    if code != 0:
        raise SystemExit(f"render failed ({path}, seed {seed})")
    if tpos_live(["evaluate", str(video), "--metrics", ",".join(METRICS), "--json", str(scores), "--quiet"]) != 0:
        raise SystemExit(f"evaluate failed ({path}, seed {seed})")
    entry = json.loads(scores.read_text())  # one video: one object
    return {name: entry["metrics"][name] for name in METRICS}


def summary(runs: list[dict]) -> dict:
    """Mean, spread (max - min) and sample standard deviation of each metric over the seeds."""
    result = {}
    for name in METRICS:
        values = [run[name] for run in runs]
        result[name] = {"mean": statistics.fmean(values), "spread": max(values) - min(values),
                        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio", type=Path, default=EXAMPLE, help="the sound (default examples/groove.wav)")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--prompt", default="a beach")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--paths", nargs="+", default=["auto", "per-frame"],
                        choices=("auto", "keyframes", "per-frame"), help="the --frame-path values compared")
    parser.add_argument("--render-args", default="", metavar="FLAGS",
                        help='more render flags in one string, e.g. --render-args="--delta-step 0"')
    parser.add_argument("-o", "--output", type=Path, help="write the JSON here too")
    args = parser.parse_args()

    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for path in args.paths:
            runs = [render_and_score(args.audio, Path(folder), path, seed, args) for seed in args.seeds]
            results[path] = summary(runs)
            print(f"{path}: " + ", ".join(f"{name} {results[path][name]['mean']:.3f} "
                                          f"(spread {results[path][name]['spread']:.3f})" for name in METRICS),
                  flush=True)
    report = {"audio": str(args.audio), "model": args.model, "size": args.size, "fps": args.fps,
              "seeds": args.seeds, "render_args": args.render_args, "results": results}
    text = json.dumps(report, indent=2)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
