"""The GPU check's command line and the benchmarks' shared timing (nothing heavy runs here: the CPU
smoke run of the whole check is a step of scripts/test.sh of its own)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "scripts"))

import bench_timing  # noqa: E402  (a script's module: scripts/ is not a package)


def run_check(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unknown argument '--bogus'"),
    (["--out"], "--out needs a value"),
    (["--cpu-smoke", "--limit", "soon"], "--limit must be whole seconds"),
])
def test_bad_arguments_exit_2_with_one_line_saying_what(args, message):
    done = run_check(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "--fetch-wheels" in done.stderr  # the usage follows


def test_help_exits_0():
    done = run_check("--help")
    assert done.returncode == 0
    assert "--cpu-smoke" in done.stderr


def test_a_run_past_its_limit_says_so_and_keeps_what_it_wrote(tmp_path):
    done = run_check("--cpu-smoke", "--limit", "1", "--python", sys.executable, "--out", str(tmp_path))
    assert done.returncode == 1
    assert "ran past its 1 s limit" in done.stderr
    assert (tmp_path / "gpu_check.log").is_file()


def test_the_driver_refuses_a_cuda_device_this_machine_lacks(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--compute-device", "cuda",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2
    assert "torch sees no CUDA device" in done.stderr.strip().splitlines()[-1]


def test_frame_stats_keeps_per_batch_and_per_frame_apart():
    # two batches of 4 frames: 4 s and 2 s; the best batch's UNet took 1.6 s of its 2 s
    stats = bench_timing.frame_stats([4.0, 2.0], [{"unet": 3.0}, {"unet": 1.6}], frames_per_batch=4)
    assert stats["seconds_per_batch"] == 2.0
    assert stats["seconds_per_frame"] == 0.5
    assert stats["fps"] == 2.0
    assert stats["stage_ms"]["unet"] == pytest.approx(400.0)
    assert stats["stage_ms"]["other"] == pytest.approx(100.0)
    assert stats["seconds_per_batch_median"] == 3.0


def test_parse_device_names_what_is_wrong():
    assert bench_timing.parse_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="cpu, cuda or cuda:N"):
        bench_timing.parse_device("gpu")


def test_cpu_stopwatch_and_stage_clock_measure_wall_time():
    clock = bench_timing.StageClock(torch.device("cpu"))
    timed = clock.wrap(lambda: sum(range(10000)), "work")
    watch = bench_timing.Stopwatch(torch.device("cpu"))
    watch.start()
    timed()
    timed()
    total = watch.stop()
    assert clock.calls["work"] == 2
    assert 0 < clock.seconds["work"] <= total


def test_memory_parts_name_each_part_and_see_the_heap_in_use_grow():
    before = bench_timing.memory_parts_mb()
    block = bytearray(64 * 2**20)  # malloc's, in use (resident pages may be reused ones: anon need not grow)
    after = bench_timing.memory_parts_mb()
    # The kernel's per-part counters are synced lazily, so they are not compared with statm here.
    assert set(after) == {"anon", "file", "shmem", "heap_in_use", "heap_free"}
    assert after["heap_in_use"] - before["heap_in_use"] > 56.0
    del block
