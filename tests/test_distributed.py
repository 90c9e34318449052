"""`render --workers N` on a real local Ray cluster (one per module, 2 CPUs): the PNG bytes of a single-process
render, a worker killed mid-chunk retried by Ray, --ray-address from another process with --resume, and the
one-line error without Ray."""

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray  # (in the test extra; the [distributed] extra installs it for users)
from media import write_tone

from tpos_live.cli.main import main
from tpos_live.video.probe import probe_media

FPS, SECONDS, FRAMES = 8, 2.0, 16
QUICK = ["--model", "tiny", "--size", "64x64", "--fps", str(FPS), "--prompt", "a beach", "--steps", "6",
         "--delta-step", "0", "--batch", "2"]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs for the module, and one torch thread in this process (the workers take
    the driver's count; two spinning threads each on a loaded 2-core machine are very slow)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cluster):
    """A single-process render (same thread count): its audio and frames."""
    folder = tmp_path_factory.mktemp("reference")
    audio = write_tone(folder / "tone.wav", seconds=SECONDS, freq=330)
    assert main(["render", str(audio), "-o", str(folder / "ref.mp4"), "--frames", str(folder / "frames"), *QUICK,
                 "--quiet"]) == 0
    return audio, folder / "frames"


def assert_same_pngs(frames: Path, reference: Path):
    names = sorted(p.name for p in reference.glob("frame_*.png"))
    assert len(names) == FRAMES and sorted(p.name for p in frames.glob("frame_*.png")) == names
    for name in names:
        assert (frames / name).read_bytes() == (reference / name).read_bytes(), name


def assert_valid_mp4(path):
    info = probe_media(path)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert abs(info.video_duration - SECONDS) <= 1 / FPS and abs(info.audio_duration - SECONDS) <= 1 / FPS


def busy_workers():
    """Our Ray render workers that are rendering a chunk now (their process title says so)."""
    ours = {os.getpid()}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().decode(errors="replace")
            if title.startswith("ray::RenderWorker.render") and _descends_from(int(entry.name), ours):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _descends_from(pid: int, ancestors: set[int]) -> bool:
    while pid > 1:
        if pid in ancestors:
            return True
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


def test_two_workers_give_the_single_process_pngs_and_a_worker_killed_mid_chunk_is_retried(
        tmp_path, reference, capsys):
    audio, reference_frames = reference
    frames, out = tmp_path / "frames", tmp_path / "out.mp4"
    codes = []
    render = threading.Thread(target=lambda: codes.append(main(
        ["render", str(audio), "-o", str(out), "--frames", str(frames), *QUICK, "--workers", "2"])))
    render.start()
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and render.is_alive() and time.monotonic() < deadline:
        busy = busy_workers()
        if busy and len(list(frames.glob("frame_*.png"))) >= 2:  # mid-render, in the middle of a chunk
            killed = busy[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.005)
    render.join(timeout=300)
    assert codes == [0]
    err = capsys.readouterr().err
    assert "on Ray: 2 workers" in err
    assert killed is not None, "no worker was caught mid-chunk"
    assert f"its process {killed} died" in err  # restarted by Ray, its chunk run again
    assert_same_pngs(frames, reference_frames)
    assert_valid_mp4(out)


def test_ray_address_from_another_process_with_resume(tmp_path, reference, cluster):
    audio, reference_frames = reference
    frames, out = tmp_path / "frames", tmp_path / "out.mp4"
    frames.mkdir()
    # half the frames from an earlier run of this render (the single-process one: the same frames)
    for png in sorted(reference_frames.glob("frame_*.png"))[: FRAMES // 2]:
        (frames / png.name).write_bytes(png.read_bytes())
    (frames / ".tpos-live-render.json").write_bytes((reference_frames / ".tpos-live-render.json").read_bytes())
    result = subprocess.run([sys.executable, "-m", "tpos_live", "render", str(audio), "-o", str(out), "--frames",
                             str(frames), *QUICK, "--workers", "2", "--ray-address", cluster, "--resume"],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"on Ray: 2 workers on the Ray cluster at {cluster}" in result.stderr
    assert f"resuming: {FRAMES // 2} of {FRAMES} frames" in result.stderr
    assert_same_pngs(frames, reference_frames)
    assert_valid_mp4(out)


def test_frames_from_keyframes_on_two_workers_are_the_single_process_pngs(tmp_path, reference, cluster, capsys):
    """Each worker computes the keyframes of its chunks on the track's batch grid: the same bytes as one process
    (which computes each keyframe once)."""
    audio = reference[0]
    keyframes = [*QUICK[:-6], "--batch", "2"]  # the tiny model's default: its last step guided
    single, frames = tmp_path / "single", tmp_path / "frames"
    assert main(["render", str(audio), "-o", str(tmp_path / "single.mp4"), "--frames", str(single), *keyframes]) == 0
    assert "frames: keyframes" in capsys.readouterr().err
    out = tmp_path / "out.mp4"
    assert main(["render", str(audio), "-o", str(out), "--frames", str(frames), *keyframes, "--workers", "2"]) == 0
    err = capsys.readouterr().err
    assert "on Ray: 2 workers" in err and "frames: keyframes" in err
    assert_same_pngs(frames, single)
    assert_valid_mp4(out)


def test_workers_without_ray_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as where it is not installed
    audio = write_tone(tmp_path / "a.wav", seconds=0.5)
    out = tmp_path / "out.mp4"
    assert main(["render", str(audio), "-o", str(out), *QUICK, "--workers", "2"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: --workers renders on Ray")
    assert "tpos-live[distributed]" in error[0] and not out.exists()
